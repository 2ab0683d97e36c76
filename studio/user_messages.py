"""Pydantic's validation errors in the user's words, built from the schema's own field metadata.

One pydantic error becomes one sentence a person can act on: ``Temperature must be between 0 and 2 (you entered
5)`` rather than ``Input should be less than or equal to 2 (got 5.0)`` under ``request_params.temperature``.
Everything in the sentence comes from what the schema already says about the field, so a range or a choice is
written once, in the model:

- its name: the field's ``title``; else its own name (an identifier such as ``n_ctx`` stays as the form labels it),
  or for a field inside a section its path as a config file spells it (``toxicity.threshold``);
- its range: the ``ge`` / ``gt`` / ``le`` / ``lt`` bounds (an upper bound nobody types, >= 1e12, is left out);
- its choices: the ``Literal`` values of its annotation;
- its type: whole number, number, true or false, text, list, group of settings.

:func:`studio.inference.params.validation_error_from_pydantic` puts the sentence into
``ValidationError.user_message`` (what the UI shows next to the field) and keeps pydantic's wording and the dotted
field path in ``message`` / ``param`` (what the REST API answers). Nothing here imports gradio.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

#: bounds at or above this are technical limits (2**63 - 1), not something to tell a person
_UNSPOKEN_BOUND = 1e12
_SHOWN_CHARS = 40
_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})
_TYPE_NAMES = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a group of settings (name: value)",
    "model_type": "a group of settings (name: value)",
    "model_attributes_type": "a group of settings (name: value)",
}


@dataclass(frozen=True)
class _Located:
    name: str  # the field's name, or the unknown key's; "" for the object as a whole
    info: FieldInfo | None  # the field's schema entry; None where the location leaves the known schema
    owner: type[BaseModel] | None  # the model in which ``name`` was looked up
    path: tuple[str, ...] = ()  # the field names from the top model down to this field


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (through ``X | None``, ``list[X]``, ``dict[str, X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _locate(model: type[BaseModel] | None, loc: Sequence[int | str]) -> _Located:
    """Follow an error's location through the schema: list indexes and union branch tags are skipped."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    owner, found = model, _Located(parts[-1] if parts else "", None, model)
    path: tuple[str, ...] = ()
    for i, part in enumerate(parts):
        if owner is not None and part in owner.model_fields:
            info = owner.model_fields[part]
            path = (*path, part)
            found = _Located(part, info, owner, path)
            owner = _nested_model(info.annotation)
        elif i == len(parts) - 1 and owner is not None:
            found = _Located(part, None, owner, path)  # a key the schema does not have (extra="forbid")
    return found


def _label(located: _Located) -> str:
    if located.info is not None and located.info.title:
        return located.info.title
    if len(located.path) > 1:  # "threshold" alone is ambiguous in a policy with several sections
        return ".".join(located.path)
    name = located.name or "the value"
    return name if "_" in name else name[:1].upper() + name[1:]


def field_label(model: type[BaseModel], loc: str | Sequence[int | str]) -> str:
    """What to call a field in a sentence: its ``title``, else its name (``"request_params.temperature"`` or a
    location tuple, followed through nested models)."""
    return _label(_locate(model, loc.split(".") if isinstance(loc, str) else loc))


def number_text(value: float | int) -> str:
    """``5.0`` → ``5``, ``0.25`` → ``0.25``: numbers as a person would write them."""
    if isinstance(value, float) and value.is_integer() and abs(value) < _UNSPOKEN_BOUND:
        return str(int(value))
    return str(value)


def shown(value: Any) -> str:
    """A value the user entered, as it goes into ``(you entered …)``: numbers bare, text quoted and shortened."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number_text(value)
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 1] + "…"
    return f"'{text}'" if isinstance(value, str) else text


def _bounds(info: FieldInfo | None, ctx: Mapping[str, Any]) -> dict[str, float]:
    found: dict[str, float] = {}
    for meta in info.metadata if info is not None else ():
        for key in ("ge", "gt", "le", "lt"):
            bound = getattr(meta, key, None)
            if isinstance(bound, int | float):
                found[key] = bound
    if not found:  # no schema at hand: the one bound pydantic reports
        found = {k: v for k, v in ctx.items() if k in ("ge", "gt", "le", "lt") and isinstance(v, int | float)}
    return found


def range_text(bounds: Mapping[str, float]) -> str:
    """``{"ge": 0, "le": 2}`` → ``between 0 and 2``; one-sided and exclusive bounds say so."""
    low = next(((k, v) for k, v in bounds.items() if k in ("ge", "gt")), None)
    high = next(((k, v) for k, v in bounds.items() if k in ("le", "lt") and abs(v) < _UNSPOKEN_BOUND), None)
    if low and high and low[0] == "ge" and high[0] == "le":
        return f"between {number_text(low[1])} and {number_text(high[1])}"
    words = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
    parts = [f"{words[bound[0]]} {number_text(bound[1])}" for bound in (low, high) if bound is not None]
    return " and ".join(parts) or "in range"


def _literal_choices(annotation: Any) -> list[Any]:
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    if get_origin(annotation) in (Union, types.UnionType):
        return [c for arg in get_args(annotation) for c in _literal_choices(arg)]
    return []


def _unknown_key(name: str, owner: type[BaseModel] | None) -> str:
    known = list(owner.model_fields) if owner is not None else []
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    if close:
        return f"Unknown setting '{name}'; did you mean '{close[0]}'?"
    return f"Unknown setting '{name}'" + (f"; the settings are: {', '.join(known)}" if known else "")


def user_sentence(error: ErrorDetails, model: type[BaseModel] | None = None) -> str:
    """One pydantic error (an item of ``exc.errors()``) as a sentence for the user.

    ``model`` is the schema that was validated: with it the sentence uses the field's title, full range and
    choices; without it, the field's name and what the error itself reports.
    """
    kind = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    located = _locate(model, error["loc"])
    label = _label(located)
    entered = f" (you entered {shown(error['input'])})"
    if kind == "missing":
        return f"{label} is required"
    if kind == "extra_forbidden":
        return _unknown_key(located.name, located.owner)
    if kind in _RANGE_ERRORS:
        return f"{label} must be {range_text(_bounds(located.info, ctx))}{entered}"
    if kind in _TYPE_NAMES:
        return f"{label} must be {_TYPE_NAMES[kind]}{entered}"
    if kind in ("literal_error", "enum"):
        choices = _literal_choices(located.info.annotation) if located.info is not None else []
        listed = ", ".join(str(c) for c in choices) if choices else str(ctx.get("expected", ""))
        return f"{label} must be one of {listed}{entered}"
    if kind == "string_too_short":
        least = ctx.get("min_length", 1)
        return f"{label} must not be empty" if least == 1 else f"{label} needs at least {least} characters"
    if kind == "string_too_long":
        return f"{label} can be at most {ctx.get('max_length')} characters long"
    if kind == "too_short":
        return f"{label} needs at least {ctx.get('min_length')} items (you gave {ctx.get('actual_length')})"
    if kind == "too_long":
        return f"{label} can hold at most {ctx.get('max_length')} items (you gave {ctx.get('actual_length')})"
    reason = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        reason = reason.removeprefix(prefix)
    if reason.lower().startswith(label.lower() + " "):  # the validator already named the field
        return label + reason[len(label) :]
    return f"{label}: {reason}"
