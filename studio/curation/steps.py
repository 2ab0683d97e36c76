"""Curation steps: what each one is configured with, and the function that runs it over dataset rows.

A step takes canonical dataset examples (``studio.datasets.formats``: supervised ``messages``, preference
``prompt``/``chosen``/``rejected``, KTO ``prompt``/``completion``/``label``) and returns the rows it keeps,
possibly changed, with a :class:`StepReport` saying how many it changed or dropped and why::

    outcome = STEP_KINDS["length"].run(rows, LengthConfig(min_chars=20), StepContext())

``STEP_KINDS`` is the one place that says which steps exist (as ``studio.jobs.kinds.KIND_MODULES`` does for
jobs); each entry pairs a pydantic config (``extra="forbid"``, every field with its help text and range, a
``step`` literal that tells the kinds apart in a pipeline file) with its function. Heavy libraries — ftfy,
datasketch, py3langid, Presidio, the toxicity scorer — are imported only when their step first runs, so a
missing one breaks only its own step, with an error naming it.

The text of a row has two sides: the **prompt** (system and user turns) and the **response** (assistant turns,
or ``completion`` / ``chosen`` / ``rejected``); tool results and tool-call arguments are never read or changed.
``apply_to`` picks ``prompt``, ``response`` or the whole ``row`` (both sides, joined by a line break). A step
that changes text checks the row is still canonical afterwards and drops it otherwise (a reply cleaned down to
nothing is no longer a training example).

"Words" here are runs of letters, combining marks and digits: Python's ``\\w`` stops at the vowel signs of
Devanagari and other Indic scripts (Unicode category ``M``), which would split Hindi words apart and count their
vowel signs as symbols. Each Chinese/Japanese character is a word of its own, as those scripts use no spaces.
"""

from __future__ import annotations

import copy
import functools
import html
import logging
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from studio.curation.judge import DEFAULT_RUBRIC, JudgeChat
from studio.datasets.formats import RowProblem, check_canonical, kind_of
from studio.errors import BackendUnavailableError, ValidationError
from studio.safety.policy import DEFAULT_PII_ENTITIES, SAFETY_CONFIG_DIR, SUPPORTED_PII_ENTITIES

if TYPE_CHECKING:
    from studio.safety.pii import PiiAnalyzer
    from studio.safety.toxicity import ToxicityScorer

log = logging.getLogger(__name__)

Row = dict[str, Any]
Side = Literal["prompt", "response", "row"]
#: examples of dropped / changed rows a report keeps, and near-duplicate clusters it lists
DROPPED_EXAMPLES = 5
CHANGED_EXAMPLES = 3
LISTED_CLUSTERS = 20
REFUSAL_PHRASES_PATH = SAFETY_CONFIG_DIR / "refusal_phrases.txt"

_APPLY_TO_HELP = "Which text to look at: prompt (system and user turns), response (the replies) or row (both)."


# -- reports -----------------------------------------------------------------------------------------------------
@dataclass
class StepReport:
    """What one step did to the rows it was given.

    ``reasons`` counts why rows were dropped or changed (``"too short"``, ``"near-duplicate"``, ``"masked
    EMAIL_ADDRESS"`` ...); ``dropped_examples`` keeps the first few dropped rows with their reason,
    ``changed_examples`` the first few changed rows as ``(before, after)``; ``clusters`` (dedupe only) lists
    near-duplicate groups as indices into the rows the step was given, the kept row first. ``details`` holds
    step-specific figures (the language mix, the score range).
    """

    step: str
    params: dict[str, Any]
    rows_in: int
    rows_out: int = 0
    changed: int = 0
    dropped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    dropped_examples: list[tuple[Row, str]] = field(default_factory=list)
    changed_examples: list[tuple[Row, Row]] = field(default_factory=list)
    clusters: list[list[int]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    def counts(self) -> dict[str, Any]:
        """The figures alone (what a new version's lineage records for this step)."""
        return {
            "step": self.step,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "changed": self.changed,
            "dropped": self.dropped,
            "reasons": dict(self.reasons),
            **({"skipped": True} if self.skipped else {}),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (CLI ``--json``, the UI's JSON view)."""
        return {
            **self.counts(),
            "params": self.params,
            "dropped_examples": [{"row": row, "reason": reason} for row, reason in self.dropped_examples],
            "changed_examples": [{"before": a, "after": b} for a, b in self.changed_examples],
            "clusters": self.clusters,
            "details": self.details,
        }

    def summary(self) -> str:
        """One line: ``length: 120 → 97 (dropped 23: too short 20, too long 3)``."""
        if self.skipped:
            return f"{self.step}: skipped (disabled)"
        parts = []
        if self.dropped:
            parts.append(f"dropped {self.dropped}")
        if self.changed:
            parts.append(f"changed {self.changed}")
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
        tail = f" ({'; '.join(parts)}: {why})" if parts and why else (f" ({'; '.join(parts)})" if parts else "")
        if "judge_model" in self.details:
            d = self.details
            mean = f", mean grade {d['judge_mean']:g}/10" if d.get("judge_mean") is not None else ""
            none = f", no grade in {d['judge_no_score']} replies" if d.get("judge_no_score") else ""
            tail += f"; judge {d['judge_model']}: {d['judged']} rows graded{mean}{none}"
        return f"{self.step}: {self.rows_in} → {self.rows_out}{tail}"


@dataclass
class StepOutcome:
    """The rows a step keeps (``rows``), where each came from (``kept[i]`` indexes the rows it was given), its
    report, and a score per kept row when the step computes one (``quality``)."""

    rows: list[Row]
    kept: list[int]
    report: StepReport
    scores: list[float] | None = None


@dataclass
class StepContext:
    """What steps may use besides their config: a token counter (``length`` in tokens), the safety layer's PII
    analyzer and toxicity scorer (built on first use when not given), and a chat function that asks a judge model
    (``quality`` with a ``judge_model``): ``chat(model, prompt, max_tokens) -> reply`` —
    :func:`studio.curation.judge.engine_chat` in the studio, a fake in tests."""

    count_tokens: Callable[[str], int] | None = None
    pii_analyzer: PiiAnalyzer | None = None
    toxicity_scorer: ToxicityScorer | None = None
    chat: JudgeChat | None = None
    #: where the step sits in its pipeline, for error messages (``steps[2].max_tokens``)
    index: int = 0

    def param(self, name: str) -> str:
        """``steps[<index>].<name>``: the field path a message names."""
        return f"steps[{self.index}].{name}"

    def analyzer(self) -> PiiAnalyzer:
        """The PII analyzer (Presidio with the offline spaCy model; built once per process)."""
        if self.pii_analyzer is None:
            from studio.safety.pii import get_pii_analyzer

            self.pii_analyzer = get_pii_analyzer()
        return self.pii_analyzer

    def scorer(self) -> ToxicityScorer:
        """The toxicity scorer: the one given, else the bundled offline one (alt-profanity-check)."""
        if self.toxicity_scorer is None:
            from studio.safety.toxicity import profanity_check_scorer

            self.toxicity_scorer = profanity_check_scorer()
        return self.toxicity_scorer


class _Tally:
    """Builds a step's outcome row by row."""

    def __init__(self, config: StepConfigBase, rows_in: int) -> None:
        self.report = StepReport(step=config.step, params=config.params(), rows_in=rows_in)
        self.rows: list[Row] = []
        self.kept: list[int] = []
        self.reasons: Counter[str] = Counter()

    def keep(self, index: int, row: Row, before: Row | None = None, why: Iterable[str] = ()) -> None:
        """Keep ``row`` (changed from ``before`` when that is given and differs)."""
        self.rows.append(row)
        self.kept.append(index)
        if before is not None and before != row:
            self.report.changed += 1
            self.reasons.update(why)
            if len(self.report.changed_examples) < CHANGED_EXAMPLES:
                self.report.changed_examples.append((before, row))

    def drop(self, row: Row, reason: str) -> None:
        """Drop ``row`` for ``reason`` (a short, low-cardinality phrase: it is counted)."""
        self.report.dropped += 1
        self.reasons[reason] += 1
        if len(self.report.dropped_examples) < DROPPED_EXAMPLES:
            self.report.dropped_examples.append((row, reason))

    def outcome(self, scores: list[float] | None = None) -> StepOutcome:
        """The finished outcome."""
        self.report.rows_out = len(self.rows)
        self.report.reasons = dict(self.reasons.most_common())
        return StepOutcome(self.rows, self.kept, self.report, scores)


# -- the text of a row -------------------------------------------------------------------------------------------
_PROMPT_ROLES = frozenset({"system", "user"})
_CJK = (
    "\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
)


def _ranges(codes: Iterable[int]) -> str:
    """A regex character-class body for the given code points (escaped, consecutive ones as ranges)."""
    out: list[str] = []
    run: list[int] = []
    for code in codes:
        if run and code == run[-1] + 1:
            run.append(code)
            continue
        if run:
            out.append(re.escape(chr(run[0])) + (f"-{re.escape(chr(run[-1]))}" if len(run) > 1 else ""))
        run = [code]
    if run:
        out.append(re.escape(chr(run[0])) + (f"-{re.escape(chr(run[-1]))}" if len(run) > 1 else ""))
    return "".join(out)


@cache
def _marks() -> str:
    """Every combining mark (categories Mn, Mc, Me) as a character-class body; built once (~0.2 s)."""
    return _ranges(c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)).startswith("M"))


@cache
def _word_re() -> re.Pattern[str]:
    return re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W_]|[{_marks()}])+")


@cache
def _symbol_re() -> re.Pattern[str]:
    return re.compile(rf"(?![{_marks()}])[^\w\s]|_")


def words(text: str) -> list[str]:
    """The words of ``text``, lower-cased: runs of letters, combining marks and digits; a CJK character alone."""
    return [w.casefold() for w in _word_re().findall(text)]


def symbol_ratio(text: str) -> float:
    """The share of ``text``'s non-space characters that are neither letters, marks nor digits (0 for no text)."""
    visible = sum(1 for ch in text if not ch.isspace())
    if not visible:
        return 0.0
    return len(_symbol_re().findall(text)) / visible


def repeated_ngram_ratio(text: str, n: int) -> float:
    """The share of ``text``'s word ``n``-grams that repeat an earlier one (0 = no repetition; "a a a a" → high)."""
    tokens = words(text)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if len(grams) < 2:
        return 0.0
    return (len(grams) - len(set(grams))) / len(grams)


def _text_fields(row: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str, str]]:
    """Every text of a row as ``(path, side, text)``; tool results and tool calls are left out."""
    out: list[tuple[tuple[str | int, ...], str, str]] = []
    key = "messages" if "messages" in row else "prompt"
    for i, message in enumerate(row.get(key) or ()):
        role = message.get("role")
        if role in _PROMPT_ROLES:
            out.append(((key, i, "content"), "prompt", str(message.get("content") or "")))
        elif role == "assistant":
            out.append(((key, i, "content"), "response", str(message.get("content") or "")))
    for reply in ("completion", "chosen", "rejected"):
        if isinstance(row.get(reply), str):
            out.append(((reply,), "response", row[reply]))
    return out


def texts(row: Mapping[str, Any], side: Side = "row", *, system: bool = True) -> list[str]:
    """The texts of one side of a row, in order (``system=False`` leaves the system prompt out)."""
    found = []
    key = "messages" if "messages" in row else "prompt"
    for path, where, text in _text_fields(row):
        if side != "row" and where != side:
            continue
        if not system and len(path) == 3 and row[key][path[1]].get("role") == "system":
            continue
        found.append(text)
    return found


def side_text(row: Mapping[str, Any], side: Side = "row", *, system: bool = True) -> str:
    """One side of a row as one text (its parts joined by line breaks)."""
    return "\n".join(t for t in texts(row, side, system=system) if t)


def map_texts(row: Mapping[str, Any], change: Callable[[str], str], side: Side = "row") -> Row:
    """A copy of ``row`` with ``change`` applied to each text of ``side`` (the original is left alone)."""
    out: Row = copy.deepcopy(dict(row))
    for path, where, text in _text_fields(row):
        if side != "row" and where != side:
            continue
        new = change(text)
        if new == text:
            continue
        if len(path) == 1:
            out[str(path[0])] = new
        else:
            out[str(path[0])][int(path[1])]["content"] = new
    return out


def _prompt_and_reply(row: Mapping[str, Any]) -> tuple[str, str, bool]:
    """The last user turn, the final reply, and whether the reply calls a tool (so may have no text)."""
    conversation = row.get("messages") or row.get("prompt") or []
    user = next((str(m.get("content") or "") for m in reversed(conversation) if m.get("role") == "user"), "")
    if "messages" in row:
        last = conversation[-1]
        return user, str(last.get("content") or ""), bool(last.get("tool_calls"))
    return user, str(row.get("completion", row.get("chosen", ""))), False


def still_canonical(row: Mapping[str, Any]) -> str | None:
    """None when ``row`` is still a valid canonical example; else why not, as a short reason."""
    try:
        check_canonical(row, kind_of(row))
    except RowProblem as exc:
        return "became empty" if "is empty" in exc.message else "no longer a valid example"
    return None


def _normalised(text: str) -> str:
    return " ".join(words(text))


def describe_row(row: Mapping[str, Any], limit: int = 120) -> str:
    """A row on one line for reports: ``last user turn → final reply`` (each cut to fit ``limit``)."""
    user, reply, calls_tool = _prompt_and_reply(row)
    if calls_tool and not reply:
        reply = "(tool call)"
    half = max(10, (limit - 3) // 2)

    def cut(text: str) -> str:
        flat = " ".join(text.split())
        return flat if len(flat) <= half else flat[: half - 1] + "…"

    return f"{cut(user)} → {cut(reply)}"


# -- configs -----------------------------------------------------------------------------------------------------
class StepConfigBase(BaseModel):
    """Fields every step has; each step adds its own ``step`` literal and parameters."""

    model_config = ConfigDict(extra="forbid")

    step: str
    enabled: bool = Field(True, description="Run this step; off keeps it in the pipeline but skips it.")

    def params(self) -> dict[str, Any]:
        """The parameters as plain data, without ``step`` and ``enabled`` (what a report shows)."""
        return self.model_dump(mode="json", exclude={"step", "enabled"})

    def needs_tokens(self) -> bool:
        """Whether this step counts tokens (then the pipeline needs a tokenizer)."""
        return False


class CleanConfig(StepConfigBase):
    """Mend and tidy text: mojibake, markup, Unicode form, control characters, whitespace."""

    step: Literal["clean"] = "clean"
    fix_mojibake: bool = Field(
        True, description="Repair text decoded with the wrong encoding ('cafÃ©' → 'café') with ftfy."
    )
    strip_html: bool = Field(
        True,
        description="Remove HTML tags, comments and script/style blocks and decode entities (&amp; → &); text "
        "inside ``` code fences is left alone. Turn off for data that teaches HTML.",
    )
    unicode: Literal["NFC", "NFKC", "none"] = Field(
        "NFC",
        description="Unicode normal form: NFC composes accents (safe for every script); NFKC also folds "
        "compatibility forms (full-width letters, ligatures, superscripts); none leaves the text as it is.",
    )
    remove_control: bool = Field(
        True,
        description="Remove control characters and invisible ones (zero-width space, byte-order mark, soft "
        "hyphen); line breaks, tabs and the joiners Indic scripts and emoji need are kept.",
    )
    collapse_whitespace: bool = Field(
        True,
        description="Turn runs of spaces between words into one, drop trailing spaces and keep at most one blank "
        "line in a row; indentation and code fences are kept.",
    )
    trim: bool = Field(True, description="Remove spaces and line breaks at the start and end of each text.")


class LengthConfig(StepConfigBase):
    """Drop rows whose text is too short or too long, in characters and/or tokens of the pipeline's tokenizer."""

    step: Literal["length"] = "length"
    apply_to: Side = Field("row", description=_APPLY_TO_HELP)
    min_chars: int = Field(1, ge=0, le=10_000_000, description="Fewest characters a kept text has (0: no minimum).")
    max_chars: int | None = Field(
        None, ge=1, le=10_000_000, description="Most characters a kept text has (empty: no maximum)."
    )
    min_tokens: int | None = Field(
        None, ge=0, le=1_000_000, description="Fewest tokens (pipeline's tokenizer_model) a kept text has."
    )
    max_tokens: int | None = Field(
        None, ge=1, le=1_000_000, description="Most tokens (pipeline's tokenizer_model) a kept text has."
    )

    @model_validator(mode="after")
    def _ordered(self) -> LengthConfig:
        if self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is above max_chars ({self.max_chars})")
        if self.min_tokens is not None and self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) is above max_tokens ({self.max_tokens})")
        return self

    def needs_tokens(self) -> bool:
        return self.min_tokens is not None or self.max_tokens is not None


class RepetitionConfig(StepConfigBase):
    """Drop rows that repeat themselves (a looping generation, copy-pasted filler)."""

    step: Literal["repetition"] = "repetition"
    apply_to: Side = Field("row", description=_APPLY_TO_HELP)
    n: int = Field(3, ge=1, le=10, description="Length of the word sequences (n-grams) compared.")
    max_ratio: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Most a kept text may repeat: the share of its word n-grams that occurred earlier in it "
        "(0 = none repeats, near 1 = one phrase over and over).",
    )


class SymbolsConfig(StepConfigBase):
    """Drop rows that are mostly symbols rather than words (markup debris, encoded data, ASCII art)."""

    step: Literal["symbols"] = "symbols"
    apply_to: Side = Field("row", description=_APPLY_TO_HELP)
    max_ratio: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Most a kept text may have of characters that are neither letters (any script, with its "
        "vowel signs and accents) nor digits, as a share of its non-space characters.",
    )


class EmptyConfig(StepConfigBase):
    """Drop rows with nothing to learn from: no words in the prompt or reply, or a reply that only repeats the
    prompt (for preference pairs: two replies that say the same)."""

    step: Literal["empty"] = "empty"
    drop_empty: bool = Field(
        True, description="Drop rows whose last user turn or final reply has no letter or digit at all."
    )
    drop_identical: bool = Field(
        True,
        description="Drop rows whose reply has the same words as the prompt (case and punctuation aside), and "
        "preference pairs whose chosen and rejected replies do.",
    )


@cache
def shipped_refusal_phrases() -> tuple[str, ...]:
    """The refusal phrases shipped in ``configs/safety/refusal_phrases.txt`` (one per line, ``#`` comments)."""
    lines = Path(REFUSAL_PHRASES_PATH).read_text(encoding="utf-8").splitlines()
    return tuple(dict.fromkeys(line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()))


class RefusalConfig(StepConfigBase):
    """Drop supervised rows whose reply refuses ("As an AI…", "I can't help with that") — they teach the model
    to refuse. Preference pairs are checked on their chosen reply, KTO rows only when labelled desirable."""

    step: Literal["refusal"] = "refusal"
    phrases: list[Annotated[str, Field(min_length=2, max_length=200)]] = Field(
        default_factory=lambda: list(shipped_refusal_phrases()),
        min_length=1,
        max_length=1000,
        description="Phrases that mark a refusal, matched as whole words, ignoring case and curly quotes "
        "(default: configs/safety/refusal_phrases.txt, as the bias audit uses).",
    )
    window: int = Field(
        300,
        ge=1,
        le=1_000_000,
        description="Characters at the start of each reply that are searched (refusals open the reply; a long "
        "answer that says 'I won't bore you' further down is not one).",
    )


class LanguageConfig(StepConfigBase):
    """Keep rows in the chosen languages, identified offline (py3langid, 97 languages)."""

    step: Literal["language"] = "language"
    apply_to: Side = Field("row", description=_APPLY_TO_HELP)
    keep: list[str] = Field(
        default_factory=lambda: ["en"],
        min_length=1,
        max_length=100,
        description="ISO 639-1 codes of the languages to keep (en, hi, fr, de, es, zh, ja, ...).",
    )
    min_probability: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Least confidence (0-1) the identifier must have in a kept row's language; rows below it "
        "are dropped as uncertain.",
    )
    keep_undetermined: bool = Field(
        True, description="Keep rows with too few letters to tell their language (numbers, code, 'ok')."
    )

    @field_validator("keep")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        codes = [c.strip().lower() for c in v]
        bad = [c for c in codes if not re.fullmatch(r"[a-z]{2,3}", c)]
        if bad:
            raise ValueError(f"language codes are 2-3 letters (ISO 639-1, e.g. en, hi); got {', '.join(bad)}")
        return list(dict.fromkeys(codes))


class PiiConfig(StepConfigBase):
    """Find personal data with the safety layer's Presidio analyzer (offline) and drop the row or mask it."""

    step: Literal["pii"] = "pii"
    apply_to: Side = Field("row", description=_APPLY_TO_HELP)
    action: Literal["drop", "mask", "redact"] = Field(
        "mask",
        description="drop: remove rows with personal data; mask: replace it with <ENTITY_TYPE>; redact: with ****.",
    )
    entities: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PII_ENTITIES),
        min_length=1,
        description="Entity types to look for (PERSON, EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, ...). Names and "
        "places are found in English text only; the patterns (e-mail, phone, card ...) work in any language.",
    )
    score_threshold: float = Field(0.5, ge=0.0, le=1.0, description="Least Presidio confidence (0-1) that counts.")

    @field_validator("entities")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [e for e in v if e not in SUPPORTED_PII_ENTITIES]
        if unknown:
            raise ValueError(f"unknown entity type(s) {', '.join(unknown)}; known: {', '.join(SUPPORTED_PII_ENTITIES)}")
        return list(dict.fromkeys(v))


class ToxicityConfig(StepConfigBase):
    """Drop rows the safety layer's toxicity scorer rates as toxic (offline: alt-profanity-check)."""

    step: Literal["toxicity"] = "toxicity"
    apply_to: Side = Field("row", description=_APPLY_TO_HELP)
    max_score: float = Field(
        0.8, ge=0.0, le=1.0, description="Highest toxicity (0-1) a kept row may have; rows scoring above are dropped."
    )


class DedupeConfig(StepConfigBase):
    """Remove near-duplicates with MinHash and locality-sensitive hashing (datasketch); the first row of each
    cluster is kept."""

    step: Literal["dedupe"] = "dedupe"
    apply_to: Side = Field("row", description=_APPLY_TO_HELP)
    threshold: float = Field(
        0.8,
        ge=0.5,
        le=1.0,
        description="Estimated Jaccard similarity of two rows' shingles at or above which they count as duplicates "
        "(1.0: identical shingles only; lower catches looser paraphrases).",
    )
    num_perm: int = Field(
        128, ge=16, le=1024, description="MinHash permutations: more estimate similarity better and run slower."
    )
    shingle_size: int = Field(3, ge=1, le=20, description="Words (or characters) per shingle.")
    shingle_unit: Literal["words", "chars"] = Field(
        "words", description="Shingles of words (prose) or of characters (short texts, scripts without spaces)."
    )
    include_system: bool = Field(
        False,
        description="Compare system prompts too (off: rows that share a long system prompt are not duplicates "
        "for that alone).",
    )


class QualityConfig(StepConfigBase):
    """A 0-1 quality score per row from the heuristics (reply length, repetition, symbols, refusal, echo),
    combined by weight, optionally blended with an LLM judge's 1-10 grade; cut rows below a score and/or sort the
    best first."""

    step: Literal["quality"] = "quality"
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="Lowest score (0-1) a kept row may have (0: keep all).")
    sort: bool = Field(False, description="Order the kept rows by score, best first.")
    target_chars: int = Field(
        40, ge=1, le=100_000, description="Reply length (characters) that earns the full length score."
    )
    length_weight: float = Field(1.0, ge=0.0, le=10.0, description="Weight of the reply-length score.")
    repetition_weight: float = Field(1.0, ge=0.0, le=10.0, description="Weight of 1 - repeated 3-gram share.")
    symbols_weight: float = Field(1.0, ge=0.0, le=10.0, description="Weight of 1 - symbol share.")
    refusal_weight: float = Field(1.0, ge=0.0, le=10.0, description="Weight of 'the reply does not refuse'.")
    echo_weight: float = Field(1.0, ge=0.0, le=10.0, description="Weight of 'the reply does not repeat the prompt'.")
    judge_model: str | None = Field(
        None,
        max_length=512,
        description="A model that grades each row 1-10 against the rubric: a user alias, a registry id, 'default' "
        "or a deployment's alias deploy:<name> (empty: the heuristics alone). It is asked once per row, greedily.",
    )
    rubric: str = Field(
        DEFAULT_RUBRIC,
        min_length=1,
        max_length=4000,
        description="What the judge is told makes a good example; the row and a request for one number from 1 "
        "to 10 follow it.",
    )
    judge_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Share of the judge in the score (0-1): score = (1 - w) * heuristics + w * (grade - 1) / 9. "
        "0 does not ask the judge; a row whose reply holds no grade keeps its heuristic score.",
    )
    judge_max_tokens: int = Field(
        16, ge=8, le=64, description="Most tokens the judge may write per row (8-64); the first 1-10 number counts."
    )

    @field_validator("judge_model", mode="before")
    @classmethod
    def _judge_name(cls, v: Any) -> Any:
        # an emptied form field or `judge_model: ""` means no judge, as leaving it out does
        if isinstance(v, str):
            return v.strip() or None
        return v

    @model_validator(mode="after")
    def _some_weight(self) -> QualityConfig:
        if not any(
            (self.length_weight, self.repetition_weight, self.symbols_weight, self.refusal_weight, self.echo_weight)
        ):
            raise ValueError("at least one weight must be above 0")
        return self

    def uses_judge(self) -> bool:
        """Whether rows are sent to a judge model (a ``judge_model`` with a ``judge_weight`` above 0)."""
        return self.judge_model is not None and self.judge_weight > 0


# -- the steps ---------------------------------------------------------------------------------------------------
_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
_HTML_NAMES = (
    "a|abbr|article|aside|b|big|blockquote|body|br|button|caption|center|cite|code|col|dd|del|details|div|dl|dt|em|"
    "figcaption|figure|font|footer|form|h[1-6]|head|header|hr|html|i|iframe|img|input|ins|kbd|label|li|link|main|"
    "mark|meta|nav|ol|p|pre|q|s|section|select|small|span|strike|strong|sub|summary|sup|table|tbody|td|textarea|"
    "tfoot|th|thead|title|tr|tt|u|ul|var"
)
_HTML_TAG = re.compile(rf"</?(?:{_HTML_NAMES})(?:\s[^<>]*)?/?>", re.I)
_HTML_DROP = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>|<!--.*?-->", re.I | re.S)
_HTML_BREAK = re.compile(r"<br\s*/?>|</(?:p|div|li|tr|h[1-6]|blockquote|pre|table|ul|ol)\s*>", re.I)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_INVISIBLE = frozenset("\u200b\u2060\ufeff\u00ad")
_SPACE_RUN = re.compile(r"(?<=\S)[^\S\n]{2,}(?=\S)")
_TRAILING = re.compile(r"[^\S\n]+$", re.M)
_BLANK_LINES = re.compile(r"\n{3,}")


def _outside_code(text: str, change: Callable[[str], str]) -> str:
    """``change`` applied to the parts of ``text`` outside ``` code fences."""
    out, pos = [], 0
    for m in _FENCE.finditer(text):
        out.append(change(text[pos : m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(change(text[pos:]))
    return "".join(out)


def strip_html(text: str) -> str:
    """``text`` without HTML tags, comments and script/style blocks; block ends become line breaks and entities
    are decoded. Angle brackets that are not known HTML tags (``a < b``, ``List<int>``) are left alone."""

    def strip(part: str) -> str:
        out = _HTML_DROP.sub("", part)
        out = _HTML_BREAK.sub("\n", out)
        out = _HTML_TAG.sub("", out)
        return html.unescape(out) if _ENTITY.search(out) else out

    return _outside_code(text, strip)


def remove_control(text: str) -> str:
    """``text`` without control characters (line breaks and tabs kept; CR LF → LF) and invisible format ones."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(ch for ch in text if ch in "\n\t" or (unicodedata.category(ch) != "Cc" and ch not in _INVISIBLE))


def collapse_whitespace(text: str) -> str:
    """Runs of spaces between words → one space, no trailing spaces, at most one blank line in a row (outside
    code fences; indentation kept)."""

    def collapse(part: str) -> str:
        return _BLANK_LINES.sub("\n\n", _TRAILING.sub("", _SPACE_RUN.sub(" ", part)))

    return _outside_code(text, collapse)


def _fixers(config: CleanConfig) -> list[tuple[str, Callable[[str], str]]]:
    fixers: list[tuple[str, Callable[[str], str]]] = []
    if config.fix_mojibake:
        try:
            import ftfy
        except ImportError as exc:
            raise BackendUnavailableError(f"fixing mojibake needs ftfy: pip install ftfy==6.3.1 ({exc})") from None
        fixers.append(("mojibake", ftfy.fix_encoding))
    if config.strip_html:
        fixers.append(("markup", strip_html))
    if config.unicode != "none":
        form = config.unicode
        fixers.append(("unicode form", lambda t: unicodedata.normalize(form, t)))
    if config.remove_control:
        fixers.append(("control characters", remove_control))
    if config.collapse_whitespace:
        fixers.append(("whitespace", collapse_whitespace))
    if config.trim:
        fixers.append(("trimmed", str.strip))
    return fixers


def _apply_fixers(text: str, fixers: Sequence[tuple[str, Callable[[str], str]]], applied: set[str]) -> str:
    """``text`` through each fixer in turn; the names of those that changed it are added to ``applied``."""
    for name, fixer in fixers:
        new = fixer(text)
        if new != text:
            applied.add(name)
            text = new
    return text


def run_clean(rows: list[Row], config: CleanConfig, context: StepContext) -> StepOutcome:
    """Apply the chosen fixes to every text; count a row once per kind of fix it needed."""
    fixers = _fixers(config)
    tally = _Tally(config, len(rows))
    for i, row in enumerate(rows):
        applied: set[str] = set()
        new = map_texts(row, functools.partial(_apply_fixers, fixers=fixers, applied=applied))
        problem = still_canonical(new) if new != row else None
        if problem:
            tally.drop(row, problem)
        else:
            tally.keep(i, new, row, sorted(applied))
    return tally.outcome()


def _filter(rows: list[Row], config: StepConfigBase, reason_of: Callable[[Row], str | None]) -> StepOutcome:
    tally = _Tally(config, len(rows))
    for i, row in enumerate(rows):
        reason = reason_of(row)
        if reason is None:
            tally.keep(i, row)
        else:
            tally.drop(row, reason)
    return tally.outcome()


def run_length(rows: list[Row], config: LengthConfig, context: StepContext) -> StepOutcome:
    """Drop texts outside the character and token bounds."""
    count = context.count_tokens
    if config.needs_tokens() and count is None:
        raise ValidationError(
            f"{context.param('min_tokens' if config.min_tokens is not None else 'max_tokens')}: counting tokens needs "
            "a tokenizer; set the pipeline's tokenizer_model (an alias or model) or use min_chars/max_chars",
            param="tokenizer_model",
        )

    def reason(row: Row) -> str | None:
        text = side_text(row, config.apply_to)
        if len(text) < config.min_chars:
            return "too short"
        if config.max_chars is not None and len(text) > config.max_chars:
            return "too long"
        if count is not None and config.needs_tokens():
            n = count(text)
            if config.min_tokens is not None and n < config.min_tokens:
                return "too few tokens"
            if config.max_tokens is not None and n > config.max_tokens:
                return "too many tokens"
        return None

    return _filter(rows, config, reason)


def run_repetition(rows: list[Row], config: RepetitionConfig, context: StepContext) -> StepOutcome:
    """Drop texts whose repeated n-gram share is above ``max_ratio``."""
    return _filter(
        rows,
        config,
        lambda row: (
            "repetitive" if repeated_ngram_ratio(side_text(row, config.apply_to), config.n) > config.max_ratio else None
        ),
    )


def run_symbols(rows: list[Row], config: SymbolsConfig, context: StepContext) -> StepOutcome:
    """Drop texts whose symbol share is above ``max_ratio``."""
    return _filter(
        rows,
        config,
        lambda row: "mostly symbols" if symbol_ratio(side_text(row, config.apply_to)) > config.max_ratio else None,
    )


def _has_words(text: str) -> bool:
    return bool(_word_re().search(text))


def run_empty(rows: list[Row], config: EmptyConfig, context: StepContext) -> StepOutcome:
    """Drop rows with a wordless prompt or reply, or a reply that repeats the prompt."""

    def reason(row: Row) -> str | None:
        user, reply, calls_tool = _prompt_and_reply(row)
        if config.drop_empty:
            if not _has_words(user):
                return "empty prompt"
            if not calls_tool and not _has_words(reply):
                return "empty response"
        if config.drop_identical:
            if reply and _normalised(reply) == _normalised(user):
                return "response repeats the prompt"
            if "chosen" in row and _normalised(row["chosen"]) == _normalised(row["rejected"]):
                return "chosen and rejected say the same"
        return None

    return _filter(rows, config, reason)


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\u2019", "'").replace("\u2018", "'").casefold())


def run_refusal(rows: list[Row], config: RefusalConfig, context: StepContext) -> StepOutcome:
    """Drop rows whose (desirable) reply opens with a refusal phrase."""
    from studio.safety.audit_metrics import RefusalDetector

    detector = RefusalDetector(tuple(dict.fromkeys(_fold(p).strip() for p in config.phrases)), window=config.window)

    def reason(row: Row) -> str | None:
        if "chosen" in row:
            replies = [row["chosen"]]
        elif "completion" in row:
            replies = [row["completion"]] if row.get("label") else []
        else:
            replies = texts(row, "response")
        return "refusal" if any(detector.is_refusal(r) for r in replies) else None

    return _filter(rows, config, reason)


def run_language(rows: list[Row], config: LanguageConfig, context: StepContext) -> StepOutcome:
    """Keep rows identified as one of ``keep`` with at least ``min_probability``; the report's ``details``
    hold the language mix of the rows given."""
    from studio.curation.language import UNDETERMINED, identify

    mix: Counter[str] = Counter()

    def reason(row: Row) -> str | None:
        code, prob = identify(side_text(row, config.apply_to))
        mix[code] += 1
        if code == UNDETERMINED:
            return None if config.keep_undetermined else "too little text to tell the language"
        if code not in config.keep:
            return f"language {code}"
        if prob < config.min_probability:
            return "uncertain language"
        return None

    outcome = _filter(rows, config, reason)
    outcome.report.details["languages"] = dict(mix.most_common())
    return outcome


def run_pii(rows: list[Row], config: PiiConfig, context: StepContext) -> StepOutcome:
    """Drop, mask or redact the personal data Presidio finds in each text of ``apply_to``."""
    from studio.safety.pii import Edit

    analyzer = context.analyzer()
    tally = _Tally(config, len(rows))

    def scrub(text: str, found: list[str]) -> str:
        spans = analyzer.analyze(text, config.entities, config.score_threshold)
        found.extend(s.entity_type for s in spans)
        if not spans or config.action == "drop":
            return text
        edits = [Edit(s.start, s.end, s.entity_type, config.action, s.score) for s in spans]
        return analyzer.apply_edits(text, edits)

    for i, row in enumerate(rows):
        found: list[str] = []
        new = map_texts(row, functools.partial(scrub, found=found), config.apply_to)
        if found and config.action == "drop":
            tally.drop(row, f"personal data ({found[0]})")
            continue
        problem = still_canonical(new) if new != row else None
        if problem:
            tally.drop(row, problem)
        else:
            verb = "masked" if config.action == "mask" else "redacted"
            tally.keep(i, new, row, sorted({f"{verb} {e}" for e in found}))
    return tally.outcome()


def run_toxicity(rows: list[Row], config: ToxicityConfig, context: StepContext) -> StepOutcome:
    """Drop rows where any text of ``apply_to`` scores above ``max_score``."""
    scorer = context.scorer()
    highest: list[float] = []

    def reason(row: Row) -> str | None:
        score = max((scorer.score(t) for t in texts(row, config.apply_to) if t.strip()), default=0.0)
        highest.append(score)
        return "toxic" if score > config.max_score else None

    outcome = _filter(rows, config, reason)
    outcome.report.details["scorer"] = getattr(scorer, "name", type(scorer).__name__)
    if highest:
        outcome.report.details["max_score"] = round(max(highest), 4)
    return outcome


def run_dedupe(rows: list[Row], config: DedupeConfig, context: StepContext) -> StepOutcome:
    """Keep the first row of each near-duplicate cluster; the report lists the clusters (largest first)."""
    from studio.curation.dedupe import near_duplicate_clusters

    clusters = near_duplicate_clusters(
        [side_text(row, config.apply_to, system=config.include_system) for row in rows],
        threshold=config.threshold,
        num_perm=config.num_perm,
        shingle_size=config.shingle_size,
        unit=config.shingle_unit,
    )
    duplicate_of = {i: cluster[0] for cluster in clusters for i in cluster[1:]}
    tally = _Tally(config, len(rows))
    for i, row in enumerate(rows):
        if i in duplicate_of:
            tally.drop(row, "near-duplicate")
        else:
            tally.keep(i, row)
    outcome = tally.outcome()
    ordered = sorted(clusters, key=lambda c: (-len(c), c[0]))
    outcome.report.clusters = ordered[:LISTED_CLUSTERS]
    outcome.report.details["clusters"] = len(clusters)
    outcome.report.details["cluster_rows"] = [[describe_row(rows[i]) for i in c] for c in ordered[:CHANGED_EXAMPLES]]
    return outcome


def quality_score(row: Mapping[str, Any], config: QualityConfig, refusals: Callable[[str], bool]) -> float:
    """The weighted mean of the heuristic scores of ``row`` (each 0-1), rounded to 4 places."""
    user, reply, calls_tool = _prompt_and_reply(row)
    whole = side_text(row, "row", system=False)
    parts = (
        (config.length_weight, 1.0 if calls_tool else min(1.0, len(reply.strip()) / config.target_chars)),
        (config.repetition_weight, 1.0 - repeated_ngram_ratio(whole, 3)),
        (config.symbols_weight, 1.0 - symbol_ratio(whole)),
        (config.refusal_weight, 0.0 if refusals(reply) else 1.0),
        (config.echo_weight, 0.0 if reply and _normalised(reply) == _normalised(user) else 1.0),
    )
    total = sum(w for w, _ in parts)
    return round(sum(w * s for w, s in parts) / total, 4)


def _judge(
    rows: Sequence[Row], config: QualityConfig, context: StepContext, heuristic: Sequence[float]
) -> tuple[list[float], dict[str, Any]]:
    """Ask the judge model to grade each row; the combined scores and the report's judge figures."""
    from studio.curation import judge

    model, param = str(config.judge_model), context.param("judge_model")
    if context.chat is None:
        raise judge.no_chat_error(model, param)
    grades: list[int | None] = []
    listed: list[dict[str, Any]] = []
    scores: list[float] = []
    for i, row in enumerate(rows):
        reply = judge.ask(context.chat, model, judge.judge_prompt(row, config.rubric), config.judge_max_tokens, param)
        grade = judge.parse_score(reply)
        grades.append(grade)
        scores.append(judge.combine(heuristic[i], grade, config.judge_weight))
        if len(listed) < judge.LISTED_JUDGE_SCORES:
            flat = " ".join(reply.split())
            listed.append(
                {"row": i, "judge": grade, "heuristic": heuristic[i], "score": scores[-1],
                 "reply": flat[: judge.REPLY_CHARS]}
            )  # fmt: skip
    given = [g for g in grades if g is not None]
    details: dict[str, Any] = {
        "judge_model": model,
        "judged": len(rows),
        "judge_no_score": len(rows) - len(given),
        "judge_mean": round(sum(given) / len(given), 2) if given else None,
        "judge_scores": listed,
    }
    if len(given) < len(rows):
        log.info("quality: the judge %r gave no score for %d of %d rows", model, len(rows) - len(given), len(rows))
    return scores, details


def run_quality(rows: list[Row], config: QualityConfig, context: StepContext) -> StepOutcome:
    """Score every row (the heuristics, blended with the judge model's grade when one is set); drop those below
    ``min_score``; sort best first when ``sort``. The report's details give the score range and, with a judge,
    its model, the rows it graded, their mean grade, how many replies held no grade (``judge_no_score``: those rows
    keep their heuristic score) and each row's figures (``judge_scores``, the first 50 rows)."""
    from studio.safety.audit_metrics import RefusalDetector

    detector = RefusalDetector(tuple(_fold(p).strip() for p in shipped_refusal_phrases()))
    scores = [quality_score(row, config, detector.is_refusal) for row in rows]
    judged: dict[str, Any] = {}
    if config.uses_judge():
        scores, judged = _judge(rows, config, context, scores)
    tally = _Tally(config, len(rows))
    kept_scores: list[float] = []
    order = sorted(range(len(rows)), key=lambda i: -scores[i]) if config.sort else range(len(rows))
    for i in order:
        if scores[i] < config.min_score:
            tally.drop(rows[i], f"score below {config.min_score:g}")
        else:
            tally.keep(i, rows[i])
            kept_scores.append(scores[i])
    outcome = tally.outcome(kept_scores)
    if scores:
        outcome.report.details.update(
            min_score=min(scores), mean_score=round(sum(scores) / len(scores), 4), max_score=max(scores)
        )
    if config.sort:
        outcome.report.details["sorted"] = True
    outcome.report.details.update(judged)
    return outcome


# -- the registry ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepKind:
    """One kind of step: its config model, the function that runs it and a one-line description."""

    name: str
    config_model: type[StepConfigBase]
    run: Callable[[list[Row], Any, StepContext], StepOutcome]
    description: str


def _kind(
    name: str, model: type[StepConfigBase], run: Callable[[list[Row], Any, StepContext], StepOutcome]
) -> StepKind:
    return StepKind(name, model, run, (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "))


#: step name -> its kind. The one place that says which steps exist (in the order the UI offers them).
STEP_KINDS: dict[str, StepKind] = {
    k.name: k
    for k in (
        _kind("clean", CleanConfig, run_clean),
        _kind("empty", EmptyConfig, run_empty),
        _kind("length", LengthConfig, run_length),
        _kind("repetition", RepetitionConfig, run_repetition),
        _kind("symbols", SymbolsConfig, run_symbols),
        _kind("refusal", RefusalConfig, run_refusal),
        _kind("language", LanguageConfig, run_language),
        _kind("pii", PiiConfig, run_pii),
        _kind("toxicity", ToxicityConfig, run_toxicity),
        _kind("dedupe", DedupeConfig, run_dedupe),
        _kind("quality", QualityConfig, run_quality),
    )
}

StepConfig = Annotated[
    CleanConfig
    | EmptyConfig
    | LengthConfig
    | RepetitionConfig
    | SymbolsConfig
    | RefusalConfig
    | LanguageConfig
    | PiiConfig
    | ToxicityConfig
    | DedupeConfig
    | QualityConfig,
    Field(discriminator="step"),
]


def run_step(rows: Sequence[Row], config: StepConfigBase, context: StepContext | None = None) -> StepOutcome:
    """Run one step (its kind found by ``config.step``) over ``rows``."""
    kind = STEP_KINDS.get(config.step)
    if kind is None:
        raise ValidationError(f"unknown step {config.step!r}; known steps: {', '.join(STEP_KINDS)}", param="step")
    return kind.run(list(rows), config, context or StepContext())
