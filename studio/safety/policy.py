"""The safety policy: one pydantic schema for ``configs/safety/*.yaml``, the Safety tab's form and the API.

A policy turns on four checks and says what each does when it fires:

- ``pii``: Presidio entities (names, e-mails, phone and card numbers, ...) → flag, mask, redact or block;
- ``toxicity``: a toxicity score (Detoxify from a local checkpoint, else alt-profanity-check) → flag or block;
- ``word_list``: whole-word matches against an editable file of offensive words → flag, mask or block;
- ``length``: character and token cutoffs for the prompt and the reply → block or truncate.

``streaming`` tunes how the reply is held back while it streams (see :class:`studio.safety.filter.OutputGuard`).
Every field carries its help text, range and default once, here; the UI shows the same text as its tooltip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from studio.errors import ValidationError
from studio.files import write_text_atomic
from studio.inference.params import validation_error_from_pydantic
from studio.settings import CONFIG_DIR

PROJECT_DIR = CONFIG_DIR.parent
SAFETY_CONFIG_DIR = CONFIG_DIR / "safety"
DEFAULT_POLICY_PATH = SAFETY_CONFIG_DIR / "default.yaml"

Direction = Literal["input", "output"]
PiiAction = Literal["flag", "mask", "redact", "block"]
ToxicityAction = Literal["flag", "block"]
WordListAction = Literal["flag", "mask", "block"]
LengthAction = Literal["block", "truncate"]
ScorerChoice = Literal["auto", "detoxify", "profanity-check"]

# The entity types the offline analyzer supports (Presidio 2.2 predefined recognizers plus the spaCy NER
# mapping), minus UK_NHS whose recognizer we drop because it matches US phone numbers. Kept as a constant so
# a policy validates without building the analyzer (seconds); a unit test checks it against the real analyzer.
SUPPORTED_PII_ENTITIES: tuple[str, ...] = (
    "AGE",
    "CREDIT_CARD",
    "CRYPTO",
    "DATE_TIME",
    "EMAIL",
    "EMAIL_ADDRESS",
    "IBAN_CODE",
    "ID",
    "IP_ADDRESS",
    "LOCATION",
    "MAC_ADDRESS",
    "MEDICAL_LICENSE",
    "NRP",
    "ORGANIZATION",
    "PERSON",
    "PHONE_NUMBER",
    "URL",
    "US_BANK_NUMBER",
    "US_DRIVER_LICENSE",
    "US_ITIN",
    "US_PASSPORT",
    "US_SSN",
    "UUID",
)

DEFAULT_PII_ENTITIES: tuple[str, ...] = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
)


def _both_directions() -> list[Direction]:
    return ["input", "output"]


class PiiConfig(BaseModel):
    """Personal data found by Presidio (offline spaCy model for names and places, patterns for the rest)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Look for personal data (PII) with Presidio.")
    entities: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PII_ENTITIES),
        description="Entity types to look for, from the analyzer's list (PERSON, EMAIL_ADDRESS, PHONE_NUMBER, "
        "CREDIT_CARD, LOCATION, ...). Names, places and organisations need the spaCy model; the others are patterns.",
    )
    score_threshold: float = Field(
        0.4, ge=0.0, le=1.0, description="Minimum Presidio confidence (0-1) for a finding to count."
    )
    action: PiiAction = Field(
        "mask",
        description="flag: record only; mask: replace with <ENTITY_TYPE>; redact: replace with ****; "
        "block: refuse the prompt / stop the reply.",
    )
    apply_to: list[Direction] = Field(
        default_factory=_both_directions, description="Check the prompt (input), the reply (output) or both."
    )

    @field_validator("entities")
    @classmethod
    def _known_entities(cls, v: list[str]) -> list[str]:
        unknown = [e for e in v if e not in SUPPORTED_PII_ENTITIES]
        if unknown:
            raise ValueError(
                f"unknown entity type(s) {', '.join(unknown)}; supported: {', '.join(SUPPORTED_PII_ENTITIES)}"
            )
        return list(dict.fromkeys(v))


class ToxicityConfig(BaseModel):
    """A toxicity score per text; Detoxify when a local checkpoint is configured, else alt-profanity-check."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Score toxicity of the prompt and/or the reply.")
    threshold: float = Field(0.8, ge=0.0, le=1.0, description="Score (0-1) at or above which the text counts as toxic.")
    action: ToxicityAction = Field(
        "flag", description="flag: record only; block: refuse the prompt / stop the reply before the toxic part."
    )
    scorer: ScorerChoice = Field(
        "auto",
        description="auto: Detoxify if detoxify_checkpoint is set, else profanity-check; detoxify: require the "
        "checkpoint; profanity-check: the bundled offline classifier (alt-profanity-check).",
    )
    detoxify_checkpoint: str | None = Field(
        None,
        description="Local Detoxify checkpoint under STUDIO_HOME, STUDIO_MODEL_DIRS or the Hugging Face cache "
        "(relative paths: from STUDIO_HOME): a .ckpt (tensors and plain data only, never unpickled) or .safetensors "
        "file with its Hugging Face config/tokenizer files in a folder of the same name (or the same folder), or a "
        "folder holding both. Never downloaded.",
    )
    apply_to: list[Direction] = Field(
        default_factory=_both_directions, description="Score the prompt (input), the reply (output) or both."
    )

    @model_validator(mode="after")
    def _checkpoint_for_detoxify(self) -> ToxicityConfig:
        if self.scorer == "detoxify" and not self.detoxify_checkpoint:
            raise ValueError("scorer 'detoxify' needs detoxify_checkpoint (a local checkpoint path)")
        return self


class WordListConfig(BaseModel):
    """Whole-word, case-insensitive matches against an editable list of offensive words and phrases."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Check for words from the offensive-word list.")
    file: str = Field(
        "configs/safety/offensive_words.txt",
        min_length=1,
        description="Word list file (.txt): one word or phrase per line, # starts a comment. Read from "
        "STUDIO_HOME/safety/ or the shipped configs/ (relative paths: from STUDIO_HOME, else the studio's folder); "
        "saved only under STUDIO_HOME/safety/, so the shipped list is read-only.",
    )
    action: WordListAction = Field(
        "mask",
        description="flag: record only; mask: replace the word with *; block: refuse the prompt / stop the reply.",
    )
    apply_to: list[Direction] = Field(
        default_factory=_both_directions, description="Check the prompt (input), the reply (output) or both."
    )

    def path(self) -> Path:
        """The word list file as an absolute path, unchecked (relative paths are taken from the studio's folder).
        Paths from users go through ``studio.safety.store.PolicyStore.word_list_path``, which confines them."""
        p = Path(self.file)
        return p if p.is_absolute() else PROJECT_DIR / p


class LengthConfig(BaseModel):
    """Cutoffs for the prompt and the reply; empty means no limit."""

    model_config = ConfigDict(extra="forbid")

    max_input_chars: int | None = Field(32_000, ge=1, le=10_000_000, description="Most characters in a prompt.")
    max_input_tokens: int | None = Field(
        None, ge=1, le=10_000_000, description="Most tokens in a prompt (the model's tokenizer when known)."
    )
    max_output_chars: int | None = Field(20_000, ge=1, le=10_000_000, description="Most characters in a reply.")
    max_output_tokens: int | None = Field(None, ge=1, le=10_000_000, description="Most tokens in a reply.")
    action: LengthAction = Field(
        "truncate",
        description="truncate: cut the prompt / end the reply at the limit; block: refuse the prompt / stop the "
        "reply and mark it blocked.",
    )


class StreamingConfig(BaseModel):
    """How much of a streaming reply is held back so that a rule sees whole words and entities."""

    model_config = ConfigDict(extra="forbid")

    hold_chars: int = Field(
        32,
        ge=0,
        le=1024,
        description="Characters kept back at the end of the streamed reply (a word is never shown before it ends; "
        "this covers entities with spaces, such as card and phone numbers or full names).",
    )
    release_chars: int = Field(
        128,
        ge=1,
        le=8192,
        description="When PII masking or toxicity blocking applies to the reply, text is analysed and shown in "
        "chunks of at least this many characters (fewer analyser calls: less overhead, coarser streaming).",
    )


class SafetyPolicyConfig(BaseModel):
    """A complete safety policy (``configs/safety/default.yaml`` is the default one)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("default", min_length=1, max_length=128, description="Policy name.")
    description: str = Field("", max_length=2000, description="What this policy is for.")
    pii: PiiConfig = Field(default_factory=PiiConfig, description="Personal data detection (Presidio).")
    toxicity: ToxicityConfig = Field(default_factory=ToxicityConfig, description="Toxicity scoring.")
    word_list: WordListConfig = Field(default_factory=WordListConfig, description="Offensive-word list.")
    length: LengthConfig = Field(default_factory=LengthConfig, description="Length cutoffs.")
    streaming: StreamingConfig = Field(default_factory=StreamingConfig, description="Streaming hold-back.")

    def to_yaml_dict(self) -> dict[str, Any]:
        """The policy as plain data, in field order (what :func:`save_policy` writes)."""
        return self.model_dump(mode="json")


def policy_from_dict(data: Any, source: str = "policy") -> SafetyPolicyConfig:
    """Validate plain data into a policy; the error names the source and the field (e.g. ``pii.entities``)."""
    if not isinstance(data, dict):
        raise ValidationError(f"{source}: a safety policy must be a mapping of sections (pii, toxicity, ...)")
    try:
        return SafetyPolicyConfig.model_validate(data)
    except PydanticValidationError as exc:
        err = validation_error_from_pydantic(exc, model=SafetyPolicyConfig)
        raise ValidationError(
            f"{source}: {err.message}", param=err.param, user_message=f"{source}: {err.user_message}"
        ) from None


def parse_policy_yaml(text: str, source: str = "<text>") -> SafetyPolicyConfig:
    """Parse a policy YAML document; YAML syntax errors name the line, schema errors the field."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        raise ValidationError(f"{where}: not valid YAML ({exc.problem})", param="yaml") from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"{source}: not valid YAML ({exc})", param="yaml") from None
    return policy_from_dict({} if data is None else data, source)


def load_policy(path: str | Path | None = None) -> SafetyPolicyConfig:
    """Read a policy file (default ``configs/safety/default.yaml``)."""
    target = Path(path) if path is not None else DEFAULT_POLICY_PATH
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationError(f"{target}: no such safety policy file", param="policy") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{target}: cannot read it ({exc})", param="policy") from None
    return parse_policy_yaml(text, str(target))


def dump_policy_yaml(policy: SafetyPolicyConfig) -> str:
    """The policy as YAML text, fields in schema order."""
    return yaml.safe_dump(policy.to_yaml_dict(), sort_keys=False, allow_unicode=True, default_flow_style=False)


def save_policy(policy: SafetyPolicyConfig, path: str | Path) -> Path:
    """Write ``policy`` to ``path`` as YAML, atomically: a reader never sees a half-written file."""
    return write_text_atomic(Path(path), dump_policy_yaml(policy))
