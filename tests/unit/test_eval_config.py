"""The eval config schema: what a user writes in YAML, the form builds, and the job row stores."""

from __future__ import annotations

import pytest

from studio.errors import ValidationError
from studio.evaluation.config import EvalConfig, eval_config_from_yaml, eval_config_to_yaml, parse_eval_config
from studio.evaluation.results import config_from_form


def test_models_as_names_or_mappings_and_metrics_as_text() -> None:
    config = parse_eval_config(
        {
            "models": ["smol", {"model": "smol", "adapter": "/a/lora-1"}],
            "dataset": "qa",
            "metrics": "rouge, exact_match rouge",
        }
    )
    assert [m.display for m in config.models] == ["smol", "smol+lora-1"]
    assert config.metrics == ["rouge", "exact_match"]
    assert config.generation.temperature == 0.0  # greedy by default: repeatable scores


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"models": ["m"], "metrics": ["bleu"]}, "give the data to evaluate on"),
        ({"models": ["m"], "metrics": ["bleu"], "dataset": "d", "text_file": "t.txt"}, "not both"),
        ({"models": [], "metrics": ["bleu"], "dataset": "d"}, "models"),
        ({"models": ["m"], "metrics": ["bleu"], "dataset": "d", "temperature": 1}, "temperature: Extra inputs"),
        ({"models": ["m", "m"], "metrics": ["bleu"], "dataset": "d"}, "same label"),
        ({"models": ["m"], "metrics": ["x"], "dataset": "d", "perplexity_window": 8, "perplexity_stride": 9}, "stride"),
    ],
)
def test_invalid_configs_name_the_problem(data: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError, match=message):
        parse_eval_config(data)


def test_yaml_round_trip() -> None:
    text = "kind: eval\nmodels: [smol]\ntext_file: t.txt\nmetrics: [perplexity]\nlimit: 3\n"
    config = eval_config_from_yaml(text)
    assert config.text_file == "t.txt" and config.limit == 3
    assert eval_config_from_yaml(eval_config_to_yaml(config)) == config


def test_form_values_become_a_config() -> None:
    config = config_from_form(
        ["smol", "other"], "lora-a", "dataset", "qa", "2", None, ["rouge"], 0.0, 32, 5, "smol", "my run"
    )
    assert isinstance(config, EvalConfig)
    assert [(m.model, m.adapter) for m in config.models] == [("smol", "lora-a"), ("other", "lora-a")]
    assert config.dataset_version == 2 and config.limit == 5 and config.judge is not None
    text = config_from_form(["smol"], None, "text", None, "latest", "t.txt", ["perplexity"], 0.0, 8, None)
    assert text.text_file == "t.txt" and text.dataset is None and text.limit is None
