"""Reading uploads: JSONL, CSV, JSON; encodings, malformed lines, size limit."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from studio.datasets.parse import MAX_UPLOAD_BYTES, parse_file
from studio.errors import ValidationError

ROWS = [{"prompt": f"Question {i}?", "completion": f"Answer {i}."} for i in range(3)]


def test_jsonl_skips_blank_lines_and_keeps_line_numbers() -> None:
    text = json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n" + json.dumps(ROWS[2]) + "\n"
    parsed = parse_file(text.encode(), "data.jsonl")
    assert parsed.file_type == "jsonl"
    assert parsed.records == ROWS
    assert parsed.lines == [1, 3, 4]
    assert parsed.columns == ["prompt", "completion"]


def test_jsonl_with_bom_and_crlf() -> None:
    text = "\r\n".join(json.dumps(r) for r in ROWS)
    assert parse_file(b"\xef\xbb\xbf" + text.encode(), "d.jsonl").records == ROWS


def test_malformed_jsonl_line_is_named() -> None:
    text = json.dumps(ROWS[0]) + "\n" + '{"prompt": "x", "completion": }' + "\n" + json.dumps(ROWS[1]) + "\n[1, 2]\n"
    with pytest.raises(ValidationError) as err:
        parse_file(text.encode(), "d.jsonl")
    msg = err.value.message
    assert "line 2: malformed JSON" in msg
    assert "line 4: expected a JSON object" in msg
    assert msg.startswith("2 line(s)")


def test_csv_with_quoted_multiline_cells() -> None:
    text = 'question,answer\n"Hi, there?","Line one\nline two"\n\nWhy?,Because.\n'
    parsed = parse_file(text.encode(), "d.csv")
    assert parsed.file_type == "csv"
    assert parsed.records == [
        {"question": "Hi, there?", "answer": "Line one\nline two"},
        {"question": "Why?", "answer": "Because."},
    ]
    assert parsed.lines == [2, 5]


def test_csv_row_with_wrong_cell_count_is_named() -> None:
    with pytest.raises(ValidationError, match="line 3: 3 cells, the header has 2"):
        parse_file(b"prompt,completion\na,b\na,b,c\n", "d.csv")


def test_csv_duplicate_header() -> None:
    with pytest.raises(ValidationError, match="names a column twice: prompt"):
        parse_file(b"prompt,prompt\na,b\n", "d.csv")


@pytest.mark.parametrize(
    "payload",
    [json.dumps(ROWS), json.dumps({"data": ROWS}), "\n".join(json.dumps(r) for r in ROWS)],
    ids=["list", "data-key", "jsonl-named-json"],
)
def test_json_shapes(payload: str) -> None:
    assert parse_file(payload.encode(), "d.json").records == ROWS


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        ('{"rows": []}', "must be a list of objects"),
        ('[{"a": 1}, 2, "x"]', "items 2, 3"),
        ('[{"a": 1},', "malformed: Expecting value on line 1"),
    ],
)
def test_bad_json(payload: str, text: str) -> None:
    with pytest.raises(ValidationError, match=text):
        parse_file(payload.encode(), "d.json")


def test_type_sniffed_without_extension() -> None:
    assert parse_file(json.dumps(ROWS).encode()).file_type == "json"
    assert parse_file(json.dumps(ROWS[0]).encode()).file_type == "jsonl"
    assert parse_file(b"prompt,completion\na,b\n").file_type == "csv"


def test_unknown_extension_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"upload \.jsonl, \.csv or \.json"):
        parse_file(b"{}", "data.xlsx")


def test_latin1_file_is_refused_with_the_line() -> None:
    data = "prompt,completion\ncafé,ok\n".encode("latin-1")
    with pytest.raises(ValidationError) as err:
        parse_file(data, "d.csv")
    assert "not UTF-8" in err.value.message
    assert "byte 0xe9 on line 2" in err.value.message
    assert "save the file as UTF-8" in err.value.message


def test_utf16_file_is_refused() -> None:
    with pytest.raises(ValidationError, match="UTF-16"):
        parse_file(json.dumps(ROWS[0]).encode("utf-16"), "d.jsonl")


@pytest.mark.parametrize("payload", [b"", b"  \n\n"])
def test_empty_file(payload: bytes) -> None:
    with pytest.raises(ValidationError, match="empty"):
        parse_file(payload, "d.jsonl")


def test_200mb_file_is_refused_fast_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    subprocess.run(["truncate", "-s", "200M", str(big)], check=True)  # sparse: no 200 MB written
    start = time.perf_counter()
    with pytest.raises(ValidationError) as err:
        parse_file(big)
    assert time.perf_counter() - start < 0.5
    assert err.value.message.startswith("the file is 200 MB; uploads may be at most 100 MB")
    assert err.value.param == "file"


def test_bytes_over_the_limit_are_refused() -> None:
    with pytest.raises(ValidationError, match="at most 1 MB"):
        parse_file(b"x" * (1024 * 1024 + 1), "d.jsonl", max_bytes=1024 * 1024)
    assert MAX_UPLOAD_BYTES == 100 * 1024 * 1024


def test_missing_path() -> None:
    with pytest.raises(ValidationError, match="cannot read the uploaded file"):
        parse_file(Path("/nonexistent/file.jsonl"))
