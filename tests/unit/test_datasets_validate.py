"""Validation reports: row numbers per format, duplicates, minimum size, reject/drop policy, length limits."""

from __future__ import annotations

from typing import Any

import pytest

from studio.datasets.formats import ColumnMapping
from studio.datasets.validate import apply_policy, validate_records
from studio.errors import ValidationError


def good(i: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}]}


# one table per format: 12 good rows with broken rows at known 1-based positions
CASES: dict[str, tuple[list[dict[str, Any]], dict[int, str]]] = {
    "messages": (
        [good(i) for i in range(12)]
        + [
            {"messages": [{"role": "user", "content": "no reply"}]},
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
            {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]},
        ],
        {13: "messages", 14: "messages[1].content", 15: "messages[0].role"},
    ),
    "prompt_completion": (
        [{"prompt": f"Q{i}", "completion": f"A{i}"} for i in range(6)]
        + [{"prompt": "Q", "completion": 5.5}, {"prompt": "Q"}]  # a number is read as text (CSV-like)
        + [{"prompt": f"Q{i}", "completion": f"A{i}"} for i in range(6, 12)]
        + [{"prompt": ["not", "messages"], "completion": "A"}],
        {8: "completion", 15: "prompt[0]"},
    ),
    "alpaca": (
        [{"instruction": f"Do {i}", "input": "", "output": f"Done {i}"} for i in range(12)]
        + [{"instruction": "", "input": "x", "output": "y"}, {"instruction": "Do", "input": 3, "output": None}],
        {13: "instruction", 14: "output"},
    ),
    "sharegpt": (
        [{"conversations": [{"from": "human", "value": f"Q{i}"}, {"from": "gpt", "value": f"A{i}"}]} for i in range(12)]
        + [{"conversations": [{"from": "gpt", "value": "A"}]}, {"conversations": {"from": "human"}}],
        {13: "conversations[0].from", 14: "conversations"},  # the key the file uses
    ),
    "preference": (
        [{"prompt": f"Q{i}", "chosen": f"Good {i}", "rejected": f"Bad {i}"} for i in range(12)]
        + [{"prompt": "Q", "chosen": "same", "rejected": "same"}, {"prompt": "Q", "chosen": "x"}],
        {13: "rejected", 14: "rejected"},
    ),
}


@pytest.mark.parametrize("fmt", list(CASES))
def test_report_per_format(fmt: str) -> None:
    records, broken = CASES[fmt]
    out = validate_records(records)
    report = out.report
    assert report.format == fmt
    assert report.total_rows == len(records)
    assert report.invalid_rows == len(broken)
    assert report.valid_rows == len(records) - len(broken)
    assert {e.row: e.field for e in report.errors} == broken
    assert report.unique_rows == len(out.examples) == len(records) - len(broken)
    assert all(str(e).startswith(f"row {e.row}") for e in report.errors)
    assert not report.ok
    dropped = apply_policy(out, "drop")
    assert dropped.report.dropped_rows == len(broken)
    with pytest.raises(ValidationError) as err:
        apply_policy(out, "reject")
    first = min(broken)
    assert f"row {first}" in err.value.message
    assert "nothing was imported" in err.value.message


def test_line_numbers_are_reported_where_they_differ() -> None:
    records = [good(i) for i in range(10)] + [{"messages": "x"}]
    report = validate_records(records, lines=[i * 2 for i in range(1, 12)]).report
    assert str(report.errors[0]).startswith("row 11 (line 22): ")


def test_duplicates_listed_and_imported_once() -> None:
    records = [good(i) for i in range(11)] + [good(2), good(5), good(2)]
    out = validate_records(records)
    groups = [(g.row, g.copies) for g in out.report.duplicates]
    assert groups == [(3, [12, 14]), (6, [13])]
    assert out.report.duplicate_rows == 3
    assert out.report.valid_rows == 14
    assert out.report.unique_rows == 11
    assert out.rows == list(range(1, 12))
    assert out.report.ok
    assert "3 duplicates left out" in out.report.summary()


def test_duplicates_compare_canonical_content() -> None:
    # the same example written in two formats is a duplicate once normalised
    records = [{"prompt": f"Q{i}", "completion": f"A{i}"} for i in range(10)] + [
        {"prompt": [{"role": "user", "content": "Q1"}], "completion": "A1"}
    ]
    out = validate_records(records, ColumnMapping(format="prompt_completion"))
    assert [(g.row, g.copies) for g in out.report.duplicates] == [(2, [11])]


@pytest.mark.parametrize("policy", ["reject", "drop"])
def test_minimum_ten_examples(policy: str) -> None:
    out = validate_records([good(i) for i in range(9)])
    with pytest.raises(ValidationError, match="9 usable example"):
        apply_policy(out, policy)  # type: ignore[arg-type]
    apply_policy(validate_records([good(i) for i in range(10)]), policy)  # type: ignore[arg-type]


def test_duplicates_do_not_count_towards_the_minimum() -> None:
    out = validate_records([good(i) for i in range(9)] + [good(0)] * 3)
    assert not out.report.enough
    with pytest.raises(ValidationError, match="3 duplicates"):
        apply_policy(out, "drop")


def test_drop_policy_still_needs_ten_valid() -> None:
    out = validate_records([good(i) for i in range(9)] + [{"messages": []}] * 5)
    with pytest.raises(ValidationError, match=r"9 usable example\(s\) \(5 invalid"):
        apply_policy(out, "drop")


def test_reject_message_lists_first_rows_and_counts_the_rest() -> None:
    out = validate_records([good(i) for i in range(10)] + [{"messages": []}] * 8)
    with pytest.raises(ValidationError) as err:
        apply_policy(out, "reject")
    msg = err.value.message
    assert msg.startswith("8 of 18 rows are invalid")
    assert "row 11: messages is an empty list" in msg
    assert "row 16" not in msg
    assert "and 3 more" in msg
    assert "on_invalid='drop'" in msg


def test_unknown_policy() -> None:
    with pytest.raises(ValidationError, match="on_invalid"):
        apply_policy(validate_records([good(i) for i in range(10)]), "ignore")  # type: ignore[arg-type]


class CharTokenizer:
    """A tokenizer whose chat template makes one token per character of content plus 2 per message."""

    name_or_path = "chars"

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> list[int]:
        assert kwargs.get("tokenize") is True
        return [0] * sum(len(m["content"]) + 2 for m in conversation)


def test_over_long_rows_with_a_tokenizer() -> None:
    records = [good(i) for i in range(10)] + [
        {"messages": [{"role": "user", "content": "x" * 50}, {"role": "assistant", "content": "y"}]}
    ]
    report = validate_records(records, tokenizer=CharTokenizer(), max_length=20).report
    assert [(e.row, e.field) for e in report.errors] == [(11, "length")]
    assert "55 tokens" in report.errors[0].message
    assert "max_length=20" in report.errors[0].message


def test_preference_length_counts_the_longer_reply() -> None:
    records = [{"prompt": "Q", "chosen": "a" * 30, "rejected": "b"}]
    report = validate_records(records, tokenizer=CharTokenizer(), max_length=30).report
    assert report.errors[0].message.startswith("35 tokens")


def test_max_length_needs_a_tokenizer() -> None:
    with pytest.raises(ValidationError, match="tokenizer"):
        validate_records([good(0)], max_length=10)
