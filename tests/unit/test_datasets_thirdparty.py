"""Third-party dataset formats, each row written as its documentation shows it: LLaMA-Factory's data/README.md
(alpaca with system and history, sharegpt with function_call / observation and tools, preference pairs in both
forms, KTO, dataset_info.json) and OpenAI's chat format (content parts, tool calls, weight). Every shape is read
exactly, or refused with a message that names it and says what to do — never imported silently wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from studio.datasets.formats import ColumnMapping, detect_format, normalise
from studio.datasets.mapping import mapping_from_data, mapping_from_text
from studio.datasets.messages import RowProblem
from studio.datasets.validate import validate_records
from studio.errors import ValidationError

CALC_TOOL = {
    "name": "calculate_area",
    "description": "Calculate the area of a given shape",
    "parameters": {
        "type": "object",
        "properties": {"shape": {"type": "string"}, "dimensions": {"type": "array", "items": {"type": "number"}}},
        "required": ["shape", "dimensions"],
    },
}
CALL = {
    "type": "function",
    "function": {"name": "calculate_area", "arguments": {"shape": "rectangle", "dimensions": [5, 3]}},
}


# -- LLaMA-Factory: alpaca ---------------------------------------------------------------------------------------
ALPACA_SFT = {
    "instruction": "human instruction (required)",
    "input": "human input (optional)",
    "output": "model response (required)",
    "system": "system prompt (optional)",
    "history": [
        ["human instruction in the first round (optional)", "model response in the first round (optional)"],
        ["human instruction in the second round (optional)", "model response in the second round (optional)"],
    ],
}


def test_alpaca_with_system_and_history_becomes_the_whole_conversation() -> None:
    mapping = detect_format([ALPACA_SFT])

    assert (mapping.format, mapping.system, mapping.history, mapping.kind) == (
        "alpaca",
        "system",
        "history",
        "supervised",
    )
    assert normalise(ALPACA_SFT, mapping) == {
        "messages": [
            {"role": "system", "content": "system prompt (optional)"},
            {"role": "user", "content": "human instruction in the first round (optional)"},
            {"role": "assistant", "content": "model response in the first round (optional)"},
            {"role": "user", "content": "human instruction in the second round (optional)"},
            {"role": "assistant", "content": "model response in the second round (optional)"},
            {"role": "user", "content": "human instruction (required)\nhuman input (optional)"},  # "instruction\ninput"
            {"role": "assistant", "content": "model response (required)"},
        ]
    }


def test_alpaca_history_must_hold_pairs() -> None:
    row = {**ALPACA_SFT, "history": [["only one"]]}
    with pytest.raises(RowProblem, match=r"history\[0\] must be a \[instruction, response\] pair"):
        normalise(row, detect_format([row]))


ALPACA_PAIR = {
    "instruction": "human instruction (required)",
    "input": "human input (optional)",
    "chosen": "chosen answer (required)",
    "rejected": "rejected answer (required)",
}


def test_alpaca_preference_pair() -> None:
    mapping = detect_format([ALPACA_PAIR])

    assert (mapping.format, mapping.ranking, mapping.kind) == ("alpaca", True, "preference")
    assert normalise(ALPACA_PAIR, mapping) == {
        "prompt": [{"role": "user", "content": "human instruction (required)\nhuman input (optional)"}],
        "chosen": "chosen answer (required)",
        "rejected": "rejected answer (required)",
    }


# -- LLaMA-Factory: sharegpt -------------------------------------------------------------------------------------
SHAREGPT_TOOLS = {
    "conversations": [
        {"from": "human", "value": "I need the area of a rectangle, 5 by 3."},
        {
            "from": "function_call",
            "value": '{"name": "calculate_area", "arguments": {"shape": "rectangle", "dimensions": [5, 3]}}',
        },
        {"from": "observation", "value": '{"area": 15}'},
        {"from": "gpt", "value": "The area is 15 square units."},
    ],
    "system": "You help with geometry.",
    "tools": json.dumps([CALC_TOOL]),
}


def test_sharegpt_function_call_observation_and_tools() -> None:
    mapping = detect_format([SHAREGPT_TOOLS])

    assert (mapping.format, mapping.system, mapping.tools) == ("sharegpt", "system", "tools")
    assert normalise(SHAREGPT_TOOLS, mapping) == {
        "messages": [
            {"role": "system", "content": "You help with geometry."},
            {"role": "user", "content": "I need the area of a rectangle, 5 by 3."},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "content": '{"area": 15}'},
            {"role": "assistant", "content": "The area is 15 square units."},
        ],
        "tools": [{"type": "function", "function": CALC_TOOL}],
    }


def test_sharegpt_system_turn_and_empty_tools() -> None:
    row = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hi?"},
            {"from": "gpt", "value": "Hello."},
        ],
        "tools": "[]",
    }
    assert normalise(row, detect_format([row])) == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi?"},
            {"role": "assistant", "content": "Hello."},
        ]
    }


@pytest.mark.parametrize(
    ("turns", "field", "text"),
    [
        ([{"from": "human", "value": "x"}, {"from": "observation", "value": "{}"}], "[1].from", "makes no tool call"),
        (
            [
                {"from": "human", "value": "x"},
                {"from": "function_call", "value": '{"name": "f"}'},
                {"from": "gpt", "value": "y"},
            ],
            "[2].from",
            "the result of the tool call before it belongs",
        ),
        (
            [{"from": "human", "value": "x"}, {"from": "function_call", "value": "not json"}],
            "[1].value",
            "not valid JSON",
        ),
        (
            [{"from": "human", "value": "x"}, {"from": "function_call", "value": '{"arguments": {}}'}],
            "[1].value.name",
            "must be text",
        ),
    ],
)
def test_broken_tool_turns_name_the_turn(turns: list[dict[str, str]], field: str, text: str) -> None:
    with pytest.raises(RowProblem) as err:
        normalise({"conversations": turns}, ColumnMapping(format="sharegpt"))
    assert err.value.field.endswith(field) and text in err.value.message


SHAREGPT_PAIR = {
    "conversations": [
        {"from": "human", "value": "human instruction"},
        {"from": "gpt", "value": "model response"},
        {"from": "human", "value": "human instruction 2"},
    ],
    "chosen": {"from": "gpt", "value": "chosen answer (required)"},
    "rejected": {"from": "gpt", "value": "rejected answer (required)"},
}


def test_sharegpt_preference_pair_with_message_objects() -> None:
    mapping = detect_format([SHAREGPT_PAIR])

    assert (mapping.format, mapping.ranking, mapping.kind) == ("sharegpt", True, "preference")
    assert normalise(SHAREGPT_PAIR, mapping) == {
        "prompt": [
            {"role": "user", "content": "human instruction"},
            {"role": "assistant", "content": "model response"},
            {"role": "user", "content": "human instruction 2"},
        ],
        "chosen": "chosen answer (required)",
        "rejected": "rejected answer (required)",
    }


def test_a_preference_reply_that_is_a_user_message_is_refused() -> None:
    row = {**SHAREGPT_PAIR, "rejected": {"from": "human", "value": "oops"}}
    with pytest.raises(RowProblem, match="must end with an assistant message"):
        normalise(row, detect_format([SHAREGPT_PAIR]))


# -- KTO ------------------------------------------------------------------------------------------------------------
def test_kto_as_llamafactory_documents_it() -> None:
    row = {
        "conversations": [{"from": "human", "value": "human instruction"}, {"from": "gpt", "value": "model response"}],
        "kto_tag": False,
    }
    mapping = detect_format([row])

    assert (mapping.label, mapping.kind) == ("kto_tag", "kto")
    assert normalise(row, mapping) == {
        "prompt": [{"role": "user", "content": "human instruction"}],
        "completion": "model response",
        "label": False,
    }


@pytest.mark.parametrize(
    "row",
    [
        # LLaMA-Factory's kto_en_demo.json: OpenAI messages + label
        {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}], "label": True},
        # TRL's unpaired preference format
        {"prompt": "Q?", "completion": "A.", "label": True},
        # alpaca with kto_tag, as a CSV cell writes it
        {"instruction": "Q?", "input": "", "output": "A.", "kto_tag": "true"},
    ],
)
def test_kto_in_every_layout(row: dict[str, Any]) -> None:
    mapping = detect_format([row])
    assert mapping.kind == "kto"
    assert normalise(row, mapping) == {"prompt": [{"role": "user", "content": "Q?"}], "completion": "A.", "label": True}


def test_a_label_that_is_not_true_or_false_is_refused() -> None:
    mapping = ColumnMapping(format="prompt_completion", label="label")
    with pytest.raises(RowProblem, match="label must be true or false"):
        normalise({"prompt": "Q?", "completion": "A.", "label": "maybe"}, mapping)


def test_a_label_column_of_other_values_is_not_kto_and_is_reported_unused() -> None:
    rows = [{"prompt": f"Q{i}?", "completion": f"A{i}.", "label": "positive"} for i in range(3)]
    out = validate_records(rows, min_examples=1)
    assert out.report.kind == "supervised"
    assert out.report.unused_columns == ["label"]
    assert "column not used: label" in out.report.summary()


def test_tool_calls_in_a_kto_row_are_refused() -> None:
    row = {**SHAREGPT_TOOLS, "label": True}
    with pytest.raises(RowProblem, match="tool calls are trained in supervised examples only"):
        normalise(row, detect_format([row]))


# -- OpenAI chat format ---------------------------------------------------------------------------------------------
OPENAI_TOOLS = {
    "messages": [
        {
            "role": "developer",
            "content": [{"type": "text", "text": "You help with "}, {"type": "text", "text": "maths."}],
        },
        {"role": "user", "content": [{"type": "text", "text": "Area of a 5 by 3 rectangle?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculate_area", "arguments": '{"shape": "rectangle", "dimensions": [5, 3]}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"area": 15}'},
        {"role": "assistant", "content": "It is 15.", "weight": 1},
    ],
    "tools": [{"type": "function", "function": CALC_TOOL}],
    "parallel_tool_calls": False,
}


def test_openai_parts_tool_calls_and_tool_results() -> None:
    out = validate_records([OPENAI_TOOLS], min_examples=1)

    assert out.report.invalid_rows == 0
    assert out.report.unused_columns == ["parallel_tool_calls"]  # reported, not silently dropped
    assert out.examples[0] == {
        "messages": [
            {"role": "system", "content": "You help with maths."},  # parts joined as chat templates join them
            {"role": "user", "content": "Area of a 5 by 3 rectangle?"},
            {"role": "assistant", "content": "", "tool_calls": [{**CALL, "id": "call_1"}]},  # arguments parsed
            {"role": "tool", "content": '{"area": 15}', "tool_call_id": "call_1"},
            {"role": "assistant", "content": "It is 15."},
        ],
        "tools": [{"type": "function", "function": CALC_TOOL}],
    }


def test_openai_weight_zero_is_kept_and_all_zero_is_refused() -> None:
    row = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bad reply", "weight": 0},
            {"role": "user", "content": "Again"},
            {"role": "assistant", "content": "Good reply"},
        ]
    }
    assert normalise(row, ColumnMapping(format="messages"))["messages"][1] == {
        "role": "assistant",
        "content": "Bad reply",
        "weight": 0,
    }
    row["messages"][3]["weight"] = 0
    with pytest.raises(RowProblem, match="nothing to learn"):
        normalise(row, ColumnMapping(format="messages"))


def test_an_image_part_is_refused_by_name() -> None:
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]},
            {"role": "assistant", "content": "A cat."},
        ]
    }
    with pytest.raises(RowProblem) as err:
        normalise(row, ColumnMapping(format="messages"))
    assert err.value.field == "messages[0].content[0]"
    assert "'image_url' part" in err.value.message and "text-only" in err.value.message


# -- refused data -------------------------------------------------------------------------------------------------
def test_multimodal_rows_are_refused_whatever_the_mapping() -> None:
    row = {
        "conversations": [{"from": "human", "value": "<image>What is this?"}, {"from": "gpt", "value": "A cat."}],
        "images": ["cat.jpg"],
    }
    for mapping in (None, ColumnMapping(format="sharegpt")):
        with pytest.raises(ValidationError, match="multimodal dataset") as err:
            validate_records([row], mapping, min_examples=1)
        assert "'images'" in err.value.message


def test_pretraining_text_rows_are_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="pre-training corpus"):
        detect_format([{"text": "document"}, {"text": "document"}])


# -- dataset_info.json --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {
                "file_name": "data.json",
                "columns": {
                    "prompt": "instruction",
                    "query": "input",
                    "response": "output",
                    "system": "system",
                    "history": "history",
                },
            },
            ColumnMapping(format="alpaca", system="system", history="history"),
        ),
        (
            {
                "file_name": "data.json",
                "ranking": True,
                "columns": {"prompt": "question", "chosen": "c", "rejected": "r"},
            },
            ColumnMapping(format="alpaca", ranking=True, instruction="question", chosen="c", rejected="r"),
        ),
        (
            {
                "file_name": "data.json",
                "formatting": "sharegpt",
                "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
            },
            ColumnMapping(format="sharegpt", system="system", tools="tools"),
        ),
        (
            {
                "file_name": "kto_en_demo.json",
                "formatting": "sharegpt",
                "columns": {"messages": "messages", "kto_tag": "label"},
                "tags": {
                    "role_tag": "role",
                    "content_tag": "content",
                    "user_tag": "user",
                    "assistant_tag": "assistant",
                },
            },
            ColumnMapping(
                format="sharegpt",
                conversations="messages",
                label="label",
                tags={"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
            ),
        ),
    ],
)
def test_dataset_info_entries_become_column_mappings(entry: dict[str, Any], expected: ColumnMapping) -> None:
    assert mapping_from_data(entry) == expected


def test_dataset_info_tags_read_custom_role_names() -> None:
    """lmsys-chat-1m in LLaMA-Factory's dataset_info.json: role/content keys, the user called 'human'."""
    entry = {
        "formatting": "sharegpt",
        "columns": {"messages": "conversation"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "human", "assistant_tag": "assistant"},
    }
    row = {"conversation": [{"role": "human", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
    mapping = mapping_from_data(entry)
    assert mapping is not None
    assert normalise(row, mapping) == {
        "messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    }
    with pytest.raises(RowProblem, match="use one of"):  # with these tags "user" is not a speaker
        normalise({"conversation": [{"role": "user", "content": "Hi?"}]}, mapping)


def test_a_whole_dataset_info_file_gives_the_entry_of_the_uploaded_file() -> None:
    info = {
        "alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
        "dpo_en_demo": {
            "file_name": "dpo_en_demo.json",
            "ranking": True,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        },
    }
    mapping = mapping_from_text(json.dumps(info), "dpo_en_demo.json")
    assert mapping == ColumnMapping(format="sharegpt", ranking=True)
    with pytest.raises(ValidationError, match=r"none has file_name 'other\.json'") as err:
        mapping_from_text(json.dumps(info), "other.json")
    assert "dpo_en_demo (dpo_en_demo.json)" in err.value.message


@pytest.mark.parametrize(
    ("entry", "text"),
    [
        ({"formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"}}, "multimodal dataset"),
        ({"file_name": "c4_demo.json", "columns": {"prompt": "text"}}, "pre-training dataset"),
        ({"formatting": "markdown"}, "formatting 'markdown'"),
        ({"columns": {"answer": "x"}}, "unknown LLaMA-Factory column.s. answer"),
        ({"formatting": "sharegpt", "columns": {"response": "x"}}, "belongs to the alpaca formatting"),
        ({"formatting": "sharegpt", "tags": {"speaker": "x"}}, "unknown tag"),
    ],
)
def test_dataset_info_refusals_say_what_and_why(entry: dict[str, Any], text: str) -> None:
    with pytest.raises(ValidationError, match=text):
        mapping_from_data(entry)


def test_mapping_text_is_either_kind() -> None:
    assert mapping_from_text("format: prompt_completion\nprompt: q\ncompletion: a") == ColumnMapping(
        format="prompt_completion", prompt="q", completion="a"
    )
    assert mapping_from_text('{"formatting": "openai", "columns": {"messages": "chat"}}') == ColumnMapping(
        format="messages", messages="chat"
    )
    assert mapping_from_text("") is None
    with pytest.raises(ValidationError, match="KTO label and chosen/rejected"):
        mapping_from_text("format: preference\nlabel: label")


def test_tool_schemas_and_arguments_keep_their_order_through_the_store(tmp_path: Any) -> None:
    """The template writes a tool's JSON schema and a call's arguments as stored: sorting their keys would train on
    a text the model never sees at inference."""
    from studio.datasets.store import DatasetStore
    from studio.db.engine import Database
    from studio.settings import Settings

    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    db = Database("sqlite:///" + str(tmp_path / "t.db"))
    rows = [{**SHAREGPT_TOOLS, "system": f"System {i}."} for i in range(10)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()

    result = DatasetStore(settings, db).import_upload("tools", data, "tools.jsonl")
    example = DatasetStore(settings, db).load_examples(result.version)[0]
    db.dispose()

    assert list(example["tools"][0]) == ["type", "function"]
    assert list(example["tools"][0]["function"]) == ["name", "description", "parameters"]
    assert list(example["tools"][0]["function"]["parameters"]["properties"]) == ["shape", "dimensions"]
    assert list(example["messages"][2]["tool_calls"][0]["function"]["arguments"]) == ["shape", "dimensions"]
    assert list(example["messages"][0]) == ["content", "role"]  # message keys stay sorted, as before
