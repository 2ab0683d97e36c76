"""Format detection and normalisation, table-driven per format, with broken rows."""

from __future__ import annotations

from typing import Any

import pytest

from studio.datasets.formats import (
    ColumnMapping,
    RowProblem,
    check_canonical,
    detect_format,
    normalise,
    to_trl_record,
)
from studio.errors import ValidationError

U = {"role": "user", "content": "Hi?"}
A = {"role": "assistant", "content": "Hello."}
S = {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(
    ("record", "fmt", "columns"),
    [
        ({"messages": [U, A]}, "messages", {"messages": "messages"}),
        (
            {"prompt": "Hi?", "completion": "Hello."},
            "prompt_completion",
            {"prompt": "prompt", "completion": "completion"},
        ),
        ({"question": "Hi?", "answer": "Hello."}, "prompt_completion", {"prompt": "question", "completion": "answer"}),
        ({"input": "Hi?", "output": "Hello."}, "prompt_completion", {"prompt": "input", "completion": "output"}),
        (
            {"instruction": "Say hi", "input": "", "output": "Hello."},
            "alpaca",
            {"instruction": "instruction", "input": "input", "output": "output"},
        ),
        ({"conversations": [{"from": "human", "value": "Hi?"}]}, "sharegpt", {"conversations": "conversations"}),
        (
            {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."},
            "preference",
            {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
        ),
        (
            {"prompt": "Hi?", "completion": "Hello.", "system": "Be brief."},
            "prompt_completion",
            {"prompt": "prompt", "completion": "completion", "system": "system"},
        ),
    ],
)
def test_detect_format(record: dict[str, Any], fmt: str, columns: dict[str, str]) -> None:
    mapping = detect_format([record])
    assert mapping.format == fmt
    assert mapping.columns() == columns
    assert mapping.kind == ("preference" if fmt == "preference" else "supervised")


def test_detect_uses_the_majority_of_rows() -> None:
    rows: list[dict[str, Any]] = [{"messages": [U, A]}] * 3 + [{"prompt": "a", "completion": "b"}]
    assert detect_format(rows).format == "messages"


def test_detect_unknown_columns_names_them_and_the_formats() -> None:
    with pytest.raises(ValidationError) as err:
        detect_format([{"foo": 1, "bar": 2}])
    assert "bar, foo" in err.value.message
    assert "prompt + completion" in err.value.message
    assert err.value.param == "mapping"


def test_detect_empty_file() -> None:
    with pytest.raises(ValidationError, match="no rows"):
        detect_format([])


def test_mapping_forbids_unknown_keys() -> None:
    with pytest.raises(Exception, match="extra"):
        ColumnMapping.model_validate({"format": "messages", "colour": "x"})
    with pytest.raises(Exception, match="format"):
        ColumnMapping.model_validate({"format": "csv"})


def test_mapping_describe() -> None:
    m = ColumnMapping(format="prompt_completion", prompt="question", completion="answer")
    assert m.describe() == "Prompt / completion: prompt ← question, completion ← answer"


# -- normalisation: every format reaches the same canonical form ------------------------------------------------
SUPERVISED = {"messages": [S, U, A]}


@pytest.mark.parametrize(
    ("record", "mapping"),
    [
        ({"messages": [S, U, A]}, ColumnMapping(format="messages")),
        ({"messages": [U, A], "sys": "Be brief."}, ColumnMapping(format="messages", system="sys")),
        (
            {"question": "Hi?", "answer": "Hello.", "system": "Be brief."},
            ColumnMapping(format="prompt_completion", prompt="question", completion="answer", system="system"),
        ),
        ({"prompt": [S, U], "completion": "Hello."}, ColumnMapping(format="prompt_completion")),
        (
            {"instruction": "Hi?", "output": "Hello.", "system": "Be brief."},
            ColumnMapping(format="alpaca", system="system"),
        ),
        (
            {
                "conversations": [
                    {"from": "system", "value": "Be brief."},
                    {"from": "human", "value": "Hi?"},
                    {"from": "gpt", "value": "Hello."},
                ]
            },
            ColumnMapping(format="sharegpt"),
        ),
        # a CSV cell holding a JSON list of messages
        (
            {
                "messages": '[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi?"},'
                '{"role":"assistant","content":"Hello."}]'
            },
            ColumnMapping(format="messages"),
        ),
    ],
)
def test_supervised_normalisation(record: dict[str, Any], mapping: ColumnMapping) -> None:
    assert normalise(record, mapping) == SUPERVISED


def test_alpaca_joins_instruction_and_input() -> None:
    # LLaMA-Factory's data/README.md: "the human prompt would be `instruction\ninput`"
    out = normalise(
        {"instruction": "Translate to French", "input": "cat", "output": "chat"}, ColumnMapping(format="alpaca")
    )
    assert out == {
        "messages": [
            {"role": "user", "content": "Translate to French\ncat"},
            {"role": "assistant", "content": "chat"},
        ]
    }


PREF = {"prompt": [U], "chosen": "Hello.", "rejected": "Go away."}


@pytest.mark.parametrize(
    "record",
    [
        {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."},
        {"prompt": [U], "chosen": [A], "rejected": [{"role": "assistant", "content": "Go away."}]},
        # TRL's implicit prompt: the shared conversation before the replies
        {"chosen": [U, A], "rejected": [U, {"role": "assistant", "content": "Go away."}]},
        {"prompt": "Hi?", "chosen": [U, A], "rejected": "Go away."},
    ],
)
def test_preference_normalisation(record: dict[str, Any]) -> None:
    assert normalise(record, ColumnMapping(format="preference")) == PREF


def test_preference_with_system_column() -> None:
    out = normalise(
        {"prompt": "Hi?", "chosen": "Hello.", "rejected": "No.", "sys": "Be brief."},
        ColumnMapping(format="preference", system="sys"),
    )
    assert out["prompt"] == [S, U]


# -- broken rows: each is a RowProblem naming the field ---------------------------------------------------------
@pytest.mark.parametrize(
    ("record", "mapping", "field", "text"),
    [
        ({"messages": [U]}, "messages", "messages", "no assistant reply"),
        ({"messages": [A]}, "messages", "messages[0].role", "'user' one belongs"),
        ({"messages": [U, {"role": "assistant", "content": "  "}]}, "messages", "messages[1].content", "is empty"),
        ({"messages": [U, {"role": "bot", "content": "x"}]}, "messages", "messages[1].role", "use one of system, user"),
        ({"messages": [U, {"role": "assistant"}]}, "messages", "messages[1].content", "has no 'content'"),
        ({"messages": [U, {"role": "assistant", "content": ["x"]}]}, "messages", "messages[1].content", "must be text"),
        ({"messages": "hello"}, "messages", "messages", "must be a list"),
        ({"messages": []}, "messages", "messages", "empty list"),
        ({"messages": [S]}, "messages", "messages", "only a system message"),
        ({"messages": [U, S, A]}, "messages", "messages[1].role", "only the first may be system"),
        ({"messages": [U, U, A]}, "messages", "messages[1].role", "alternate"),
        ({"messages": [U, A, "oops"]}, "messages", "messages[2]", "must be an object"),
        ({"other": 1}, "messages", "messages", "missing"),
        ({"prompt": "Hi?"}, "prompt_completion", "completion", "missing"),
        ({"prompt": "", "completion": "x"}, "prompt_completion", "prompt", "is empty"),
        ({"prompt": "Hi?", "completion": None}, "prompt_completion", "completion", "missing"),
        ({"prompt": "Hi?", "completion": {"a": 1}}, "prompt_completion", "completion", "must be text, not an object"),
        ({"prompt": "Hi?", "completion": True}, "prompt_completion", "completion", "must be text"),
        ({"instruction": "Do", "output": ""}, "alpaca", "output", "is empty"),
        ({"input": "x", "output": "y"}, "alpaca", "instruction", "missing"),
        ({"conversations": [{"from": "human", "value": "Hi"}]}, "sharegpt", "conversations", "no assistant reply"),
        ({"conversations": [{"from": "robot", "value": "Hi"}]}, "sharegpt", "conversations[0].from", "use one of"),
        ({"conversations": [{"from": "human", "text": "Hi"}]}, "sharegpt", "conversations[0].value", "no 'value'"),
        ({"prompt": "Hi?", "chosen": "Same", "rejected": "Same"}, "preference", "rejected", "identical"),
        ({"prompt": "Hi?", "chosen": "", "rejected": "x"}, "preference", "chosen", "is empty"),
        ({"prompt": "Hi?", "chosen": "a"}, "preference", "rejected", "missing"),
        ({"chosen": "a", "rejected": "b"}, "preference", "prompt", "missing"),
        ({"prompt": [U, A], "chosen": "a", "rejected": "b"}, "preference", "prompt", "end with the user message"),
        ({"prompt": "Hi?", "chosen": [U], "rejected": "b"}, "preference", "chosen", "end with an assistant"),
    ],
)
def test_broken_rows(record: dict[str, Any], mapping: str, field: str, text: str) -> None:
    with pytest.raises(RowProblem) as err:
        normalise(record, ColumnMapping(format=mapping))  # type: ignore[arg-type]
    assert err.value.field == field
    assert text in err.value.message


def test_check_canonical() -> None:
    check_canonical(SUPERVISED, "supervised")
    check_canonical(PREF, "preference")
    with pytest.raises(RowProblem, match="exactly the keys"):
        check_canonical(PREF, "supervised")
    with pytest.raises(RowProblem, match="canonical"):
        check_canonical({"messages": [U, {**A, "name": "bot"}]}, "supervised")
    with pytest.raises(RowProblem, match="prompt must be a list"):
        check_canonical({"prompt": "Hi?", "chosen": "a", "rejected": "b"}, "preference")


def test_to_trl_record() -> None:
    assert to_trl_record(SUPERVISED) == {"prompt": [S, U], "completion": [A]}
    assert to_trl_record(PREF) == {
        "prompt": [U],
        "chosen": [{"role": "assistant", "content": "Hello."}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    }
