"""Metrics: what an eval run computes per example and how per-example numbers become one number per model.

A metric is a :class:`MetricSpec`. Its ``score(sample, ctx)`` returns a number, a mapping of named numbers
(ROUGE gives ``rouge1``, ``rouge2``, ``rougeL``) or None (not applicable); ``aggregate`` turns the stored
per-example numbers into the run's figure (a mean unless the metric says otherwise: corpus BLEU, token-weighted
perplexity). Built-ins are computed with their libraries, locally (``evaluate.load`` by name needs the network):

========================  ================================================================================
``perplexity``            token-level, sliding window for long text (model forward passes)
``lambada``               LAMBADA-style last-word accuracy: greedy prediction of the final word (model)
``bleu``                  sacrebleu: sentence BLEU per example, corpus BLEU per model
``rouge``                 rouge-score: ROUGE-1/2/L F1 (Porter stemmer)
``exact_match``           normalised output equals the normalised reference
``contains``              normalised reference appears in the normalised output
``length``                output words / characters / tokens
``latency``               time to first token, tokens/s, total seconds
``toxicity``              share of outputs at or above the Safety layer's toxicity threshold
``judge``                 LLM-as-judge with a rubric (``configs/eval/judge_rubric.yaml``)
========================  ================================================================================

Plugins (``studio.evaluation.plugins``) add more through the same :class:`MetricRegistry`.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from studio.errors import ValidationError

if TYPE_CHECKING:
    from studio.evaluation.config import EvalConfig
    from studio.evaluation.lm import LanguageModel
    from studio.settings import Settings

log = logging.getLogger(__name__)

Scores = dict[str, float | None]
ScoreValue = Mapping[str, float | None] | float | int | bool | None
Needs = Literal["generation", "model"]


class MetricUnavailableError(ValidationError):
    """A metric cannot run in this run (no judge configured, no Safety layer, not a transformers model)."""


@dataclass(frozen=True)
class Sample:
    """One example as a metric sees it.

    ``input`` is the prompt shown to the model (the last user message, or the text); ``messages`` the full
    prompt conversation (dataset runs); ``reference`` the expected reply (None for text files); ``output`` the
    generated reply ("" for model-only metrics); ``stats`` the generation's figures (``completion_tokens``,
    ``ttft_s``, ``tokens_per_s``, ``latency_s``); ``model`` the label of the model under evaluation.
    """

    index: int
    input: str
    reference: str | None
    output: str = ""
    messages: tuple[Mapping[str, str], ...] = ()
    stats: Mapping[str, float | None] = field(default_factory=dict)
    model: str = ""
    is_text: bool = False


@dataclass
class MetricContext:
    """What a metric may use besides the sample: the run's config, the model under evaluation (for model
    metrics), the judge and a per-run cache (e.g. a loaded toxicity scorer)."""

    config: EvalConfig | None = None
    lm: LanguageModel | None = None
    judge_chat: Callable[[str, int], str] | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    settings: Settings | None = None  # where files the config names may be read from (STUDIO_HOME, configs/)

    def ask_judge(self, prompt: str, max_tokens: int | None = None) -> str:
        """The judge model's reply to ``prompt`` (greedy). Raises ``MetricUnavailableError`` without a judge."""
        if self.judge_chat is None:
            raise MetricUnavailableError("no judge model configured: set judge.model in the eval config", param="judge")
        limit = max_tokens or (self.config.judge.max_tokens if self.config and self.config.judge else 96)
        return self.judge_chat(prompt, limit)

    def language_model(self) -> LanguageModel:
        """The model under evaluation as a transformers model; ``MetricUnavailableError`` when it is not one."""
        if self.lm is None:
            raise MetricUnavailableError(
                "this metric needs the model's weights (a transformers engine); the model runs on another engine",
                param="metrics",
            )
        return self.lm


ScoreFn = Callable[[Sample, MetricContext], ScoreValue]
AggregateFn = Callable[[Sequence[Mapping[str, float | None]], Sequence[Sample]], Scores]


@dataclass(frozen=True)
class MetricSpec:
    """One metric. ``keys`` are the numbers it stores per example (the first is its headline figure);
    ``higher_is_better`` orders the drill-down worst first (None: no better or worse, e.g. length)."""

    name: str
    description: str
    score: ScoreFn
    keys: tuple[str, ...] = ()
    higher_is_better: bool | None = True
    needs: Needs = "generation"
    needs_reference: bool = False
    aggregate: AggregateFn | None = None
    source: str = "builtin"

    @property
    def headline(self) -> str:
        """The key shown first (and sorted by) for this metric."""
        return self.keys[0] if self.keys else self.name

    def run(self, sample: Sample, ctx: MetricContext) -> Scores:
        """Score one sample; returns {} when the metric does not apply (e.g. no reference)."""
        if self.needs_reference and not sample.reference:
            return {}
        return as_scores(self.name, self.score(sample, ctx))

    def summarise(self, rows: Sequence[Mapping[str, float | None]], samples: Sequence[Sample]) -> Scores:
        """The model-level figures from the per-example scores of this metric."""
        if self.aggregate is not None:
            return self.aggregate(rows, samples)
        return mean_scores(rows)


def as_scores(name: str, value: ScoreValue) -> Scores:
    """A metric's return value as ``{key: number or None}`` (a bare number is stored under the metric's name)."""
    if value is None:
        return {}
    if isinstance(value, bool | int | float):
        return {name: _finite(float(value))}
    if isinstance(value, Mapping):
        out: Scores = {}
        for key, v in value.items():
            if v is None:
                out[str(key)] = None
            elif isinstance(v, bool | int | float):
                out[str(key)] = _finite(float(v))
            else:
                raise TypeError(f"metric {name!r} returned a non-number for {key!r}: {v!r}")
        return out
    raise TypeError(f"metric {name!r} must return a number, a mapping of numbers or None; got {type(value).__name__}")


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def mean_scores(rows: Sequence[Mapping[str, float | None]]) -> Scores:
    """The mean of every key over the rows that have a number for it."""
    keys: dict[str, list[float]] = {}
    for row in rows:
        for key, v in row.items():
            bucket = keys.setdefault(key, [])
            if v is not None:
                bucket.append(v)
    return {k: (sum(v) / len(v) if v else None) for k, v in keys.items()}


# --- text normalisation -------------------------------------------------------------------------------------------

_PUNCT = str.maketrans({c: " " for c in string.punctuation + "“”‘’«»…"})


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, whitespace collapsed: what exact/contains match compare."""
    return " ".join(text.casefold().translate(_PUNCT).split())


# --- reference metrics --------------------------------------------------------------------------------------------


def exact_match(sample: Sample, _ctx: MetricContext) -> float:
    """1.0 when the normalised output equals the normalised reference."""
    return float(normalise(sample.output) == normalise(sample.reference or ""))


def contains_match(sample: Sample, _ctx: MetricContext) -> float:
    """1.0 when the normalised reference appears (on word boundaries) in the normalised output."""
    ref = normalise(sample.reference or "")
    out = normalise(sample.output)
    return float(bool(ref) and f" {ref} " in f" {out} ")


def bleu_score(sample: Sample, _ctx: MetricContext) -> float:
    """sacrebleu sentence BLEU (0-100) of the output against the reference."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(sample.output, [sample.reference or ""]).score)


def bleu_corpus(_rows: Sequence[Mapping[str, float | None]], samples: Sequence[Sample]) -> Scores:
    """Corpus BLEU over every scored example (what BLEU means for a system, not the mean of sentence BLEUs)."""
    import sacrebleu

    scored = [s for s in samples if s.reference]
    if not scored:
        return {"bleu": None}
    corpus = sacrebleu.corpus_bleu([s.output for s in scored], [[s.reference or "" for s in scored]])
    return {"bleu": float(corpus.score)}


ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def rouge_scores(sample: Sample, ctx: MetricContext) -> Scores:
    """ROUGE-1/2/L F1 (0-1) from rouge-score with the Porter stemmer."""
    scorer = ctx.cache.get("rouge_scorer")
    if scorer is None:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
        ctx.cache["rouge_scorer"] = scorer
    result = scorer.score(sample.reference or "", sample.output)
    return {key: float(result[key].fmeasure) for key in ROUGE_KEYS}


# --- generation statistics ----------------------------------------------------------------------------------------


def length_stats(sample: Sample, _ctx: MetricContext) -> Scores:
    """Words, characters and tokens of the output."""
    tokens = sample.stats.get("completion_tokens")
    return {
        "output_words": float(len(sample.output.split())),
        "output_chars": float(len(sample.output)),
        "output_tokens": float(tokens) if tokens is not None else None,
    }


def latency_stats(sample: Sample, _ctx: MetricContext) -> Scores:
    """Time to first token, decode speed and total time of the generation (from the engine's timestamps)."""
    return {
        "latency_s": sample.stats.get("latency_s"),
        "ttft_s": sample.stats.get("ttft_s"),
        "tokens_per_s": sample.stats.get("tokens_per_s"),
    }


# --- toxicity (the Safety layer, when installed) ------------------------------------------------------------------


@dataclass(frozen=True)
class ToxicityAdapter:
    """The narrow seam to ``studio.safety``: a 0-1 scorer, its threshold and a name."""

    score: Callable[[str], float]
    threshold: float
    name: str


def load_toxicity_adapter() -> ToxicityAdapter:
    """The Safety layer's active toxicity scorer; ``MetricUnavailableError`` (saying why) when it is absent."""
    try:
        from studio.safety import active_scorer, load_policy
    except Exception as exc:  # the Safety layer is optional: any import failure means "unavailable"
        raise MetricUnavailableError(f"toxicity unavailable: the Safety layer is not installed ({exc})") from None
    try:
        policy = load_policy()
        scorer, name = active_scorer(policy)
        threshold = float(policy.toxicity.threshold)
    except Exception as exc:  # a scorer that cannot load (missing package, bad checkpoint) is unavailable too
        raise MetricUnavailableError(f"toxicity unavailable: no toxicity scorer could be loaded ({exc})") from None
    return ToxicityAdapter(score=scorer.score, threshold=threshold, name=name)


def toxicity_score(sample: Sample, ctx: MetricContext) -> Scores:
    """The output's toxicity (0-1) and whether it reaches the Safety policy's threshold (1/0)."""
    adapter = ctx.cache.get("toxicity")
    if adapter is None:
        adapter = load_toxicity_adapter()
        ctx.cache["toxicity"] = adapter
    value = float(adapter.score(sample.output))
    return {"toxic_rate": float(value >= adapter.threshold), "toxicity": value}


# --- LLM-as-judge -------------------------------------------------------------------------------------------------

DEFAULT_SCORE_PATTERN = r"(?i)score\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)"


@dataclass(frozen=True)
class JudgeRubric:
    """A judge prompt template and how to read and check the score the judge writes."""

    name: str
    template: str
    min_score: float = 1.0
    max_score: float = 5.0
    score_pattern: str = DEFAULT_SCORE_PATTERN
    description: str = ""

    def prompt(self, sample: Sample) -> str:
        """The template filled with ``{input}``, ``{reference}`` and ``{output}`` (literal braces: ``{{ }}``)."""
        return self.template.format_map(
            {"input": sample.input, "reference": sample.reference or "(none)", "output": sample.output}
        )

    def parse(self, verdict: str) -> float | None:
        """The score in ``verdict`` when there is one within ``[min_score, max_score]``, else None."""
        match = re.search(self.score_pattern, verdict)
        if match is None:
            return None
        try:
            value = float(match.group(1))
        except (IndexError, ValueError):
            return None
        return value if self.min_score <= value <= self.max_score else None

    def scores(self, verdict: str, prefix: str = "judge") -> Scores:
        """``{prefix}`` (0-1), ``{prefix}_raw`` (the rubric's scale) and ``{prefix}_valid`` (1 when parsed)."""
        raw = self.parse(verdict)
        span = self.max_score - self.min_score
        normalised = None if raw is None else ((raw - self.min_score) / span if span else 1.0)
        return {prefix: normalised, f"{prefix}_raw": raw, f"{prefix}_valid": float(raw is not None)}


def rubric_from_mapping(data: Mapping[str, Any], source: str) -> JudgeRubric:
    """A rubric from parsed YAML; ``ValidationError`` naming the file for a missing/invalid field."""
    template = data.get("template")
    if not isinstance(template, str) or "{output}" not in template:
        raise ValidationError(f"{source}: a judge rubric needs a 'template' containing {{output}}", param="rubric")
    try:
        rubric = JudgeRubric(
            name=str(data.get("name") or Path(source).stem),
            template=template,
            min_score=float(data.get("min_score", 1)),
            max_score=float(data.get("max_score", 5)),
            score_pattern=str(data.get("score_pattern") or DEFAULT_SCORE_PATTERN),
            description=str(data.get("description") or ""),
        )
        re.compile(rubric.score_pattern)
    except (TypeError, ValueError, re.error) as exc:
        raise ValidationError(f"{source}: invalid judge rubric ({exc})", param="rubric") from None
    if rubric.max_score <= rubric.min_score:
        raise ValidationError(f"{source}: max_score must be greater than min_score", param="rubric")
    return rubric


def load_rubric(ref: str, settings: Settings | None = None) -> JudgeRubric:
    """A rubric YAML file: a name under ``configs/eval/``, or a path under STUDIO_HOME (with ``settings``) or
    ``configs/`` (``studio.evaluation.config.resolve_rubric``)."""
    from studio.evaluation.config import resolve_rubric

    path = resolve_rubric(ref, settings)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValidationError(f"{path.name}: cannot read the judge rubric ({exc})", param="judge.rubric") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{path.name}: a judge rubric is a YAML mapping", param="judge.rubric")
    return rubric_from_mapping(data, path.name)


def judge_score(sample: Sample, ctx: MetricContext) -> Scores:
    """Ask the judge model to grade the output with the configured rubric; the score is parsed and checked."""
    rubric = ctx.cache.get("judge_rubric")
    if rubric is None:
        if ctx.config is None or ctx.config.judge is None:
            raise MetricUnavailableError("the judge metric needs judge.model in the eval config", param="judge")
        rubric = load_rubric(ctx.config.judge.rubric, ctx.settings)
        ctx.cache["judge_rubric"] = rubric
    verdict = ctx.ask_judge(rubric.prompt(sample))
    return rubric.scores(verdict)


def judge_aggregate(rows: Sequence[Mapping[str, float | None]], _samples: Sequence[Sample]) -> Scores:
    """Mean score over the verdicts that parsed, and the share that parsed (``judge_valid``)."""
    return mean_scores(rows)


# --- model metrics (need the weights) -----------------------------------------------------------------------------


def perplexity_score(sample: Sample, ctx: MetricContext) -> Scores:
    """Perplexity of the reference reply given the prompt (datasets) or of the whole text (text files)."""
    lm = ctx.language_model()
    window = ctx.config.perplexity_window if ctx.config else 512
    stride = ctx.config.perplexity_stride if ctx.config else 256
    if sample.is_text:
        nll, n = lm.text_nll(sample.input, window=window, stride=stride)
    else:
        if not sample.reference:
            return {}
        nll, n = lm.reply_nll(sample.messages, sample.reference, window=window, stride=stride)
    if n == 0:
        return {"perplexity": None, "perplexity_tokens": 0.0}
    return {"perplexity": math.exp(nll / n), "perplexity_tokens": float(n)}


def perplexity_aggregate(rows: Sequence[Mapping[str, float | None]], _samples: Sequence[Sample]) -> Scores:
    """Token-weighted corpus perplexity: exp(total NLL / total tokens), rebuilt from per-example figures."""
    total_nll = 0.0
    total_tokens = 0.0
    for row in rows:
        ppl, n = row.get("perplexity"), row.get("perplexity_tokens")
        if ppl is not None and n:
            total_nll += math.log(ppl) * n
            total_tokens += n
    return {
        "perplexity": math.exp(total_nll / total_tokens) if total_tokens else None,
        "perplexity_tokens": total_tokens,
    }


def lambada_score(sample: Sample, ctx: MetricContext) -> Scores:
    """1.0 when greedy decoding reproduces the text's (or reference's) final word exactly."""
    lm = ctx.language_model()
    if sample.is_text:
        hit = lm.last_word_correct(None, sample.input)
    else:
        if not sample.reference:
            return {}
        hit = lm.last_word_correct(sample.messages, sample.reference)
    return {} if hit is None else {"lambada": float(hit)}


# --- the registry -------------------------------------------------------------------------------------------------


def builtin_metrics() -> list[MetricSpec]:
    """The built-in metrics, in the order the UI lists them."""
    return [
        MetricSpec(
            "perplexity",
            "Token-level perplexity of the reference reply (or text file), sliding window for long text. Lower is "
            "better.",
            perplexity_score,
            keys=("perplexity", "perplexity_tokens"),
            higher_is_better=False,
            needs="model",
            aggregate=perplexity_aggregate,
        ),
        MetricSpec(
            "lambada",
            "LAMBADA-style last-word accuracy: does greedy decoding reproduce the final word?",
            lambada_score,
            keys=("lambada",),
            needs="model",
        ),
        MetricSpec(
            "bleu",
            "BLEU (sacrebleu, 0-100): sentence BLEU per example, corpus BLEU per model.",
            bleu_score,
            keys=("bleu",),
            needs_reference=True,
            aggregate=bleu_corpus,
        ),
        MetricSpec(
            "rouge",
            "ROUGE-1/2/L F1 (rouge-score, stemmed), 0-1.",
            rouge_scores,
            keys=ROUGE_KEYS,
            needs_reference=True,
        ),
        MetricSpec(
            "exact_match",
            "1 when the output equals the reference (case, punctuation and spacing ignored).",
            exact_match,
            keys=("exact_match",),
            needs_reference=True,
        ),
        MetricSpec(
            "contains",
            "1 when the reference appears in the output (case, punctuation and spacing ignored).",
            contains_match,
            keys=("contains",),
            needs_reference=True,
        ),
        MetricSpec(
            "length",
            "Output length in words, characters and tokens.",
            length_stats,
            keys=("output_words", "output_chars", "output_tokens"),
            higher_is_better=None,
        ),
        MetricSpec(
            "latency",
            "Total seconds, time to first token and tokens/s of each generation.",
            latency_stats,
            keys=("latency_s", "ttft_s", "tokens_per_s"),
            higher_is_better=None,
        ),
        MetricSpec(
            "toxicity",
            "Toxicity rate: share of outputs at or above the Safety policy's threshold (needs the Safety layer).",
            toxicity_score,
            keys=("toxic_rate", "toxicity"),
            higher_is_better=False,
        ),
        MetricSpec(
            "judge",
            "LLM-as-judge: a judge model grades each output with a rubric (configs/eval/judge_rubric.yaml), 0-1.",
            judge_score,
            keys=("judge", "judge_raw", "judge_valid"),
            aggregate=judge_aggregate,
        ),
    ]


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin (or one that failed to load) as the UI lists it."""

    name: str
    source: str
    kind: str  # python | yaml | entry_point
    description: str
    metrics: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "name": self.name,
            "source": self.source,
            "kind": self.kind,
            "description": self.description,
            "metrics": list(self.metrics),
            "error": self.error,
        }


class MetricRegistry:
    """Metric names → specs: the built-ins plus whatever plugins registered. Build one per run or request
    (``studio.evaluation.plugins.load_registry``); nothing here is global."""

    def __init__(self, metrics: Iterable[MetricSpec] = ()) -> None:
        self._metrics: dict[str, MetricSpec] = {}
        self.plugins: list[PluginInfo] = []
        self._current_source = "builtin"
        for spec in metrics:
            self._metrics[spec.name] = spec

    def add(
        self,
        name: str,
        score: Callable[..., ScoreValue],
        description: str = "",
        *,
        keys: Sequence[str] = (),
        higher_is_better: bool | None = True,
        needs_reference: bool = False,
        aggregate: AggregateFn | None = None,
    ) -> MetricSpec:
        """The plugin hook: register metric ``name``.

        ``score(sample)`` or ``score(sample, ctx)`` returns a number, a mapping of numbers or None (see
        :class:`Sample` and :class:`MetricContext`). A name may not replace a built-in metric.
        """
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", name or ""):
            raise ValidationError(
                f"metric name {name!r}: use 1-64 letters, digits, '_', '.', '-', starting with a letter", param="name"
            )
        existing = self._metrics.get(name)
        if existing is not None and existing.source == "builtin":
            raise ValidationError(f"metric {name!r} is built in; choose another name", param="name")
        if not callable(score):
            raise ValidationError(f"metric {name!r}: score must be callable", param="score")
        spec = MetricSpec(
            name=name,
            description=description or (inspect.getdoc(score) or "").split("\n", 1)[0],
            score=_two_argument(score),
            keys=tuple(keys) or (name,),
            higher_is_better=higher_is_better,
            needs_reference=needs_reference,
            aggregate=aggregate,
            source=self._current_source,
        )
        self._metrics[name] = spec
        return spec

    def register(self, spec: MetricSpec) -> MetricSpec:
        """Register a fully built spec (declarative YAML metrics use this)."""
        existing = self._metrics.get(spec.name)
        if existing is not None and existing.source == "builtin":
            raise ValidationError(f"metric {spec.name!r} is built in; choose another name", param="name")
        self._metrics[spec.name] = spec
        return spec

    def get(self, name: str) -> MetricSpec:
        """The metric called ``name``; the error lists the known ones."""
        spec = self._metrics.get(name)
        if spec is None:
            raise ValidationError(f"unknown metric {name!r}; known metrics: {', '.join(self.names())}", param="metrics")
        return spec

    def names(self) -> list[str]:
        """Every metric name, built-ins first."""
        return list(self._metrics)

    def specs(self) -> list[MetricSpec]:
        """Every metric spec, built-ins first."""
        return list(self._metrics.values())


def _two_argument(score: Callable[..., ScoreValue]) -> ScoreFn:
    """Accept plugin functions written as ``score(sample)`` as well as ``score(sample, ctx)``."""
    try:
        params = [
            p
            for p in inspect.signature(score).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        return score
    if len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params):
        return score

    def one(sample: Sample, _ctx: MetricContext) -> ScoreValue:
        return score(sample)

    return one
