"""The safety policy schema: the shipped YAML, validation errors that name the field, atomic save."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.errors import ValidationError
from studio.safety.policy import (
    DEFAULT_POLICY_PATH,
    SafetyPolicyConfig,
    load_policy,
    parse_policy_yaml,
    policy_from_dict,
    save_policy,
)


def test_shipped_default_policy_is_the_schema_default() -> None:
    loaded = load_policy(DEFAULT_POLICY_PATH)
    skip = {"name", "description"}
    assert loaded.model_dump(exclude=skip) == SafetyPolicyConfig().model_dump(exclude=skip)
    assert loaded.word_list.path().is_file()


@pytest.mark.parametrize(
    ("data", "param", "words"),
    [
        ({"pii": {"entities": ["PERSON", "UK_NHS"]}}, "pii.entities", ["UK_NHS", "supported"]),
        ({"pii": {"action": "shred"}}, "pii.action", ["shred"]),
        ({"pii": {"apply_to": ["sideways"]}}, "pii.apply_to.0", ["sideways"]),
        ({"toxicity": {"threshold": 1.5}}, "toxicity.threshold", ["1.5"]),
        ({"toxicity": {"scorer": "detoxify"}}, "toxicity", ["detoxify_checkpoint"]),
        ({"word_list": {"colour": "red"}}, "word_list.colour", ["unknown"]),
        ({"length": {"max_output_tokens": 0}}, "length.max_output_tokens", ["greater than or equal to 1"]),
        ({"streaming": {"hold_chars": -1}}, "streaming.hold_chars", []),
    ],
)
def test_validation_error_names_the_field(data: dict[str, object], param: str, words: list[str]) -> None:
    with pytest.raises(ValidationError) as err:
        policy_from_dict(data, "my-policy.yaml")
    assert err.value.param == param
    assert "my-policy.yaml" in str(err.value)
    assert f"'{param}'" in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(ValidationError) as err:
        parse_policy_yaml("pii:\n  enabled: true\n  entities: [PERSON\n", "p.yaml")
    assert "p.yaml, line" in str(err.value)
    assert err.value.param == "yaml"


def test_missing_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no such safety policy file"):
        load_policy(tmp_path / "absent.yaml")


def test_save_then_load_round_trips_and_leaves_no_temp_file(tmp_path: Path) -> None:
    policy = policy_from_dict(
        {"name": "strict", "pii": {"entities": ["EMAIL_ADDRESS"], "action": "block"}, "length": {"action": "block"}}
    )
    target = save_policy(policy, tmp_path / "policies" / "strict.yaml")
    assert load_policy(target) == policy
    assert sorted(p.name for p in target.parent.iterdir()) == ["strict.yaml"]
    # Overwriting keeps the file valid (the temp file is renamed over it).
    save_policy(policy.model_copy(update={"description": "v2"}), target)
    assert load_policy(target).description == "v2"


def test_duplicate_entities_are_dropped_in_order() -> None:
    policy = policy_from_dict({"pii": {"entities": ["PERSON", "EMAIL_ADDRESS", "PERSON"]}})
    assert policy.pii.entities == ["PERSON", "EMAIL_ADDRESS"]


def test_every_field_has_a_description() -> None:
    from pydantic import BaseModel

    def walk(model: type[BaseModel]) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(f"{model.__name__}.{name}")
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                missing.extend(walk(ann))
        return missing

    assert walk(SafetyPolicyConfig) == []
