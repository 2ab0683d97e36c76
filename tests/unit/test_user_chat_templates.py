"""A user's own chat templates: ``STUDIO_HOME/chat_templates/<name>.jinja`` files are listed by name (the Aliases
form's template choices, the error that lists known templates) and used by that name; an alias may also give a
path to a ``.jinja`` file, which must lie inside STUDIO_HOME, ``STUDIO_MODEL_DIRS`` or the Hugging Face cache
(anything else is refused with a 403 before the disk is looked at, and the message reveals no outside path).

Unit tier: temporary STUDIO_HOME per test, no model loaded (the bundled model is only found, for alias checks).
The template reaching the model's tokens is tested in tests/integration/test_chat_template_parity.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from studio.aliases.resolve import AliasResolver, validate_alias
from studio.aliases.store import AliasStore
from studio.aliases.templates import (
    BUILTIN_TEMPLATES,
    builtin_template,
    list_user_templates,
    render_chat_template,
    resolve_template_source,
    template_choices,
)
from studio.errors import ForbiddenError, ValidationError
from studio.models.registry import ModelRegistry
from studio.settings import BUNDLED_MODEL_ID, Settings

HOUSE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] | trim }}{{ eos_token }}{% endfor %}"
MESSAGES = [{"role": "user", "content": " Hi "}]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    settings = Settings(home=home, hf_cache=home / "hub")
    settings.ensure_dirs()
    return settings


def write(path: Path, text: str = HOUSE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def resolve(spec: str, settings: Settings) -> str | None:
    source, stops = resolve_template_source(spec, model_dir=None, hf_cache=settings.hf_cache_dir, settings=settings)
    assert stops == []  # only built-ins bring default stops
    return source


# -- listed ---------------------------------------------------------------------------------------------------------
def test_user_templates_are_listed_by_name_after_the_builtins(settings: Settings) -> None:
    folder = settings.home / "chat_templates"
    write(folder / "house-style.jinja")
    write(folder / "alpaca_v2.jinja")
    write(folder / "notes.txt", "not a template")
    (folder / "nested.jinja").mkdir()

    assert list_user_templates(settings) == ["alpaca_v2", "house-style"]
    assert template_choices(settings) == ["embedded", *BUILTIN_TEMPLATES, "alpaca_v2", "house-style"]


def test_no_folder_means_no_user_templates(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "fresh", hf_cache=tmp_path / "hub")
    assert list_user_templates(settings) == []
    assert template_choices(settings) == ["embedded", *BUILTIN_TEMPLATES]


def test_a_file_named_like_a_builtin_does_not_replace_it(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    folder = settings.home / "chat_templates"
    write(folder / "Llama3.jinja", "HIJACKED")
    write(folder / "embedded.jinja", "HIJACKED")
    write(folder / ".hidden.jinja")
    write(folder / "mine.jinja")

    with caplog.at_level(logging.WARNING, logger="studio.aliases.templates"):
        assert list_user_templates(settings) == ["mine"]
    assert "built-in chat template" in caplog.text
    source, stops = resolve_template_source("llama3", model_dir=None, hf_cache=settings.hf_cache_dir, settings=settings)
    assert source == builtin_template("llama3") and stops == ["<|eot_id|>"]


def test_the_unknown_template_error_lists_the_users_templates(settings: Settings) -> None:
    write(settings.home / "chat_templates" / "house-style.jinja")
    with pytest.raises(ValidationError) as info:
        resolve("house_style", settings)
    assert info.value.param == "chat_template"
    assert "house-style" in info.value.message and "$STUDIO_HOME/chat_templates" in info.value.message
    assert str(settings.home) not in info.value.message


# -- used -------------------------------------------------------------------------------------------------------------
def test_a_user_template_is_used_by_name(settings: Settings) -> None:
    write(settings.home / "chat_templates" / "house-style.jinja")
    source = resolve("house-style", settings)
    assert source == HOUSE
    assert render_chat_template(source, MESSAGES, eos_token="</s>") == "<user>Hi</s>"


@pytest.mark.parametrize(
    "spec",
    ["mine.jinja", "chat_templates/mine.jinja", "templates/team.jinja", "./templates/team.jinja", "ABSOLUTE"],
)
def test_a_path_inside_studio_home_is_used(settings: Settings, spec: str) -> None:
    write(settings.home / "chat_templates" / "mine.jinja")
    team = write(settings.home / "templates" / "team.jinja")
    assert resolve(str(team) if spec == "ABSOLUTE" else spec, settings) == HOUSE


def test_a_path_in_a_model_folder_is_used(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models-elsewhere"
    template = write(models / "org-model" / "chat.jinja")
    monkeypatch.setenv("STUDIO_MODEL_DIRS", str(models))
    with_models = Settings(home=settings.home, hf_cache=settings.hf_cache_dir)
    assert resolve(str(template), with_models) == HOUSE


# -- refused ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("exists", [True, False])
@pytest.mark.parametrize("spec", ["OUTSIDE", "../../outside.jinja", "chat_templates/../../../outside.jinja"])
def test_a_path_outside_the_roots_is_refused(settings: Settings, tmp_path: Path, spec: str, exists: bool) -> None:
    outside = tmp_path / "outside.jinja"  # next to STUDIO_HOME, not in it
    if exists:
        write(outside)
    text = str(outside) if spec == "OUTSIDE" else spec
    with pytest.raises(ForbiddenError) as info:
        resolve(text, settings)
    assert info.value.status_code == 403 and info.value.param == "chat_template"
    assert "outside the folders the studio may use" in info.value.message
    assert str(tmp_path) not in info.value.message.replace(text, "")  # names no folder outside STUDIO_HOME


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.jinja", "no file 'missing.jinja'"),
        ("~/chat.jinja", "'~'"),
        ("notes.txt.jinja.bak", "unknown chat template"),
    ],
)
def test_missing_or_malformed_paths_are_validation_errors(settings: Settings, spec: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        resolve(spec, settings)
    assert info.value.param == "chat_template"


def test_an_absolute_path_must_end_with_jinja(settings: Settings) -> None:
    notes = write(settings.home / "notes.txt")
    with pytest.raises(ValidationError, match=r"must end with \.jinja") as info:
        resolve(str(notes), settings)
    assert info.value.param == "chat_template"


def test_a_template_with_a_syntax_error_is_reported_with_its_line(settings: Settings) -> None:
    write(settings.home / "chat_templates" / "broken.jinja", "{% for m in messages %}\n{{ m['content'] }\n")
    with pytest.raises(ValidationError, match=r"\$STUDIO_HOME/chat_templates/broken\.jinja .*line 2") as info:
        resolve("broken", settings)
    assert info.value.param == "chat_template"


def test_an_empty_or_huge_file_is_refused(settings: Settings) -> None:
    write(settings.home / "chat_templates" / "empty.jinja", "  \n")
    with pytest.raises(ValidationError, match="is empty"):
        resolve("empty", settings)
    write(settings.home / "chat_templates" / "huge.jinja", "x" * 1_000_001)
    with pytest.raises(ValidationError, match="larger than"):
        resolve("huge", settings)
    (settings.home / "chat_templates" / "latin1.jinja").write_bytes(b"{{ 'caf\xe9' }}")
    with pytest.raises(ValidationError, match="not UTF-8"):
        resolve("latin1", settings)


# -- in alias validation (the Aliases form, `studio alias validate`) ----------------------------------------------
@pytest.fixture
def resolver(settings: Settings) -> AliasResolver:
    return AliasResolver(AliasStore(settings.home / "aliases"), ModelRegistry(settings))


def test_an_alias_may_name_a_user_template(resolver: AliasResolver, settings: Settings) -> None:
    write(settings.home / "chat_templates" / "house-style.jinja")
    cfg, report = validate_alias({"alias": "chat", "repo": BUNDLED_MODEL_ID, "chat_template": "house-style"}, resolver)
    assert report.ok, [e.message for e in report.errors]
    assert cfg is not None and cfg.chat_template == "house-style"


def test_an_alias_with_a_broken_user_template_is_invalid(resolver: AliasResolver, settings: Settings) -> None:
    write(settings.home / "chat_templates" / "broken.jinja", "{% if %}")
    _, report = validate_alias({"alias": "chat", "repo": BUNDLED_MODEL_ID, "chat_template": "broken"}, resolver)
    assert [e.param for e in report.errors] == ["chat_template"]
    assert "syntax error" in report.errors[0].message


def test_an_alias_with_a_template_path_outside_the_roots_is_refused(resolver: AliasResolver, tmp_path: Path) -> None:
    outside = write(tmp_path / "outside.jinja")
    with pytest.raises(ForbiddenError):
        validate_alias({"alias": "chat", "repo": BUNDLED_MODEL_ID, "chat_template": str(outside)}, resolver)
