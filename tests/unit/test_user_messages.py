"""Validation errors in the user's words (issue 15, point 8).

One place (``studio/user_messages.py``) turns a pydantic error into a sentence built from the schema's own
field metadata (title, bounds, allowed literals, type); ``ValidationError.message`` keeps the technical wording
the REST API answers with, ``ValidationError.user_message`` carries the sentence the UI shows next to the field.
The UI side (``components/common.py``): the error decorator shows the sentence and logs a user's mistake in one
line without a traceback; ``form_validator`` paints each error on the widget its ``param`` names."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError

from studio.aliases.resolve import AliasResolver, validate_alias
from studio.aliases.schema import AliasConfig, ContextParams
from studio.aliases.service import parse_form_number
from studio.aliases.store import AliasStore
from studio.errors import GenerationError, ValidationError
from studio.inference.params import SamplingParams, make_sampling_params, validation_error_from_pydantic
from studio.models.registry import ModelRegistry
from studio.settings import BUNDLED_MODEL_ID, Settings


def refused(model: type[BaseModel], **data: Any) -> ValidationError:
    with pytest.raises(PydanticValidationError) as info:
        model.model_validate(data)
    return validation_error_from_pydantic(info.value, model=model)


# -- ranges -------------------------------------------------------------------------------------------------
def test_a_value_out_of_range_names_the_field_its_range_and_what_was_entered() -> None:
    err = refused(SamplingParams, temperature=5.0)
    assert err.user_message == "Temperature must be between 0 and 2 (you entered 5)"
    # the REST API's wording and param are unchanged
    assert err.message == "Invalid value for 'temperature': Input should be less than or equal to 2 (got 5.0)"
    assert err.param == "temperature"


def test_range_sentences_follow_the_schema_bounds() -> None:
    assert refused(SamplingParams, temperature=-0.5).user_message == (
        "Temperature must be between 0 and 2 (you entered -0.5)"
    )
    assert refused(SamplingParams, top_p=0).user_message == "Top-p must be more than 0 and at most 1 (you entered 0)"
    # an upper bound no one would type (2**63 - 1) is left out of the sentence
    assert refused(SamplingParams, seed=-1).user_message == "Seed must be at least 0 (you entered -1)"


def test_make_sampling_params_carries_the_sentence() -> None:
    with pytest.raises(ValidationError) as info:
        make_sampling_params(top_k=5000)
    assert info.value.user_message == "Top-k must be between 0 and 1000 (you entered 5000)"
    assert info.value.param == "top_k"


# -- literals, types, missing and unknown fields ------------------------------------------------------------
def test_a_value_outside_the_allowed_literals_lists_the_choices() -> None:
    assert refused(ContextParams, engine="fast").user_message == (
        "Engine must be one of auto, transformers, vllm, llamacpp, onnxruntime, remote (you entered 'fast')"
    )


@pytest.mark.parametrize(
    ("field", "value", "sentence"),
    [
        ("top_k", "many", "Top-k must be a whole number (you entered 'many')"),
        ("top_k", 2.5, "Top-k must be a whole number (you entered 2.5)"),
        ("temperature", "hot", "Temperature must be a number (you entered 'hot')"),
        ("logprobs", "maybe", "Log probabilities must be true or false (you entered 'maybe')"),
        ("stop", [""], "Stop sequences must not be empty strings"),
        ("stop", [str(i) for i in range(9)], "Stop sequences can hold at most 8 items (you gave 9)"),
    ],
)
def test_type_and_shape_errors_say_what_the_field_takes(field: str, value: Any, sentence: str) -> None:
    assert refused(SamplingParams, **{field: value}).user_message == sentence


def test_a_missing_field_is_required_by_its_title() -> None:
    class JobSpec(BaseModel):
        dataset: str = Field(title="Training data")
        mode: Literal["a", "b"] = "a"

    assert refused(JobSpec).user_message == "Training data is required"
    # without the model the field's name stands in for its title
    with pytest.raises(PydanticValidationError) as info:
        JobSpec.model_validate({})
    assert validation_error_from_pydantic(info.value).user_message == "Dataset is required"


def test_an_unknown_field_suggests_the_close_one() -> None:
    err = refused(SamplingParams, temprature=1.0)
    assert err.user_message == "Unknown setting 'temprature'; did you mean 'temperature'?"
    assert err.param == "temprature"
    far = refused(ContextParams, colour="red").user_message
    assert far.startswith("Unknown setting 'colour'; the settings are: n_threads, n_ctx")


def test_nested_fields_are_found_through_the_schema() -> None:
    err = refused(AliasConfig, alias="a", repo="r", context_params={"dtype": "int3"})
    assert err.param == "context_params.dtype"
    # no title: the path a config file spells, since "dtype" alone may be ambiguous in a sectioned config
    assert err.user_message == (
        "context_params.dtype must be one of auto, bfloat16, float16, float32 (you entered 'int3')"
    )

    class Section(BaseModel):
        rate: float = Field(1.0, ge=0, le=1, title="Sampling rate")

    class Config(BaseModel):
        section: Section

    assert refused(Config, section={"rate": 3}).user_message == "Sampling rate must be between 0 and 1 (you entered 3)"


# -- the Aliases form --------------------------------------------------------------------------------------
@pytest.fixture
def resolver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AliasResolver:
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(home=tmp_path, hf_cache=tmp_path / "hub")
    return AliasResolver(AliasStore(tmp_path / "aliases"), ModelRegistry(settings))


def test_alias_validation_keeps_the_api_wording_and_adds_the_sentence(resolver: AliasResolver) -> None:
    data = {"alias": "hot", "repo": BUNDLED_MODEL_ID, "request_params": {"temperature": 5.0}}
    _, report = validate_alias(data, resolver)
    [err] = report.errors
    assert err.param == "request_params.temperature"
    assert err.message == (
        "Invalid value for 'request_params.temperature': Input should be less than or equal to 2 (got 5.0)"
    )
    assert err.user_message == "Temperature must be between 0 and 2 (you entered 5)"


def test_a_form_number_that_is_no_number_is_explained_by_its_label() -> None:
    with pytest.raises(ValidationError) as info:
        parse_form_number("lots", "request_params.top_p")
    assert info.value.user_message == "Top-p must be a number (you entered 'lots')"
    assert info.value.message == "'request_params.top_p' must be a number; got 'lots'"
    with pytest.raises(ValidationError) as info:
        parse_form_number("2.5", "context_params.n_ctx", integer=True)
    # a field with no title goes by its name, as the form labels it
    assert info.value.user_message == "n_ctx must be a whole number (you entered 2.5)"


def test_other_forms_get_the_sentences_too() -> None:
    from studio.safety.policy import policy_from_dict
    from studio.training.config import parse_config

    with pytest.raises(ValidationError) as info:
        parse_config({"name": "x", "dataset": "d", "lora_r": 0, "epochs": "two"})
    assert info.value.message.startswith("invalid fine-tuning config: lora_r: Input should be")  # unchanged
    assert info.value.user_message == (
        "lora_r must be between 1 and 512 (you entered 0); Epochs must be a number (you entered 'two')"
    )
    with pytest.raises(ValidationError) as info:
        policy_from_dict({"toxicity": {"threshold": 2}}, "policy form")
    assert info.value.param == "toxicity.threshold"
    assert info.value.user_message == "policy form: toxicity.threshold must be between 0 and 1 (you entered 2)"


def test_a_hand_written_message_is_already_in_the_users_words() -> None:
    err = ValidationError("type the prompt to export first", param="prompt")
    assert err.user_message == err.message == "type the prompt to export first"


# -- the UI: one decorator, one validator --------------------------------------------------------------------
def test_the_decorator_shows_the_sentence_and_logs_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    import gradio as gr

    from components.common import handle_errors

    @handle_errors
    def save() -> None:
        make_sampling_params(temperature=5.0)

    caplog.set_level(logging.INFO)
    with pytest.raises(gr.Error) as shown:
        save()
    assert shown.value.message == "Temperature must be between 0 and 2 (you entered 5)"
    assert shown.value.print_exception is False  # Gradio prints no traceback for it
    [record] = [r for r in caplog.records if r.name == "components.common"]
    assert record.levelno == logging.INFO and record.exc_info is None
    assert "temperature" in record.getMessage()


def test_a_server_error_keeps_its_traceback() -> None:
    import gradio as gr

    from components.common import handle_errors

    @handle_errors
    def generate() -> None:
        raise GenerationError("the engine crashed")

    with pytest.raises(gr.Error) as shown:
        generate()
    assert shown.value.print_exception is True


def test_the_form_validator_paints_each_error_on_its_field() -> None:
    from components.common import form_validator

    def check(name: str, temperature: float, engine: str) -> list[ValidationError]:
        return [
            ValidationError("technical", param="request_params.temperature", user_message="Temperature is off"),
            ValidationError("technical", param="context_params.engine", user_message="Engine is off"),
            ValidationError("technical", param="somewhere.else", user_message="not a field of this form"),
        ]

    validator = form_validator(check, ["alias", "request_params.temperature", "context_params.engine"])
    painted = validator("x", 5.0, "fast")
    assert [(v["is_valid"], v["message"]) for v in painted] == [
        (True, ""),
        (False, "Temperature is off"),
        (False, "Engine is off"),
    ]


def test_the_form_validator_leaves_other_errors_to_the_handler() -> None:
    from components.common import form_validator

    def check(name: str) -> None:
        raise ValidationError("click a row first", param="alias")

    assert form_validator(check, ["alias"])("")["message"] == "click a row first"
    # a problem no field of the form owns: the handler runs and shows it as a toast
    assert form_validator(check, ["prompt"])("")["is_valid"] is True
