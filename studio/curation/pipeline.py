"""Curation pipelines: a named list of steps, saved as YAML, previewed on a sample, run into a new dataset version.

A pipeline file::

    name: sft-clean
    description: Tidy an SFT set and drop what should not be learnt
    tokenizer_model: default          # counts tokens for `length` min_tokens/max_tokens
    steps:
      - step: clean
      - step: length
        min_chars: 20
      - step: dedupe
        threshold: 0.85
      - step: quality                 # heuristics blended with an LLM judge's 1-10 grade
        judge_model: default
        judge_weight: 0.5
        min_score: 0.4

Its life: :func:`load_pipeline` validates the text (an error names the field: ``steps[2].threshold: ...``);
:func:`preview` runs it on a sample of a version and writes nothing; :func:`curate` runs it on every row and
stores the rows kept as a new version (``source="curate"``) whose lineage records the source version, the
pipeline with every parameter, and each step's counts — or refuses, before anything is written, when no row
would be left. A ``quality`` step with a ``judge_model`` asks that model through the ``chat`` function of the
:class:`~studio.curation.steps.StepContext` the caller passes (``studio.curation.judge.engine_chat``); without one
the run is refused before any step runs, and a judge that fails stops the run, again before anything is written.
Versions are content-addressed, so a run that changes nothing returns the source version (``created=False``).
Pipelines are saved under ``STUDIO_HOME/pipelines/<name>.yaml``; the examples shipped in ``configs/curation/`` are
listed and read too, and a saved pipeline of the same name takes their place.

A dataset over ``STUDIO_MAX_UPLOAD_BYTES`` (the largest upload the studio takes) is refused: every row is held
in memory while the steps run.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import ErrorDetails

from studio.curation.judge import no_chat_error
from studio.curation.steps import STEP_KINDS, QualityConfig, Row, StepConfig, StepContext, StepReport, run_step
from studio.datasets.schemas import DatasetVersionPublic, ImportResult, size_label
from studio.errors import NotFoundError, PayloadTooLargeError, ValidationError
from studio.files import write_text_atomic
from studio.settings import CONFIG_DIR, Settings
from studio.user_messages import user_sentence

if TYPE_CHECKING:
    from studio.datasets.store import DatasetStore
    from studio.training.service import TokenizerCache

log = logging.getLogger(__name__)

PIPELINES_DIR = "pipelines"
SHIPPED_DIR = CONFIG_DIR / "curation"
MAX_STEPS = 30
DEFAULT_SAMPLE = 50
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_SHOWN_ERRORS = 5

TokenCounter = Callable[[str], int]


class CurationPipeline(BaseModel):
    """A named, ordered list of curation steps."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=NAME_PATTERN,
        description="The pipeline's name: letters, digits, '_', '.', '-' (up to 100); its file is <name>.yaml.",
    )
    description: str = Field("", max_length=2000, description="What the pipeline is for.")
    tokenizer_model: str | None = Field(
        None,
        max_length=500,
        description="Alias or model whose tokenizer counts tokens for length limits in tokens (e.g. default).",
    )
    steps: list[StepConfig] = Field(
        min_length=1, max_length=MAX_STEPS, description="The steps, run in order; each sees the rows the last kept."
    )

    def needs_tokens(self) -> bool:
        """Whether an enabled step counts tokens."""
        return any(s.enabled and s.needs_tokens() for s in self.steps)

    def judge_steps(self) -> list[int]:
        """Indices of the enabled ``quality`` steps that ask a judge model (then the run needs a chat function)."""
        return [i for i, s in enumerate(self.steps) if s.enabled and isinstance(s, QualityConfig) and s.uses_judge()]

    def needs_judge(self) -> bool:
        """Whether an enabled step asks a judge model."""
        return bool(self.judge_steps())


# -- YAML --------------------------------------------------------------------------------------------------------
def _path(parts: Sequence[int | str]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _describe(err: ErrorDetails) -> tuple[str, str]:
    """One pydantic error as ``(field path, sentence)``; a step's fields are named as ``steps[2].threshold``."""
    loc = list(err["loc"])
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        head, rest = loc[:2], loc[2:]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            given = f"unknown step {ctx.get('tag')!r}" if err["type"] == "union_tag_invalid" else "no 'step' given"
            return _path([*head, "step"]), f"{given}; a step is one of {', '.join(STEP_KINDS)}"
        kind = STEP_KINDS.get(str(rest[0])) if rest else None
        if kind is not None:
            rest = rest[1:]
        if not rest:  # a check across fields (min above max): the validator's words already name them
            return _path(head), str(err["msg"]).removeprefix("Value error, ")
        model = kind.config_model if kind is not None else None
        return _path([*head, *rest]), user_sentence({**err, "loc": tuple(rest)}, model)
    return _path(loc) or "pipeline", user_sentence(err, CurationPipeline)


def pipeline_from_data(data: Any, source: str = "pipeline") -> CurationPipeline:
    """Validate plain data (a parsed YAML/JSON document) into a pipeline; errors name each bad field."""
    if not isinstance(data, dict):
        raise ValidationError(
            f"{source}: a pipeline is a mapping with name, description, tokenizer_model and steps", param="pipeline"
        )
    try:
        return CurationPipeline.model_validate(data)
    except PydanticValidationError as exc:
        found = [_describe(e) for e in exc.errors()]
        listed = "; ".join(f"{path}: {sentence}" for path, sentence in found[:_SHOWN_ERRORS])
        more = f" (and {len(found) - _SHOWN_ERRORS} more)" if len(found) > _SHOWN_ERRORS else ""
        raise ValidationError(f"{source}: {listed}{more}", param=found[0][0]) from None


def load_pipeline(text: str, source: str = "pipeline") -> CurationPipeline:
    """Parse and validate a pipeline YAML document; syntax errors name the line, schema errors the field."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        raise ValidationError(f"{where}: not valid YAML ({exc.problem})", param="yaml") from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"{source}: not valid YAML ({exc})", param="yaml") from None
    return pipeline_from_data(data, source)


def dump_pipeline(pipeline: CurationPipeline) -> str:
    """The pipeline as YAML with every parameter written out (what is saved and recorded in lineage)."""
    return yaml.safe_dump(
        pipeline.model_dump(mode="json"), sort_keys=False, allow_unicode=True, default_flow_style=False
    )


# -- running -----------------------------------------------------------------------------------------------------
@dataclass
class CurationResult:
    """The rows a pipeline kept, a report per step, and the quality score of each kept row (when a ``quality``
    step ran). ``rows_in`` rows were curated, out of ``total`` in the version (fewer on a preview sample)."""

    kept: list[Row]
    reports: list[StepReport]
    scores: list[float] | None = None
    rows_in: int = 0
    total: int = 0

    @property
    def sampled(self) -> bool:
        """Whether this ran on a sample rather than every row."""
        return self.rows_in < self.total

    def summary(self) -> str:
        """One line per step, then the total."""
        lines = [r.summary() for r in self.reports]
        of = f" (a sample of {self.total})" if self.sampled else ""
        lines.append(f"kept {len(self.kept)} of {self.rows_in} rows{of}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (CLI ``--json``, the UI's JSON view)."""
        return {
            "rows_in": self.rows_in,
            "total": self.total,
            "kept": len(self.kept),
            "steps": [r.to_dict() for r in self.reports],
            "scores": self.scores,
        }


def sample_rows(rows: Sequence[Row], sample: int | None) -> list[Row]:
    """``sample`` rows picked at random with a fixed seed, in their original order (all when None or enough)."""
    if sample is None or sample >= len(rows):
        return list(rows)
    if sample < 1:
        raise ValidationError(f"sample must be at least 1, not {sample}", param="sample")
    picked = sorted(random.Random(0).sample(range(len(rows)), sample))
    return [rows[i] for i in picked]


def run_steps(
    rows: Sequence[Row],
    pipeline: CurationPipeline,
    *,
    count_tokens: TokenCounter | None = None,
    sample: int | None = None,
    context: StepContext | None = None,
) -> CurationResult:
    """Run every enabled step of ``pipeline`` over ``rows`` (or a seeded random ``sample`` of them) in memory.

    Raises ``ValidationError`` before any step runs when a step counts tokens and no ``count_tokens`` is given
    (``param="tokenizer_model"``), or a ``quality`` step asks a judge model and ``context`` has no ``chat``
    (``param="steps[i].judge_model"``). ``context`` also supplies a PII analyzer or toxicity scorer other than the
    safety layer's defaults.
    """
    needing = [i for i, s in enumerate(pipeline.steps) if s.enabled and s.needs_tokens()]
    if needing and count_tokens is None and (context is None or context.count_tokens is None):
        raise ValidationError(
            f"steps[{needing[0]}] limits length in tokens: set the pipeline's tokenizer_model (an alias or model "
            "whose tokenizer counts them)",
            param="tokenizer_model",
        )
    judging = pipeline.judge_steps()
    if judging and (context is None or context.chat is None):
        step = pipeline.steps[judging[0]]
        model = step.judge_model if isinstance(step, QualityConfig) else None
        raise no_chat_error(str(model), f"steps[{judging[0]}].judge_model")
    current = sample_rows(rows, sample)
    result = CurationResult(kept=[], reports=[], rows_in=len(current), total=len(rows))
    ctx = context or StepContext()
    if count_tokens is not None:
        ctx.count_tokens = count_tokens
    scores: list[float] | None = None
    for index, step in enumerate(pipeline.steps):
        if not step.enabled:
            n = len(current)
            result.reports.append(StepReport(step.step, step.params(), n, n, skipped=True))
            continue
        ctx.index = index
        outcome = run_step(current, step, ctx)
        if scores is not None:
            scores = [scores[i] for i in outcome.kept]
        if outcome.scores is not None:
            scores = outcome.scores
        current = outcome.rows
        result.reports.append(outcome.report)
        log.debug("curation %s: %s", pipeline.name, outcome.report.summary())
    result.kept, result.scores = current, scores
    return result


def token_counter(settings: Settings, model: str, tokenizers: TokenizerCache | None = None) -> TokenCounter:
    """A function counting the tokens of a text with ``model``'s tokenizer (an alias, registry id or path; no
    special tokens added). ``tokenizers`` reuses a cache the caller holds (the Fine-Tune tab's)."""
    from studio.training.service import TokenizerCache

    tokenizer: Any = (tokenizers or TokenizerCache(settings)).get(model)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def _counter_for(settings: Settings, pipeline: CurationPipeline, given: TokenCounter | None) -> TokenCounter | None:
    if given is not None or not pipeline.needs_tokens() or not pipeline.tokenizer_model:
        return given
    return token_counter(settings, pipeline.tokenizer_model)


def check_size(settings: Settings, dataset: str, version: DatasetVersionPublic) -> None:
    """Refuse a version larger than the largest upload the studio takes (``STUDIO_MAX_UPLOAD_BYTES``)."""
    limit = settings.max_upload_bytes
    if version.size_bytes > limit:
        raise PayloadTooLargeError(
            f"dataset {dataset!r} v{version.number} is {size_label(version.size_bytes)}; curation takes datasets up "
            f"to {size_label(limit)} (STUDIO_MAX_UPLOAD_BYTES)",
            param="dataset",
        )


def _load(store: DatasetStore, dataset: str, version: int | None) -> tuple[DatasetVersionPublic, list[Row]]:
    source = store.get_version(dataset, version)
    check_size(store.settings, dataset, source)
    return source, store.load_examples(source)


def preview(
    store: DatasetStore,
    dataset: str,
    pipeline: CurationPipeline,
    version: int | None = None,
    sample: int = DEFAULT_SAMPLE,
    count_tokens: TokenCounter | None = None,
    *,
    context: StepContext | None = None,
) -> CurationResult:
    """Run ``pipeline`` on a seeded random sample of a version (the latest when None); nothing is written."""
    source, rows = _load(store, dataset, version)
    log.info("previewing pipeline %r on %r v%d (%d of %d rows)", pipeline.name, dataset, source.number,
             min(sample, len(rows)), len(rows))  # fmt: skip
    counter = _counter_for(store.settings, pipeline, count_tokens)
    return run_steps(rows, pipeline, count_tokens=counter, sample=sample, context=context)


@dataclass
class CurateOutcome:
    """What a curation run did (``result``) and the version it stored (``import_result``; ``created`` is False
    when the rows kept are exactly an existing version's)."""

    result: CurationResult
    import_result: ImportResult


def curate(
    store: DatasetStore,
    dataset: str,
    pipeline: CurationPipeline,
    version: int | None = None,
    into: str | None = None,
    count_tokens: TokenCounter | None = None,
    *,
    context: StepContext | None = None,
) -> CurateOutcome:
    """Run ``pipeline`` on every row of a version and store the rows kept as a new version of ``into`` (default:
    the same dataset, whose new version then has the source version as parent).

    Refuses with ``ValidationError`` (``param="steps"``), before anything is written, when no row would be left;
    the message gives each step's counts.
    """
    source, rows = _load(store, dataset, version)
    counter = _counter_for(store.settings, pipeline, count_tokens)
    result = run_steps(rows, pipeline, count_tokens=counter, context=context)
    if not result.kept:
        steps = "; ".join(r.summary() for r in result.reports)
        raise ValidationError(
            f"pipeline {pipeline.name!r} would drop every one of the {len(rows)} rows of dataset {dataset!r} "
            f"v{source.number}, so nothing was written — {steps}",
            param="steps",
        )
    target = (into or "").strip() or dataset
    lineage = {
        "source": {"dataset": dataset, "version": source.number, "version_id": source.id},
        "pipeline": pipeline.model_dump(mode="json"),
        "steps": [r.counts() for r in result.reports],
    }
    imported = store.create_version(
        target,
        result.kept,
        source="curate",
        parent_version_id=source.id if target == dataset else None,
        lineage=lineage,
        kind=source.kind,
        description="" if target == dataset else f"Curated from {dataset} v{source.number} by {pipeline.name}",
    )
    log.info("curated %r v%d with %r: %d of %d rows kept → %r v%d", dataset, source.number, pipeline.name,
             len(result.kept), len(rows), target, imported.version.number)  # fmt: skip
    return CurateOutcome(result=result, import_result=imported)


# -- saved pipelines ---------------------------------------------------------------------------------------------
def pipelines_dir(settings: Settings) -> Path:
    """``STUDIO_HOME/pipelines``: where pipelines are saved."""
    return settings.home / PIPELINES_DIR


def _names_in(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if p.is_file() and re.match(NAME_PATTERN, p.stem))


def save_pipeline(settings: Settings, pipeline: CurationPipeline) -> Path:
    """Write ``pipeline`` to ``STUDIO_HOME/pipelines/<name>.yaml`` atomically (replacing one of that name)."""
    path = pipelines_dir(settings) / f"{pipeline.name}.yaml"
    write_text_atomic(path, dump_pipeline(pipeline))
    log.info("saved curation pipeline %r to %s", pipeline.name, path)
    return path


def list_pipelines(settings: Settings) -> list[str]:
    """Names of the saved pipelines and the shipped examples, sorted, each once."""
    return sorted(set(_names_in(pipelines_dir(settings))) | set(_names_in(SHIPPED_DIR)))


def get_pipeline(settings: Settings, name: str) -> CurationPipeline:
    """The saved pipeline ``name`` (else the shipped example of that name); ``NotFoundError`` lists the known."""
    if not re.match(NAME_PATTERN, name or ""):
        raise ValidationError(
            f"a pipeline name has letters, digits, '_', '.', '-' (up to 100); got {name!r}", param="pipeline"
        )
    for folder, label in ((pipelines_dir(settings), "$STUDIO_HOME/pipelines"), (SHIPPED_DIR, "configs/curation")):
        path = folder / f"{name}.yaml"
        if path.is_file():
            return load_pipeline(path.read_text(encoding="utf-8"), f"{label}/{path.name}")
    known = ", ".join(list_pipelines(settings)) or "none yet"
    raise NotFoundError(f"pipeline {name!r} not found; known pipelines: {known}", param="pipeline")
