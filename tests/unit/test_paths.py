"""Path confinement (studio/paths.py): what a user may name, and what they are told when they may not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from studio.errors import ForbiddenError, ValidationError
from studio.paths import (
    check_user_path_text,
    config_roots,
    confine,
    confine_write,
    describe_roots,
    display_path,
    find_user_path,
    model_roots,
)
from studio.settings import CONFIG_DIR, Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(home=tmp_path / "home", hf_cache=tmp_path / "outside-cache", model_dirs=str(tmp_path / "shelf"))
    s.ensure_dirs()
    return s


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a\x00b", "NUL"),
        ("~", "'~'"),
        ("~nosuchuser/x", "'~'"),
        ("x" * 1025, "longer than 1024"),
        ("models/" + "y" * 256, "longer than 255"),
    ],
)
def test_raw_checks_refuse_before_any_lookup(text: str, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle) as info:
        check_user_path_text(text, param="model")
    assert info.value.status_code == 400 and info.value.param == "model"


@pytest.mark.parametrize("text", ["/", "/etc", "/etc/passwd", "/proc/self", "../../etc", "safety/../../x", "..//.."])
def test_confine_refuses_paths_outside_the_roots(settings: Settings, text: str) -> None:
    with pytest.raises(ForbiddenError) as info:
        confine(text, [settings.home], param="file", where="$STUDIO_HOME")
    assert info.value.status_code == 403
    assert "outside the folders the studio may use ($STUDIO_HOME)" in info.value.message


def test_confine_takes_relative_paths_from_the_base_and_normalises(settings: Settings) -> None:
    got = confine("safety/../safety/./p.yaml", [settings.home], param="p")
    assert got == settings.home / "safety" / "p.yaml"
    assert confine(str(settings.home / "x"), [settings.home], param="p") == settings.home / "x"


def test_a_root_name_prefix_is_not_the_root(settings: Settings) -> None:
    sibling = Path(str(settings.home) + "-evil") / "x"  # /tmp/.../home-evil is not under /tmp/.../home
    with pytest.raises(ForbiddenError):
        confine(sibling, [settings.home], param="p")


def test_symlink_placed_in_a_root_by_the_operator_is_followed(settings: Settings, tmp_path: Path) -> None:
    elsewhere = tmp_path / "big-disk"
    elsewhere.mkdir()
    (settings.home / "models" / "linked").symlink_to(elsewhere, target_is_directory=True)
    # lexically under the root: accepted, and reading through it works
    assert confine("models/linked", [settings.home], param="model") == settings.home / "models" / "linked"


def test_confine_write_needs_the_suffix_and_the_folder(settings: Settings) -> None:
    folder = settings.home / "safety"
    ok = confine_write("strict.yaml", folder, param="policy", suffixes=(".yaml", ".yml"), home=settings.home)
    assert ok == folder / "strict.yaml"
    with pytest.raises(ValidationError, match=r"must end with \.yaml or \.yml"):
        confine_write("evil.py", folder, param="policy", suffixes=(".yaml", ".yml"), home=settings.home)
    with pytest.raises(ForbiddenError):
        confine_write("../plugins/evil.yaml", folder, param="policy", suffixes=(".yaml",), home=settings.home)
    with pytest.raises(ForbiddenError):
        confine_write("/etc/cron.d/x.yaml", folder, param="policy", suffixes=(".yaml",), home=settings.home)


def test_confine_write_never_writes_into_the_plugins_folder(settings: Settings) -> None:
    for target in ("plugins/evil.txt", "plugins/sub/evil.txt", "plugins"):
        with pytest.raises(ForbiddenError, match="plugins folder"):
            confine_write(target, settings.home, param="file", suffixes=(), home=settings.home)
    assert list((settings.home / "plugins").iterdir()) == []


def test_find_user_path_tries_each_base_and_reports_only_the_users_text(settings: Settings) -> None:
    (settings.home / "safety").mkdir()
    mine = settings.home / "safety" / "words.txt"
    mine.write_text("x\n", encoding="utf-8")
    roots, bases = config_roots(settings), [settings.home, CONFIG_DIR.parent]
    where = describe_roots(roots, settings)
    assert where == "$STUDIO_HOME, configs"
    assert find_user_path("safety/words.txt", roots, param="f", bases=bases, where=where) == mine
    shipped = find_user_path("configs/safety/offensive_words.txt", roots, param="f", bases=bases, where=where)
    assert shipped == CONFIG_DIR / "safety" / "offensive_words.txt"
    with pytest.raises(ValidationError) as info:
        find_user_path("safety/absent.txt", roots, param="f", bases=bases, where=where)
    assert info.value.message == "'f': no file 'safety/absent.txt' in $STUDIO_HOME, configs"
    with pytest.raises(ValidationError, match=r"must end with \.txt"):
        find_user_path("safety/words.txt.py", roots, param="f", bases=bases, where=where, suffixes=(".txt",))


@pytest.mark.parametrize("outside", ["/etc/passwd", "/etc/no-such-file", "/proc/self/environ"])
def test_outside_paths_get_the_same_answer_whether_they_exist_or_not(settings: Settings, outside: str) -> None:
    with pytest.raises(ForbiddenError) as info:
        find_user_path(outside, config_roots(settings), param="f", bases=[settings.home], where="$STUDIO_HOME")
    assert info.value.message == f"'f': '{outside}' is outside the folders the studio may use ($STUDIO_HOME)"
    assert str(os.getpid()) not in info.value.message


def test_describe_roots_reveals_nothing_outside_the_home(settings: Settings, tmp_path: Path) -> None:
    text = describe_roots(model_roots(settings), settings)
    assert text == "$STUDIO_HOME, STUDIO_MODEL_DIRS folder 'shelf', the Hugging Face cache"
    assert str(tmp_path) not in text
    assert display_path(settings.home / "safety" / "p.yaml", settings) == "$STUDIO_HOME/safety/p.yaml"
    assert display_path(Path("/etc/passwd"), settings) == "passwd"
