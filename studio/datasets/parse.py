"""Read an uploaded file (JSONL, CSV or JSON) into rows, with errors a user can act on.

* JSONL / NDJSON: one JSON object per line; blank lines are skipped.
* CSV: a header row, then one example per row (cells are text; a cell may hold a JSON list of messages).
* JSON: a list of objects, or an object ``{"data": [...]}``.

The file must be UTF-8 (a byte-order mark is allowed) and at most ``MAX_UPLOAD_BYTES``; a larger file given as a
path is refused from its size alone, before anything is read.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from studio.errors import ValidationError

FileType = Literal["jsonl", "csv", "json"]
MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # 100 MB, as the upload page promises
MAX_REPORTED = 5  # malformed lines named in one error message
EXTENSIONS: dict[str, FileType] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
    ".csv": "csv",
    ".json": "json",
}


@dataclass
class ParsedFile:
    """The rows of a file. ``lines[i]`` is the line where row ``i + 1`` starts (for messages)."""

    file_type: FileType
    records: list[dict[str, Any]]
    lines: list[int]
    size_bytes: int
    columns: list[str] = field(default_factory=list)


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB" if n >= 1024 * 1024 else f"{n} bytes"


def _too_big(size: int, limit: int) -> ValidationError:
    return ValidationError(
        f"the file is {_mb(size)}; uploads may be at most {_mb(limit)} — split it or drop rows", param="file"
    )


def file_type_of(filename: str | None, text: str) -> FileType:
    """The file's type from its extension, else from its first character (``[`` → JSON, ``{`` → JSONL)."""
    if filename:
        suffix = Path(filename).suffix.lower()
        if suffix in EXTENSIONS:
            return EXTENSIONS[suffix]
        if suffix and suffix not in (".txt",):
            raise ValidationError(
                f"{filename!r} is not a dataset file this studio reads; upload .jsonl, .csv or .json", param="file"
            )
    head = text.lstrip()[:1]
    if head == "[":
        return "json"
    if head == "{":
        return "jsonl"
    return "csv"


def decode(data: bytes) -> str:
    """UTF-8 bytes (BOM allowed) → text; anything else is a ``ValidationError`` naming the first bad byte."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValidationError("the file is UTF-16 encoded; save it as UTF-8 and upload it again", param="file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValidationError(
            f"the file is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} (offset {exc.start}) cannot be "
            "decoded; save the file as UTF-8 and upload it again",
            param="file",
        ) from None


def read_bytes(data: bytes | Path, max_bytes: int = MAX_UPLOAD_BYTES) -> bytes:
    """The upload's bytes; a path larger than ``max_bytes`` is refused from its size without reading it."""
    if isinstance(data, Path):
        try:
            size = data.stat().st_size
        except OSError as exc:
            raise ValidationError(f"cannot read the uploaded file {data}: {exc.strerror}", param="file") from None
        if size > max_bytes:
            raise _too_big(size, max_bytes)
        with open(data, "rb") as fh:
            raw = fh.read(max_bytes + 1)  # a file that grew meanwhile is still capped
    else:
        raw = bytes(data)
    if len(raw) > max_bytes:
        raise _too_big(len(raw), max_bytes)
    return raw


def parse_file(data: bytes | Path, filename: str | None = None, max_bytes: int = MAX_UPLOAD_BYTES) -> ParsedFile:
    """Read an upload (bytes or a path) into rows. ``filename`` (or the path's name) picks the parser.

    Raises ``ValidationError`` for an oversize file, a non-UTF-8 file, malformed JSON (naming the lines), a CSV
    without a header, or rows that are not objects.
    """
    if filename is None and isinstance(data, Path):
        filename = data.name
    raw = read_bytes(data, max_bytes)
    text = decode(raw)
    if not text.strip():
        raise ValidationError("the file is empty; it needs at least one labelled example", param="file")
    kind = file_type_of(filename, text)
    if kind == "jsonl":
        records, lines = _parse_jsonl(text)
    elif kind == "csv":
        records, lines = _parse_csv(text)
    else:
        records, lines = _parse_json(text)
    columns: dict[str, None] = {}
    for record in records[:1000]:
        columns.update(dict.fromkeys(str(k) for k in record))
    return ParsedFile(kind, records, lines, len(raw), list(columns))


def _json_error(exc: json.JSONDecodeError) -> str:
    return f"{exc.msg} at column {exc.colno}"


def _parse_jsonl(text: str) -> tuple[list[dict[str, Any]], list[int]]:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    problems: list[str] = []
    bad = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            bad += 1
            if len(problems) < MAX_REPORTED:
                problems.append(f"line {number}: malformed JSON ({_json_error(exc)})")
            continue
        if not isinstance(value, dict):
            bad += 1
            if len(problems) < MAX_REPORTED:
                problems.append(f"line {number}: expected a JSON object {{...}}, got {type(value).__name__}")
            continue
        records.append(value)
        lines.append(number)
    if problems:
        more = f"; and {bad - len(problems)} more" if bad > len(problems) else ""
        raise ValidationError(
            f"{bad} line(s) of the JSONL file are not JSON objects — {'; '.join(problems)}{more}. "
            'Each line must hold one JSON object, e.g. {"messages": [...]}',
            param="file",
        )
    return records, lines


def _parse_json(text: str) -> tuple[list[dict[str, Any]], list[int]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several objects one after another: a JSONL file named .json
            return _parse_jsonl(text)
        raise ValidationError(
            f"the JSON file is malformed: {exc.msg} on line {exc.lineno}, column {exc.colno}", param="file"
        ) from None
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    if not isinstance(value, list):
        raise ValidationError(
            'a JSON dataset must be a list of objects [{...}, ...] or {"data": [{...}, ...]}, '
            f"not {type(value).__name__}",
            param="file",
        )
    bad = [i + 1 for i, item in enumerate(value) if not isinstance(item, dict)]
    if bad:
        shown = ", ".join(str(i) for i in bad[:MAX_REPORTED]) + (" ..." if len(bad) > MAX_REPORTED else "")
        raise ValidationError(
            f"{len(bad)} item(s) of the JSON list are not objects (items {shown}); each example must be an object",
            param="file",
        )
    # a JSON list has no meaningful line per item; row numbers are item numbers
    return list(value), list(range(1, len(value) + 1))


def _parse_csv(text: str) -> tuple[list[dict[str, Any]], list[int]]:
    csv.field_size_limit(MAX_UPLOAD_BYTES)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ValidationError("the CSV file is empty", param="file") from None
    except csv.Error as exc:
        raise ValidationError(f"the CSV header (line 1) is malformed: {exc}", param="file") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise ValidationError(
            "the first line of a CSV file must name its columns (e.g. prompt,completion)", param="file"
        )
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise ValidationError(f"the CSV header names a column twice: {', '.join(dupes)}", param="file")
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    problems: list[str] = []
    bad = 0
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ValidationError(f"the CSV file is malformed on line {reader.line_num}: {exc}", param="file") from None
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            bad += 1
            if len(problems) < MAX_REPORTED:
                problems.append(f"line {start}: {len(row)} cells, the header has {len(header)}")
            continue
        records.append({name: cell for name, cell in zip(header, row, strict=True) if name})
        lines.append(start)
    if problems:
        more = f"; and {bad - len(problems)} more" if bad > len(problems) else ""
        raise ValidationError(
            f"{bad} CSV row(s) do not match the header — {'; '.join(problems)}{more}. "
            "Quote cells that contain commas or line breaks",
            param="file",
        )
    return records, lines
