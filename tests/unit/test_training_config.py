"""The fine-tuning config: method defaults from configs/finetune, YAML round trip, errors that name the field
and its allowed range, the example config, and the prompt/completion conversion (no model needed)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import yaml

from studio.errors import ValidationError
from studio.settings import CONFIG_DIR
from studio.training.config import (
    METHODS,
    FinetuneConfig,
    config_from_yaml,
    config_to_yaml,
    field_specs,
    load_config,
    method_specs,
    parse_config,
    qlora_available,
)
from studio.training.data import split_examples, to_prompt_completion

EXAMPLE = CONFIG_DIR / "finetune" / "examples" / "lora-smollm2.yaml"


def test_every_method_has_a_spec_with_badge_description_and_defaults() -> None:
    specs = method_specs()

    assert list(specs) == list(METHODS)
    assert specs["lora"].recommended and specs["lora"].badge == "Most Efficient"
    assert specs["full"].badge == "Resource Intensive" and specs["full"].artifact == "model"
    assert specs["adapter"].label == "Adapter Layers" and "IA3" in specs["adapter"].description
    assert specs["prefix"].params == ("num_virtual_tokens",)
    for spec in specs.values():
        assert spec.summary and spec.description and spec.bullets
        assert "learning_rate" in spec.defaults


def test_method_defaults_fill_what_the_config_leaves_out() -> None:
    lora = FinetuneConfig(name="a", dataset="d")
    full = FinetuneConfig(name="a", dataset="d", method="full")
    qlora = FinetuneConfig(name="a", dataset="d", method="qlora")
    mine = FinetuneConfig(name="a", dataset="d", method="full", learning_rate=5e-5)

    assert lora.learning_rate == 2e-4 and lora.lora_r == 8
    assert full.learning_rate == 2e-5 < lora.learning_rate  # full fine-tuning: lower learning rate
    assert qlora.target_modules == "all-linear" and qlora.lora_r == 16
    assert mine.learning_rate == 5e-5  # an explicit value wins over the method's default


def test_yaml_round_trip_keeps_every_value_and_only_the_methods_parameters() -> None:
    config = FinetuneConfig(
        name="support bot",
        dataset="support",
        dataset_version=2,
        method="prefix",
        num_virtual_tokens=30,
        max_steps=40,
        not_before=datetime(2030, 1, 2, 3, 4),
        priority=5,
    )

    text = config_to_yaml(config)
    data = yaml.safe_load(text)

    assert config_from_yaml(text) == config
    assert data["num_virtual_tokens"] == 30 and "lora_r" not in data  # other methods' knobs are left out
    assert list(data)[:2] == ["kind", "name"]


def test_unknown_key_is_named_with_a_suggestion() -> None:
    with pytest.raises(ValidationError) as err:
        config_from_yaml("name: x\ndataset: d\nlearning_rte: 0.1\n")

    assert err.value.param == "learning_rte"
    assert "unknown key 'learning_rte'" in err.value.message
    assert "did you mean 'learning_rate'" in err.value.message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("lora_r", 1000, "allowed range: 1 to 512"),
        ("validation_split", 0.9, "allowed range: 0 to 0.5"),
        ("learning_rate", 0, "allowed range: more than 0 to 1"),
        ("batch_size", 0, "allowed range: 1 to 512"),
        ("early_stopping_threshold", -1, "allowed range: 0 to 10"),
    ],
)
def test_out_of_range_value_names_the_field_and_its_range(field: str, value: object, expected: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_config({"name": "x", "dataset": "d", field: value})

    assert err.value.param == field
    assert f"{field}:" in err.value.message and expected in err.value.message


def test_wrong_method_lists_the_allowed_ones() -> None:
    with pytest.raises(ValidationError) as err:
        parse_config({"name": "x", "dataset": "d", "method": "dora"})

    assert err.value.param == "method"
    assert "'lora'" in err.value.message and "'full'" in err.value.message


def test_inconsistent_combinations_are_explained() -> None:
    with pytest.raises(ValidationError, match="early_stopping_patience needs eval loss"):
        parse_config({"name": "x", "dataset": "d", "validation_split": 0, "early_stopping_patience": 3})
    with pytest.raises(ValidationError, match="subset of adapter_target_modules; not targeted: up_proj"):
        parse_config(
            {
                "name": "x",
                "dataset": "d",
                "method": "adapter",
                "adapter_target_modules": ["k_proj", "down_proj"],
                "adapter_feedforward_modules": ["up_proj"],
            }
        )


def test_yaml_that_is_not_a_mapping_is_rejected() -> None:
    with pytest.raises(ValidationError, match="mapping"):
        config_from_yaml("- a\n- b\n")
    with pytest.raises(ValidationError, match="not valid YAML"):
        config_from_yaml("name: [unclosed\n")


def test_field_specs_carry_help_text_and_ranges_for_the_form() -> None:
    specs = field_specs()

    assert specs["lora_r"].minimum == 1 and specs["lora_r"].maximum == 512
    assert "rank" in specs["lora_r"].description.lower()
    assert specs["method"].choices == METHODS
    assert all(s.description for s in specs.values())


def test_the_example_config_trains_lora_on_the_bundled_model_quickly() -> None:
    config = load_config(EXAMPLE)

    assert config.method == "lora"
    assert config.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert config.dataset == "whetstone-assistant"
    # the dataset's training share / batch x epochs, at ~1.5 s/step on 2 cores (FACTS), stays well under 5 minutes
    dataset = CONFIG_DIR / "datasets" / "whetstone-assistant.jsonl"
    n = len(dataset.read_text(encoding="utf-8").splitlines()) if dataset.is_file() else 40
    per_step = config.batch_size * config.gradient_accumulation
    steps = config.max_steps or -(-round(n * (1 - config.validation_split)) // per_step) * config.epochs
    assert steps * 1.5 * (config.batch_size / 4) * (config.max_length / 256) < 200


def test_artifact_name_defaults_to_a_safe_job_name() -> None:
    assert FinetuneConfig(name="My bot: v2!", dataset="d").artifact_name == "My-bot--v2"
    assert FinetuneConfig(name="x", dataset="d", output_name="bot-v2").artifact_name == "bot-v2"


def test_qlora_availability_says_why_when_unavailable() -> None:
    ok, why = qlora_available()

    assert ok or "bitsandbytes" in why


def test_chat_examples_become_prompt_and_completion() -> None:
    example = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
        ]
    }
    pair = {"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go away."}

    row = to_prompt_completion(example)

    assert row["prompt"] == example["messages"][:2]
    assert row["completion"] == [{"role": "assistant", "content": "Hello!"}]
    assert to_prompt_completion(pair)["completion"] == row["completion"]  # preference: the chosen reply


@pytest.mark.parametrize(
    ("example", "message"),
    [
        ({"messages": [{"role": "user", "content": "Hi"}]}, "example 3: needs at least one message before"),
        ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " "}]}, "reply is empty"),
        ({"text": "hello"}, "expected 'messages'"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "message 1: needs role"),
    ],
)
def test_bad_examples_are_reported_with_their_number(example: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        to_prompt_completion(example, index=2)


def test_split_is_reproducible_and_keeps_training_examples() -> None:
    examples = [
        {"messages": [{"role": "user", "content": str(i)}, {"role": "assistant", "content": str(i)}]} for i in range(10)
    ]

    train_a, eval_a = split_examples(examples, 0.2, seed=1)
    train_b, eval_b = split_examples(examples, 0.2, seed=1)
    train_c, _ = split_examples(examples[:1], 0.5, seed=1)

    assert (train_a, eval_a) == (train_b, eval_b)
    assert len(train_a) == 8 and len(eval_a) == 2
    assert len(train_c) == 1  # never hold out the only example


def test_the_config_files_are_where_the_ui_reads_them() -> None:
    for method in METHODS:
        assert Path(CONFIG_DIR / "finetune" / f"{method}.yaml").is_file()
