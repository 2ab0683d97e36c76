"""The studio's error tree, the OpenAI error body, and how bad sampling parameters are reported."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from studio.errors import (
    AuthenticationError,
    BackendUnavailableError,
    ConflictError,
    GenerationError,
    ModelLoadError,
    ModelNotFoundError,
    NotFoundError,
    ServerError,
    StudioError,
    UserError,
    ValidationError,
)
from studio.inference.params import (
    MAX_STOP_SEQUENCES,
    MAX_TOP_LOGPROBS,
    SamplingParams,
    field_help,
    field_range,
    make_sampling_params,
    validation_error_from_pydantic,
)
from studio.settings import generation_defaults

# -- the tree ------------------------------------------------------------------------------------------------
TREE = [
    (UserError, StudioError),
    (ValidationError, UserError),
    (NotFoundError, UserError),
    (ModelNotFoundError, NotFoundError),
    (ConflictError, UserError),
    (AuthenticationError, UserError),
    (ServerError, StudioError),
    (ModelLoadError, ServerError),
    (BackendUnavailableError, ServerError),
    (GenerationError, ServerError),
]


@pytest.mark.parametrize(("child", "parent"), TREE)
def test_error_tree(child: type[StudioError], parent: type[StudioError]) -> None:
    err = child("boom")
    assert isinstance(err, parent)
    assert isinstance(err, StudioError)
    assert isinstance(err, Exception)


@pytest.mark.parametrize("server", [ServerError, ModelLoadError, BackendUnavailableError, GenerationError])
def test_server_errors_are_not_user_errors(server: type[StudioError]) -> None:
    assert not isinstance(server("x"), UserError)


@pytest.mark.parametrize(
    ("cls", "status", "error_type"),
    [
        (StudioError, 500, "server_error"),
        (UserError, 400, "invalid_request_error"),
        (ValidationError, 400, "invalid_request_error"),
        (NotFoundError, 404, "invalid_request_error"),
        (ModelNotFoundError, 404, "invalid_request_error"),
        (ConflictError, 409, "invalid_request_error"),
        (AuthenticationError, 401, "authentication_error"),
        (ServerError, 500, "server_error"),
        (ModelLoadError, 500, "server_error"),
        (BackendUnavailableError, 503, "server_error"),
        (GenerationError, 500, "server_error"),
    ],
)
def test_status_codes_and_types(cls: type[StudioError], status: int, error_type: str) -> None:
    err = cls("x")
    assert err.status_code == status
    assert err.error_type == error_type
    assert err.to_openai()["error"]["type"] == error_type  # type: ignore[index]


def test_to_openai_shape() -> None:
    err = ValidationError("temperature must be at most 2", param="temperature", code="out_of_range")
    body = err.to_openai()
    assert body == {
        "error": {
            "message": "temperature must be at most 2",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "out_of_range",
        }
    }
    assert json.loads(json.dumps(body)) == body


def test_to_openai_defaults_param_and_code_to_none() -> None:
    body = GenerationError("engine crashed").to_openai()
    assert set(body) == {"error"}
    assert body["error"] == {"message": "engine crashed", "type": "server_error", "param": None, "code": None}


def test_str_is_the_message() -> None:
    assert str(ConflictError("alias 'x' already exists")) == "alias 'x' already exists"


def test_model_not_found_defaults() -> None:
    err = ModelNotFoundError("model 'x' not found")
    assert err.status_code == 404
    assert err.param == "model"
    assert err.code == "model_not_found"
    assert err.to_openai()["error"]["code"] == "model_not_found"  # type: ignore[index]
    assert ModelNotFoundError("m", param="base_model").param == "base_model"


# -- sampling params → ValidationError -----------------------------------------------------------------------
def test_temperature_out_of_range_names_field_and_bound() -> None:
    with pytest.raises(ValidationError) as info:
        make_sampling_params(temperature=5)
    err = info.value
    assert err.param == "temperature"
    assert err.status_code == 400
    assert "temperature" in err.message
    assert "2" in err.message
    assert "5" in err.message  # what the user sent


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("temperature", -0.1),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", -1),
        ("max_tokens", 0),
        ("repetition_penalty", 0.0),
        ("frequency_penalty", 2.5),
        ("presence_penalty", -3),
        ("seed", -1),
        ("top_logprobs", MAX_TOP_LOGPROBS + 1),
    ],
)
def test_out_of_range_fields_are_named(field: str, bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        make_sampling_params(**{field: bad})
    assert info.value.param == field
    assert f"'{field}'" in info.value.message


def test_top_logprobs_limit_is_20() -> None:
    assert make_sampling_params(top_logprobs=20).top_logprobs == 20
    with pytest.raises(ValidationError) as info:
        make_sampling_params(top_logprobs=21)
    assert info.value.param == "top_logprobs"
    assert "20" in info.value.message


def test_unknown_param_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        make_sampling_params(temprature=0.5)
    assert info.value.param == "temprature"
    assert "unknown parameter" in info.value.message


def test_wrong_type_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        make_sampling_params(max_tokens="lots")
    assert info.value.param == "max_tokens"
    assert "'lots'" in info.value.message


def test_stop_string_becomes_list() -> None:
    assert make_sampling_params(stop="\nUser:").stop == ["\nUser:"]


def test_stop_list_is_kept() -> None:
    assert make_sampling_params(stop=["a", "b"]).stop == ["a", "b"]


def test_empty_stop_string_in_list_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        make_sampling_params(stop=["ok", ""])
    assert info.value.param == "stop"
    assert "empty" in info.value.message


def test_bare_empty_stop_string_means_no_stop_sequences() -> None:
    assert make_sampling_params(stop="").stop == []


def test_too_many_stop_sequences_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        make_sampling_params(stop=[str(i) for i in range(MAX_STOP_SEQUENCES + 1)])
    assert info.value.param == "stop"


def test_none_values_fall_back_to_studio_defaults() -> None:
    p = make_sampling_params(temperature=None, top_p=None, stop=None, seed=None)
    d = generation_defaults()
    assert p.temperature == d["temperature"]
    assert p.top_p == d["top_p"]
    assert p.max_tokens == d["max_tokens"]
    assert p.stop == []


def test_defaults_lists_are_not_shared() -> None:
    a = make_sampling_params()
    a.stop.append("leak")
    assert make_sampling_params().stop == []


def test_greedy_is_temperature_zero() -> None:
    assert make_sampling_params(temperature=0).greedy
    assert not make_sampling_params(temperature=0.1).greedy


def test_validation_error_from_pydantic_uses_prefix() -> None:
    class Body(BaseModel):
        n: int

    with pytest.raises(PydanticValidationError) as info:
        Body(n="x")  # type: ignore[arg-type]
    err = validation_error_from_pydantic(info.value, prefix="params.")
    assert isinstance(err, ValidationError)
    assert err.param == "params.n"
    assert "'params.n'" in err.message


def test_validation_error_from_pydantic_missing_field_has_no_got() -> None:
    class Body(BaseModel):
        model: str

    with pytest.raises(PydanticValidationError) as info:
        Body()  # type: ignore[call-arg]
    err = validation_error_from_pydantic(info.value)
    assert err.param == "model"
    assert "got" not in err.message


def test_validation_error_from_pydantic_nested_location() -> None:
    class Msg(BaseModel):
        role: int

    class Body(BaseModel):
        messages: list[Msg]

    with pytest.raises(PydanticValidationError) as info:
        Body(messages=[{"role": 1}, {"role": "x"}])  # type: ignore[list-item]
    assert validation_error_from_pydantic(info.value).param == "messages.1.role"


# -- help text -----------------------------------------------------------------------------------------------
def test_field_help_contains_range() -> None:
    text = field_help("temperature")
    assert "greedy" in text
    assert "Range 0.0–2.0" in text


def test_field_help_without_range_has_no_range() -> None:
    text = field_help("stop")
    assert text
    assert "Range" not in text


def test_field_range_for_sliders() -> None:
    assert field_range("temperature") == (0.0, 2.0)
    assert field_range("top_logprobs") == (0.0, 20.0)
    with pytest.raises(KeyError):
        field_range("stop")


def test_every_field_has_help() -> None:
    for name in SamplingParams.model_fields:
        assert field_help(name), name
