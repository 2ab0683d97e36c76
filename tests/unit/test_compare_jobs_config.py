"""The dpo / reward job configs: one schema (extra keys forbidden), YAML round trip, TRL argument mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.compare.feedback import preference_job_yaml
from studio.errors import ValidationError
from studio.jobs.kinds import get_kind
from studio.settings import CONFIG_DIR
from studio.training.preference import DpoConfig, RewardModelConfig, dpo_args, parse_config_yaml, reward_args


def test_example_and_prefilled_configs_parse() -> None:
    example = parse_config_yaml((CONFIG_DIR / "compare" / "dpo-example.yaml").read_text(encoding="utf-8"))
    assert isinstance(example, DpoConfig) and example.method == "lora" and example.beta == 0.1
    prefilled = parse_config_yaml(preference_job_yaml("dpo", "prefs", 3, "default", max_steps=5))
    assert isinstance(prefilled, DpoConfig)
    assert (prefilled.dataset, prefilled.dataset_version, prefilled.max_steps) == ("prefs", 3, 5)
    reward = parse_config_yaml(preference_job_yaml("reward", "prefs"))
    assert isinstance(reward, RewardModelConfig) and reward.artifact_name == "reward-prefs"


def test_bad_configs_name_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        parse_config_yaml("kind: dpo\nname: x\ndataset: d\nbeta: 0\n")
    assert err.value.param == "beta"
    with pytest.raises(ValidationError) as err:
        parse_config_yaml("kind: dpo\nname: x\ndataset: d\nloss: ipo\n")
    assert err.value.param == "loss"  # unknown keys are refused, not ignored
    with pytest.raises(ValidationError, match="'dpo' or 'reward'"):
        parse_config_yaml("kind: sft\nname: x\ndataset: d\n")


def test_kinds_are_registered_and_map_onto_trl(tmp_path: Path) -> None:
    assert get_kind("dpo").config_model is DpoConfig and get_kind("reward").config_model is RewardModelConfig
    config = DpoConfig(name="x", dataset="d", beta=0.3, loss_type="ipo", max_steps=4, batch_size=3)
    args = dpo_args(config, tmp_path)
    assert args.beta == 0.3 and args.loss_type == ["ipo"] and args.max_steps == 4
    assert args.per_device_train_batch_size == 3 and args.report_to == []
    rargs = reward_args(RewardModelConfig(name="x", dataset="d", center_rewards_coefficient=0.01), tmp_path)
    assert rargs.center_rewards_coefficient == 0.01 and rargs.max_steps == -1
