"""The Evaluate form's starting values (configs/eval/defaults.yaml) make a run that passes validation as they are
(issue 15, point 4: "Run" with the defaults failed because no dataset was preselected)."""

from __future__ import annotations

from studio.datasets.builtin import BUILTIN_DATASETS
from studio.evaluation.defaults import EvalFormDefaultsConfig, eval_form_defaults
from studio.evaluation.plugins import load_registry
from studio.evaluation.results import config_from_form

SHIPPED = [d.name for d in BUILTIN_DATASETS]


def test_the_shipped_defaults_preselect_a_shipped_dataset_and_known_metrics() -> None:
    defaults = eval_form_defaults()
    assert defaults.pick_dataset(SHIPPED) == defaults.dataset
    assert defaults.pick_metrics(load_registry(entry_points=False).names()) == defaults.metrics


def test_the_form_as_it_comes_is_a_valid_run() -> None:
    defaults = eval_form_defaults()
    config = config_from_form(
        ["HuggingFaceTB/SmolLM2-135M-Instruct"],
        None,
        "dataset",
        defaults.pick_dataset(SHIPPED),
        "latest",
        None,
        defaults.metrics,
        0.0,
        defaults.max_tokens,
        defaults.limit,
    )
    assert config.dataset == "whetstone-assistant" and config.limit == defaults.limit


def test_another_stored_dataset_is_preselected_when_the_configured_one_is_gone() -> None:
    defaults = EvalFormDefaultsConfig(dataset="whetstone-assistant")
    assert defaults.pick_dataset(["my-data", "other"]) == "my-data"
    assert defaults.pick_dataset([]) is None
