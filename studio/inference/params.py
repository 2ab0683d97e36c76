"""The one schema for sampling parameters: ranges, defaults (from ``configs/defaults.yaml``) and help text.

The Playground form, the OpenAI-compatible API and alias files all validate through :class:`SamplingParams`, so a
range, a title or a help text is written here once; the titles name the fields in error sentences for the user.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from studio.errors import ValidationError
from studio.settings import generation_defaults
from studio.user_messages import user_sentence

MAX_STOP_SEQUENCES = 8
MAX_TOP_LOGPROBS = 20


def _default(name: str) -> Any:
    return generation_defaults().get(name)


class SamplingParams(BaseModel):
    """How to pick each next token. Temperature 0 means greedy decoding."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(
        default_factory=lambda: _default("temperature"),
        ge=0.0,
        le=2.0,
        title="Temperature",
        description="Randomness. 0 = always the most likely token (greedy); higher = more varied, less focused.",
    )
    top_p: float = Field(
        default_factory=lambda: _default("top_p"),
        gt=0.0,
        le=1.0,
        title="Top-p",
        description="Nucleus sampling: keep the smallest set of tokens whose probabilities add up to top_p.",
    )
    top_k: int = Field(
        default_factory=lambda: _default("top_k"),
        ge=0,
        le=1000,
        title="Top-k",
        description="Keep only the k most likely tokens before sampling (0 = no limit).",
    )
    max_tokens: int = Field(
        default_factory=lambda: _default("max_tokens"),
        ge=1,
        le=32768,
        title="Max tokens",
        description="Most tokens to generate for this reply.",
    )
    repetition_penalty: float = Field(
        default_factory=lambda: _default("repetition_penalty"),
        gt=0.0,
        le=2.0,
        title="Repetition penalty",
        description="Divides the score of tokens already seen (1.0 = off; 1.1-1.3 is mild).",
    )
    frequency_penalty: float = Field(
        default_factory=lambda: _default("frequency_penalty"),
        ge=-2.0,
        le=2.0,
        title="Frequency penalty",
        description="Lowers a token's score by this much per time it already appeared.",
    )
    presence_penalty: float = Field(
        default_factory=lambda: _default("presence_penalty"),
        ge=-2.0,
        le=2.0,
        title="Presence penalty",
        description="Lowers a token's score by this much once it has appeared at all.",
    )
    stop: list[str] = Field(
        default_factory=lambda: list(_default("stop")),
        max_length=MAX_STOP_SEQUENCES,
        title="Stop sequences",
        description="Generation ends when any of these strings appears; the string itself is not returned.",
    )
    seed: int | None = Field(
        default_factory=lambda: _default("seed"),
        ge=0,
        le=2**63 - 1,
        title="Seed",
        description="Fixes the random sampling so the same request gives the same reply.",
    )
    logprobs: bool = Field(
        False, title="Log probabilities", description="Return the log probability of each generated token."
    )
    top_logprobs: int = Field(
        0,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        title="Top log probabilities",
        description="How many most likely alternatives to return per token.",
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, str):
            return [v] if v else []
        return v

    @field_validator("stop", mode="after")
    @classmethod
    def _no_empty_stop(cls, v: list[str]) -> list[str]:
        if any(s == "" for s in v):
            raise ValueError("stop sequences must not be empty strings")
        return v

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def field_help(name: str, model: type[BaseModel] | None = None) -> str:
    """Help text of one field (of SamplingParams unless ``model`` says otherwise), with its range, for tooltips."""
    field = (model or SamplingParams).model_fields[name]
    text = field.description or ""
    lo = hi = None
    exclusive = False
    for meta in field.metadata:
        if getattr(meta, "ge", None) is not None:
            lo = meta.ge
        if getattr(meta, "gt", None) is not None:
            lo, exclusive = meta.gt, True
        if getattr(meta, "le", None) is not None:
            hi = meta.le
    if lo is not None and hi is not None and hi < 1e12:
        text += f" Range: above {lo} up to {hi}." if exclusive else f" Range {lo}–{hi}."
    return text


def field_range(name: str) -> tuple[float, float]:
    """(min, max) of a numeric sampling field, for sliders."""
    lo: float | None = None
    hi: float | None = None
    for meta in SamplingParams.model_fields[name].metadata:
        for attr in ("ge", "gt"):
            if getattr(meta, attr, None) is not None:
                lo = float(getattr(meta, attr))
        if getattr(meta, "le", None) is not None:
            hi = float(meta.le)
    if lo is None or hi is None:
        raise KeyError(f"{name} has no numeric range")
    return lo, hi


def make_sampling_params(**overrides: Any) -> SamplingParams:
    """Studio defaults (``configs/defaults.yaml``) overridden by the given non-None values.

    Raises :class:`studio.errors.ValidationError` naming the first bad field and its allowed range.
    """
    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return SamplingParams(**values)
    except PydanticValidationError as exc:
        raise validation_error_from_pydantic(exc, model=SamplingParams) from None


def validation_error_from_pydantic(
    exc: PydanticValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> ValidationError:
    """Turn pydantic's first error into a studio ValidationError.

    ``message`` and ``param`` are the technical detail the REST API answers with (the dotted field path, after
    ``prefix``, and pydantic's wording); ``user_message`` is the sentence the UI shows next to the field, built
    from ``model``'s field metadata (the schema that was validated) by :func:`studio.user_messages.user_sentence`.
    """
    err = exc.errors()[0]
    loc = str((err.get("ctx") or {}).get("param") or "") or ".".join(
        str(p) for p in err.get("loc", ()) if p != "__root__"
    )
    field = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "request"
    msg = err.get("msg", "invalid value")
    if err.get("type") == "extra_forbidden":
        msg = "unknown parameter (not supported)"
    given = err.get("input")
    shown = "" if err.get("type") in ("missing", "extra_forbidden", "lone_surrogate") else f" (got {given!r})"
    return ValidationError(
        f"Invalid value for '{field}': {msg}{shown}", param=field, user_message=user_sentence(err, model)
    )
