"""Every dataset format a user brings, end to end: the file as its documentation writes it (LLaMA-Factory's
data/README.md, OpenAI's chat format) → import → validation report → 2 real training steps with the trainer the
kind goes to (SFTTrainer, DPOTrainer, KTOTrainer) on a tiny local model → the exact text the trainer saw, and
which parts of it were learned. Plus the refusals a user meets when the data cannot be trained as written."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studio.datasets.mapping import mapping_from_text
from studio.datasets.store import DatasetStore
from studio.db.engine import Database
from studio.errors import ValidationError
from studio.jobs.reporter import MemoryReporter
from studio.settings import Settings
from studio.training.config import FinetuneConfig
from studio.training.train import train

pytestmark = pytest.mark.slow

BUNDLED_DIR = "HuggingFaceTB--SmolLM2-135M-Instruct"
QWEN_TEMPLATE = Path(__file__).parent / "data" / "qwen2.5-instruct-tools.jinja"
SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
N = 10  # the fewest examples an upload may have

CALC_TOOL = {
    "name": "calculate_area",
    "description": "Calculate the area of a given shape",
    "parameters": {
        "type": "object",
        "properties": {"shape": {"type": "string"}, "dimensions": {"type": "array", "items": {"type": "number"}}},
        "required": ["shape", "dimensions"],
    },
}
TOOLS_JSON = json.dumps({"type": "function", "function": CALC_TOOL})  # as the template's tojson writes it


def qwen_tools_system(system: str) -> str:
    """Qwen2.5's system turn with the tool definitions, as its template writes it."""
    return (
        f"<|im_start|>system\n{system}\n\n# Tools\n\nYou may call one or more functions to assist with the user "
        "query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + TOOLS_JSON
        + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
        '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}'
        "\n</tool_call><|im_end|>\n"
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> None:
    import torch

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_model(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with the bundled tokenizer and its chat template (SmolLM2: plain ChatML, no tools)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(studio_home / "models" / BUNDLED_DIR), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-smol")
    LlamaForCausalLM(config).save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def tool_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny model with Qwen2.5-Instruct's chat template, which writes tools, tool calls and results."""
    import shutil

    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tiny-tools")
    for item in tiny_model.iterdir():
        if item.is_file() and not item.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(item, path / item.name)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    tokenizer.chat_template = QWEN_TEMPLATE.read_text(encoding="utf-8")
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DatasetStore]:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    db = Database("sqlite:///" + str(tmp_path / "t.db"))
    yield DatasetStore(settings, db)
    db.dispose()


def write_json(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return path


def import_file(store: DatasetStore, path: Path, mapping: str | None = None) -> list[dict[str, Any]]:
    """Import as the upload form does; the report must be clean; returns the stored canonical examples."""
    result = store.import_upload(path.stem, path, path.name, mapping_from_text(mapping, path.name))
    assert result.report is not None and result.report.ok, result.report
    assert result.report.unused_columns == []
    assert result.version.num_examples == N
    return store.load_examples(result.version)


class Capture:
    """A TrainerCallback that keeps the dataset the trainer iterates (tokenised, with its labels)."""

    def __new__(cls) -> Any:
        from transformers import TrainerCallback

        class _Capture(TrainerCallback):  # type: ignore[misc]
            dataset: Any = None

            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                self.dataset = kwargs["train_dataloader"].dataset

        return _Capture()


def train_sft(examples: list[dict[str, Any]], model: Path, out: Path, **overrides: Any) -> tuple[Any, Any]:
    """Two real SFT steps; returns (result, the trainer's tokenised dataset)."""
    values: dict[str, Any] = {
        "name": "roundtrip",
        "dataset": "d",
        "method": "lora",
        "max_steps": 2,
        "batch_size": 2,
        "max_length": 512,
        "validation_split": 0.0,
        "checkpoint_every_steps": 100,
        "warmup_ratio": 0.0,
        "learning_rate": 1e-3,
    }
    capture = Capture()
    result = train(
        FinetuneConfig(**{**values, **overrides}), examples, model, out, MemoryReporter(), callbacks=[capture]
    )
    assert result.stopped == "completed" and result.steps == 2
    assert result.train_loss is not None and result.train_loss > 0
    return result, capture.dataset


def rendered(dataset: Any, tokenizer: Any, marker: str) -> tuple[str, list[str]]:
    """The full text of the trained row that contains ``marker``, and its learned spans (decoded)."""
    for row in dataset:
        text = tokenizer.decode(row["input_ids"])
        if marker in text:
            spans: list[list[int]] = []
            previous = False
            for token, label in zip(row["input_ids"], row["labels"], strict=True):
                if label != -100 and not previous:
                    spans.append([])
                if label != -100:
                    spans[-1].append(token)
                previous = label != -100
            return text, [tokenizer.decode(s) for s in spans]
    raise AssertionError(f"no trained row contains {marker!r}")


def tokenizer_of(model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model))


# -- LLaMA-Factory alpaca: system + history ------------------------------------------------------------------------
def test_alpaca_with_system_and_history(store: DatasetStore, tiny_model: Path, tmp_path: Path) -> None:
    rows = [
        {
            "instruction": f"Add {i} and 2.",
            "input": f"Show the sum of {i} + 2.",
            "output": f"{i} + 2 = {i + 2}.",
            "system": "You are a calculator.",
            "history": [[f"Is {i} a number?", "Yes, it is."]],
        }
        for i in range(N)
    ]
    examples = import_file(store, write_json(tmp_path / "alpaca.json", rows))

    _result, dataset = train_sft(examples, tiny_model, tmp_path / "run")

    text, learned = rendered(dataset, tokenizer_of(tiny_model), "Add 3 and 2.")
    assert text == (
        "<|im_start|>system\nYou are a calculator.<|im_end|>\n"
        "<|im_start|>user\nIs 3 a number?<|im_end|>\n<|im_start|>assistant\nYes, it is.<|im_end|>\n"
        "<|im_start|>user\nAdd 3 and 2.\nShow the sum of 3 + 2.<|im_end|>\n"
        "<|im_start|>assistant\n3 + 2 = 5.<|im_end|>\n"
    )
    # the history's response is learned too, as LLaMA-Factory documents; system and user turns are not
    assert learned == ["Yes, it is.<|im_end|>\n", "3 + 2 = 5.<|im_end|>\n"]


# -- LLaMA-Factory sharegpt: function_call / observation / tools ---------------------------------------------------
def sharegpt_tool_rows() -> list[dict[str, Any]]:
    return [
        {
            "conversations": [
                {"from": "human", "value": f"What is the area of a {i} by 3 rectangle?"},
                {
                    "from": "function_call",
                    "value": json.dumps(
                        {"name": "calculate_area", "arguments": {"shape": "rectangle", "dimensions": [i, 3]}}
                    ),
                },
                {"from": "observation", "value": json.dumps({"area": i * 3})},
                {"from": "gpt", "value": f"The area is {i * 3} square units."},
            ],
            "system": "You help with geometry.",
            "tools": json.dumps([CALC_TOOL]),
        }
        for i in range(N)
    ]


def test_sharegpt_tool_calls_train_with_the_tools_in_the_text(
    store: DatasetStore, tool_model: Path, tmp_path: Path
) -> None:
    examples = import_file(store, write_json(tmp_path / "glaive.json", sharegpt_tool_rows()))

    _result, dataset = train_sft(examples, tool_model, tmp_path / "run")

    text, learned = rendered(dataset, tokenizer_of(tool_model), "a 4 by 3 rectangle")
    arguments = '{"shape": "rectangle", "dimensions": [4, 3]}'
    call = f'<tool_call>\n{{"name": "calculate_area", "arguments": {arguments}}}\n</tool_call>'
    assert text == (
        qwen_tools_system("You help with geometry.")
        + "<|im_start|>user\nWhat is the area of a 4 by 3 rectangle?<|im_end|>\n"
        + f"<|im_start|>assistant\n{call}<|im_end|>\n"
        + '<|im_start|>user\n<tool_response>\n{"area": 12}\n</tool_response><|im_end|>\n'
        + "<|im_start|>assistant\nThe area is 12 square units.<|im_end|>\n"
    )
    # loss on the assistant's parts: the tool call and the answer; never the tools, the question or the result
    assert learned == [f"{call}<|im_end|>\n", "The area is 12 square units.<|im_end|>\n"]


def test_tool_calls_are_refused_for_a_template_that_drops_them(
    store: DatasetStore, tiny_model: Path, tmp_path: Path
) -> None:
    """SmolLM2's template writes neither tool definitions nor tool calls: training would silently lose them."""
    examples = import_file(store, write_json(tmp_path / "glaive.json", sharegpt_tool_rows()))

    with pytest.raises(ValidationError) as err:
        train_sft(examples, tiny_model, tmp_path / "run", base_model="smollm2")
    assert err.value.message.startswith(
        "the chat template of smollm2 does not write tool definitions or tool calls into the text "
        "(tool definitions in 10 examples; tool calls in 10 examples)"
    )
    assert "Qwen2.5" in err.value.message


# -- OpenAI chat format: content parts, tool_calls, tool results ---------------------------------------------------
def test_openai_parts_and_tool_calls(store: DatasetStore, tool_model: Path, tmp_path: Path) -> None:
    rows = [
        {
            "messages": [
                {
                    "role": "system",
                    "content": [{"type": "text", "text": "You help with "}, {"type": "text", "text": "maths."}],
                },
                {"role": "user", "content": [{"type": "text", "text": f"Area of a {i} by 2 rectangle?"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": f"call_{i}",
                            "type": "function",
                            "function": {
                                "name": "calculate_area",
                                "arguments": json.dumps({"shape": "rectangle", "dimensions": [i, 2]}),
                            },
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": f"call_{i}", "content": str(i * 2)},
                {"role": "assistant", "content": f"It is {i * 2}."},
            ],
            "tools": [{"type": "function", "function": CALC_TOOL}],
        }
        for i in range(N)
    ]
    path = tmp_path / "openai.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    examples = import_file(store, path)

    _result, dataset = train_sft(examples, tool_model, tmp_path / "run")

    text, learned = rendered(dataset, tokenizer_of(tool_model), "a 5 by 2 rectangle")
    arguments = '{"shape": "rectangle", "dimensions": [5, 2]}'
    call = f'<tool_call>\n{{"name": "calculate_area", "arguments": {arguments}}}\n</tool_call>'
    assert text == (
        qwen_tools_system("You help with maths.")
        + "<|im_start|>user\nArea of a 5 by 2 rectangle?<|im_end|>\n"
        + f"<|im_start|>assistant\n{call}<|im_end|>\n"
        + "<|im_start|>user\n<tool_response>\n10\n</tool_response><|im_end|>\n"
        + "<|im_start|>assistant\nIt is 10.<|im_end|>\n"
    )
    assert learned == [f"{call}<|im_end|>\n", "It is 10.<|im_end|>\n"]


# -- dataset_info.json column mapping ------------------------------------------------------------------------------
def test_dataset_info_mapping_renames_the_columns(store: DatasetStore, tiny_model: Path, tmp_path: Path) -> None:
    rows = [{"question": f"Capital number {i}?", "answer": f"City {i}.", "persona": "Be terse."} for i in range(N)]
    info = {
        "capitals": {
            "file_name": "capitals.json",
            "columns": {"prompt": "question", "response": "answer", "system": "persona"},
        }
    }

    examples = import_file(store, write_json(tmp_path / "capitals.json", rows), json.dumps(info))
    _result, dataset = train_sft(examples, tiny_model, tmp_path / "run")

    text, learned = rendered(dataset, tokenizer_of(tiny_model), "Capital number 7?")
    assert text == (
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nCapital number 7?<|im_end|>\n"
        "<|im_start|>assistant\nCity 7.<|im_end|>\n"
    )
    assert learned == ["City 7.<|im_end|>\n"]


# -- preference pairs: alpaca strings and sharegpt message objects → DPO ------------------------------------------
ALPACA_PAIRS = [
    {"instruction": f"Capital of country {i}?", "input": "One word.", "chosen": f"City{i}", "rejected": f"Town{i}"}
    for i in range(N)
]
SHAREGPT_PAIRS = [
    {
        "conversations": [
            {"from": "human", "value": "Hello"},
            {"from": "gpt", "value": "Hi! How can I help?"},
            {"from": "human", "value": f"Capital of country {i}?\nOne word."},
        ],
        "chosen": {"from": "gpt", "value": f"City{i}"},
        "rejected": {"from": "gpt", "value": f"Town{i}"},
    }
    for i in range(N)
]


@pytest.mark.parametrize(
    ("rows", "prompt_text"),
    [
        (ALPACA_PAIRS, "<|im_start|>user\nCapital of country 4?\nOne word.<|im_end|>\n<|im_start|>assistant\n"),
        (
            SHAREGPT_PAIRS,
            "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi! How can I help?<|im_end|>\n"
            "<|im_start|>user\nCapital of country 4?\nOne word.<|im_end|>\n<|im_start|>assistant\n",
        ),
    ],
    ids=["alpaca", "sharegpt"],
)
def test_preference_pairs_train_with_dpo(
    rows: list[dict[str, Any]], prompt_text: str, store: DatasetStore, tiny_model: Path, tmp_path: Path
) -> None:
    from studio.training.preference import DpoConfig, train_preference

    path = write_json(tmp_path / "pairs.json", rows)
    result = store.import_upload("pairs", path, path.name)
    assert result.version.kind == "preference" and result.report is not None and result.report.ok
    examples = store.load_examples(result.version)
    capture = Capture()

    summary = train_preference(
        DpoConfig(name="dpo", dataset="pairs", max_steps=2, batch_size=2, max_length=256),
        examples,
        tiny_model,
        tmp_path / "dpo",
        MemoryReporter(),
        callbacks=[capture],
    )

    assert summary["stopped"] == "completed" and summary["steps"] == 2
    tokenizer = tokenizer_of(tiny_model)
    row = next(r for r in capture.dataset if "country 4?" in tokenizer.decode(r["prompt_ids"]))
    assert tokenizer.decode(row["prompt_ids"]) == SMOL_SYSTEM + prompt_text
    assert tokenizer.decode(row["chosen_ids"]) == "City4<|im_end|>\n"
    assert tokenizer.decode(row["rejected_ids"]) == "Town4<|im_end|>\n"


# -- KTO: LLaMA-Factory's kto_en_demo (messages + label) and its kto_tag through dataset_info.json ----------------
@pytest.mark.parametrize(
    ("rows", "mapping"),
    [
        (
            [
                {
                    "messages": [
                        {"role": "user", "content": f"Is {i} even?"},
                        {"role": "assistant", "content": "Yes." if i % 2 == 0 else "No."},
                    ],
                    "label": i % 3 != 0,
                }
                for i in range(N)
            ],
            None,
        ),
        (
            [
                {
                    "conversations": [
                        {"from": "human", "value": f"Is {i} even?"},
                        {"from": "gpt", "value": "Yes." if i % 2 == 0 else "No."},
                    ],
                    "kto_tag": i % 3 != 0,
                }
                for i in range(N)
            ],
            json.dumps({"formatting": "sharegpt", "columns": {"messages": "conversations", "kto_tag": "kto_tag"}}),
        ),
    ],
    ids=["kto_en_demo", "dataset_info"],
)
def test_kto_trains_with_the_kto_trainer(
    rows: list[dict[str, Any]], mapping: str | None, store: DatasetStore, tiny_model: Path, tmp_path: Path
) -> None:
    path = write_json(tmp_path / "feedback.json", rows)
    result = store.import_upload("feedback", path, path.name, mapping_from_text(mapping, path.name))
    assert result.version.kind == "kto" and result.report is not None and result.report.ok
    examples = store.load_examples(result.version)
    assert examples[3] == {"prompt": [{"role": "user", "content": "Is 3 even?"}], "completion": "No.", "label": False}
    capture = Capture()

    trained = train(
        FinetuneConfig(
            name="kto",
            dataset="feedback",
            method="kto",
            max_steps=2,
            batch_size=2,
            max_length=128,
            validation_split=0.0,
            checkpoint_every_steps=100,
        ),
        examples,
        tiny_model,
        tmp_path / "kto" / "adapter",
        MemoryReporter(),
        callbacks=[capture],
    )

    assert trained.stopped == "completed" and trained.steps == 2 and trained.artifact == "adapter"
    assert (tmp_path / "kto" / "adapter" / "adapter_model.safetensors").is_file()
    tokenizer = tokenizer_of(tiny_model)
    row = next(r for r in capture.dataset if "Is 3 even?" in tokenizer.decode(r["prompt_ids"]))
    assert (
        tokenizer.decode(row["prompt_ids"])
        == SMOL_SYSTEM + "<|im_start|>user\nIs 3 even?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(row["completion_ids"]) == "No.<|im_end|>\n"
    assert row["label"] is False
    assert sorted(r["label"] for r in capture.dataset) == sorted(e["label"] for e in examples)


def test_kto_data_is_refused_by_the_supervised_methods(store: DatasetStore, tiny_model: Path, tmp_path: Path) -> None:
    rows = [{"prompt": f"Q{i}?", "completion": f"A{i}.", "label": True} for i in range(N)]
    examples = import_file(store, write_json(tmp_path / "kto.json", rows))

    with pytest.raises(ValidationError, match=r"is a KTO example .* train it with method kto"):
        train_sft(examples, tiny_model, tmp_path / "run")


def test_submit_refuses_what_the_job_could_not_train(studio_home: Path, tmp_path: Path) -> None:
    """The wizard's Submit (``prepare_finetune``) says at once what a job would only find out minutes later."""
    from studio.training.job import prepare_finetune

    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(studio_home / "models", target_is_directory=True)
    settings = Settings(home=home, hf_cache=studio_home / "hf-cache")
    db = Database("sqlite:///" + str(tmp_path / "t.db"))
    store = DatasetStore(settings, db)
    store.import_upload("glaive", write_json(tmp_path / "glaive.json", sharegpt_tool_rows()), "glaive.json")
    kto = [{"prompt": f"Q{i}?", "completion": f"A{i}.", "label": i % 2 == 0} for i in range(N)]
    store.import_upload("thumbs", write_json(tmp_path / "thumbs.json", kto), "thumbs.json")

    def submit(**values: Any) -> FinetuneConfig:
        return prepare_finetune(settings, db, FinetuneConfig(name="job", **values))

    with pytest.raises(
        ValidationError, match="template of HuggingFaceTB/SmolLM2-135M-Instruct does not write tool def"
    ):
        submit(dataset="glaive")  # the bundled SmolLM2 template drops tools
    with pytest.raises(ValidationError, match=r"'thumbs' v1 holds KTO examples .* train it with method kto"):
        submit(dataset="thumbs")
    with pytest.raises(ValidationError, match="holds supervised examples; method kto needs replies labelled"):
        submit(dataset="whetstone-assistant", method="kto")
    assert submit(dataset="thumbs", method="kto").dataset_version == 1
    db.dispose()
