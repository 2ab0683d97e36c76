"""Validate parsed rows before anything is imported: row-level errors, duplicates, token lengths, minimum size.

Row numbers are 1-based positions among the file's examples (for CSV the first data row is row 1; ``line``
gives the line in the file where it differs). Rules checked per row: the format's columns are present and of
the right type, roles are known and in order (optional system first, then user/assistant alternating), no
content is empty, a supervised example ends with an assistant reply, and — when a tokenizer and ``max_length``
are given — the example rendered with the model's chat template fits in ``max_length`` tokens.

Columns of the file that the mapping does not read are listed in ``ValidationReport.unused_columns`` (and in
its summary): nothing is left out without the report saying so.

Exact duplicates (the same canonical example) are not errors: the first copy is kept, later copies are listed
in ``ValidationReport.duplicates`` and never imported, whatever ``on_invalid`` says (a repeat adds no
information, only weight).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from studio.datasets.formats import (
    ColumnMapping,
    DatasetFormat,
    DatasetKind,
    RowProblem,
    conversation_of,
    detect_format,
    normalise,
    refuse_unsupported,
)
from studio.errors import ValidationError

MIN_EXAMPLES = 10  # the fewest valid examples an upload may have
MAX_LISTED_ERRORS = 1000  # errors kept in a report; counts stay exact
SHOWN_IN_MESSAGE = 5  # rows named in a rejection message
OnInvalid = Literal["reject", "drop"]


class ChatTokenizer(Protocol):
    """What is needed of a tokenizer: a Hugging Face tokenizer with a chat template satisfies it."""

    name_or_path: str

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def count_tokens(example: Mapping[str, Any], tokenizer: ChatTokenizer) -> int:
    """Tokens of a canonical example rendered with the tokenizer's chat template, its tool definitions included (a
    preference pair counts its longer reply)."""
    if "chosen" not in example:
        return _template_length(tokenizer, conversation_of(example), example.get("tools"))
    return max(
        _template_length(tokenizer, conversation_of(example, "chosen")),
        _template_length(tokenizer, conversation_of(example, "rejected")),
    )


def _template_length(tokenizer: ChatTokenizer, messages: list[dict[str, Any]], tools: Any = None) -> int:
    kwargs: dict[str, Any] = {"tools": tools} if tools else {}
    out = tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
    if isinstance(out, Mapping) or hasattr(out, "input_ids"):  # transformers 5 may return a BatchEncoding
        out = out["input_ids"]
    if out and isinstance(out[0], list):
        out = out[0]
    return len(out)


class RowError(BaseModel):
    """One problem with one row."""

    row: int = Field(description="1-based position of the example in the file.")
    line: int | None = Field(default=None, description="Line of the file where the row starts, when known.")
    field: str = Field(description="The column or path that is wrong, e.g. messages[2].content.")
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" + (f" (line {self.line})" if self.line is not None and self.line != self.row else "")
        return f"{where}: {self.message}"


class DuplicateGroup(BaseModel):
    """Rows holding the same example: ``row`` is kept, ``copies`` are not imported."""

    row: int
    copies: list[int]


class ValidationReport(BaseModel):
    """What an upload holds and what is wrong with it, shown before anything is accepted."""

    format: DatasetFormat
    kind: DatasetKind
    mapping: ColumnMapping
    columns: list[str] = Field(default_factory=list, description="Columns found in the file.")
    unused_columns: list[str] = Field(
        default_factory=list,
        description="Columns of the file the mapping does not read: they are not imported (rename or map them).",
    )
    total_rows: int
    valid_rows: int = Field(description="Rows without errors, duplicates included.")
    invalid_rows: int
    unique_rows: int = Field(description="Valid rows after dropping later copies of duplicates: what is imported.")
    errors: list[RowError] = Field(default_factory=list, description=f"At most {MAX_LISTED_ERRORS} errors.")
    duplicates: list[DuplicateGroup] = Field(default_factory=list)
    dropped_rows: int = Field(default=0, description="Invalid rows left out by an import with on_invalid='drop'.")
    max_length: int | None = None
    min_examples: int = MIN_EXAMPLES

    @property
    def duplicate_rows(self) -> int:
        """How many rows are later copies of an earlier row."""
        return sum(len(g.copies) for g in self.duplicates)

    @property
    def enough(self) -> bool:
        """Whether enough unique valid examples remain to import."""
        return self.unique_rows >= self.min_examples

    @property
    def ok(self) -> bool:
        """No invalid rows and enough examples: importable under either policy."""
        return self.invalid_rows == 0 and self.enough

    def invalid_row_numbers(self) -> list[int]:
        """Sorted numbers of the invalid rows listed in ``errors``."""
        return sorted({e.row for e in self.errors})

    def summary(self) -> str:
        """One line for the UI, e.g. ``48 valid, 2 invalid (rows 4, 17), 1 duplicate``."""
        parts = [f"{self.total_rows} rows: {self.valid_rows} valid"]
        if self.invalid_rows:
            rows = self.invalid_row_numbers()
            shown = ", ".join(str(r) for r in rows[:10]) + (" ..." if len(rows) > 10 else "")
            parts.append(f"{self.invalid_rows} invalid (rows {shown})")
        if self.duplicates:
            parts.append(f"{self.duplicate_rows} duplicate{'s' if self.duplicate_rows != 1 else ''} left out")
        if self.dropped_rows:
            parts.append(f"{self.dropped_rows} invalid dropped")
        if not self.enough:
            parts.append(f"needs at least {self.min_examples} valid examples")
        if self.unused_columns:
            parts.append(
                f"column{'s' if len(self.unused_columns) != 1 else ''} not used: {', '.join(self.unused_columns)}"
            )
        return ", ".join(parts)


@dataclass
class ValidatedRows:
    """The outcome of validation: the unique valid examples (canonical) and the report."""

    examples: list[dict[str, Any]]
    rows: list[int]  # the row number of each example
    report: ValidationReport


def canonical_json(example: Mapping[str, Any]) -> str:
    """The one serialisation of an example used for files, hashes and duplicate checks.

    The example's keys and each message's keys are sorted; what lies deeper — tool definitions, a tool call's
    arguments — keeps the file's order, since a chat template writes it into the training text in that order
    (sorting a tool's JSON schema would train on a text the model never sees at inference)."""
    shallow: dict[str, Any] = {}
    for key in sorted(example):
        value = example[key]
        if isinstance(value, list) and key in ("messages", "prompt"):
            value = [{k: m[k] for k in sorted(m)} if isinstance(m, Mapping) else m for m in value]
        shallow[key] = value
    return json.dumps(shallow, ensure_ascii=False, separators=(",", ":"))


def validate_records(
    records: Sequence[Mapping[str, Any]],
    mapping: ColumnMapping | None = None,
    *,
    lines: Sequence[int] | None = None,
    columns: Sequence[str] = (),
    tokenizer: ChatTokenizer | None = None,
    max_length: int | None = None,
    min_examples: int = MIN_EXAMPLES,
) -> ValidatedRows:
    """Normalise and check every row. ``mapping`` None detects the format; ``max_length`` needs a tokenizer.

    Never raises for bad rows (they go into the report); raises ``ValidationError`` only when the format cannot
    be detected or ``max_length`` is given without a tokenizer.
    """
    if max_length is not None and tokenizer is None:
        raise ValidationError("max_length needs the base model's tokenizer to count tokens", param="max_length")
    if max_length is not None and max_length < 1:
        raise ValidationError(f"max_length must be a positive number of tokens, not {max_length}", param="max_length")
    if mapping is None:
        mapping = detect_format(records)
    else:
        refuse_unsupported(records)
    used = mapping.used_columns()
    found = list(columns) or list(dict.fromkeys(str(k) for r in records[:1000] for k in r))
    errors: list[RowError] = []
    invalid = 0
    valid = 0
    seen: dict[str, int] = {}
    groups: dict[int, DuplicateGroup] = {}
    examples: list[dict[str, Any]] = []
    rows: list[int] = []
    for index, record in enumerate(records):
        row = index + 1
        line = lines[index] if lines is not None else None
        problem: RowError | None = None
        try:
            example = normalise(record, mapping)
        except RowProblem as exc:
            problem = RowError(row=row, line=line, field=exc.field, message=exc.message)
        else:
            if tokenizer is not None and max_length is not None:
                n = count_tokens(example, tokenizer)
                if n > max_length:
                    problem = RowError(
                        row=row,
                        line=line,
                        field="length",
                        message=f"{n} tokens with the model's chat template; the limit is max_length={max_length}",
                    )
        if problem is not None:
            invalid += 1
            if len(errors) < MAX_LISTED_ERRORS:
                errors.append(problem)
            continue
        valid += 1
        key = canonical_json(example)
        first = seen.get(key)
        if first is not None:
            groups.setdefault(first, DuplicateGroup(row=first, copies=[])).copies.append(row)
            continue
        seen[key] = row
        examples.append(example)
        rows.append(row)
    report = ValidationReport(
        format=mapping.format,
        kind=mapping.kind,
        mapping=mapping,
        columns=list(columns),
        unused_columns=[c for c in found if c not in used],
        total_rows=len(records),
        valid_rows=valid,
        invalid_rows=invalid,
        unique_rows=len(examples),
        errors=errors,
        duplicates=sorted(groups.values(), key=lambda g: g.row),
        max_length=max_length,
        min_examples=min_examples,
    )
    return ValidatedRows(examples, rows, report)


def apply_policy(validated: ValidatedRows, on_invalid: OnInvalid) -> ValidatedRows:
    """Decide whether the rows may be imported.

    ``reject``: any invalid row refuses the whole upload (``ValidationError`` naming the first rows);
    ``drop``: invalid rows are left out and counted in ``report.dropped_rows``. Either way, fewer than
    ``min_examples`` unique valid examples is a ``ValidationError``.
    """
    if on_invalid not in ("reject", "drop"):
        raise ValidationError(f"on_invalid must be 'reject' or 'drop', not {on_invalid!r}", param="on_invalid")
    report = validated.report
    if report.invalid_rows and on_invalid == "reject":
        shown = "; ".join(str(e) for e in report.errors[:SHOWN_IN_MESSAGE])
        more = report.invalid_rows - min(SHOWN_IN_MESSAGE, len(report.errors))
        raise ValidationError(
            f"{report.invalid_rows} of {report.total_rows} rows are invalid, so nothing was imported — {shown}"
            + (f"; and {more} more" if more > 0 else "")
            + ". Fix these rows, or import with on_invalid='drop' to leave them out",
            param="file",
        )
    if not report.enough:
        why = f" ({report.invalid_rows} invalid, {report.duplicate_rows} duplicates)" if report.unique_rows else ""
        raise ValidationError(
            f"the upload has {report.unique_rows} usable example(s){why}; at least {report.min_examples} "
            "labelled examples are needed",
            param="file",
        )
    if on_invalid == "drop":
        report = report.model_copy(update={"dropped_rows": report.invalid_rows})
    return ValidatedRows(validated.examples, validated.rows, report)
