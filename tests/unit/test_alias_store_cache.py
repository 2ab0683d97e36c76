"""Alias files are parsed once and re-read only when they change (studio/aliases/store.py): with hundreds of
aliases a request must not re-parse every YAML file, and a broken file is logged once, not on every request.
Parses are counted (timings are too noisy on shared machines)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from studio.aliases import store as store_mod
from studio.aliases.resolve import AliasResolver
from studio.aliases.schema import AliasConfig
from studio.aliases.store import AliasStore
from studio.models.registry import ModelRegistry
from studio.settings import BUNDLED_MODEL_ID, Settings

MANY = 500


class ParseCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sources: list[str] = []
        real = store_mod.parse_alias_yaml

        def counting(text: str, source: str = "<text>") -> AliasConfig:
            self.sources.append(source)
            return real(text, source)

        monkeypatch.setattr(store_mod, "parse_alias_yaml", counting)

    def take(self) -> list[str]:
        seen, self.sources = self.sources, []
        return seen


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> ParseCounter:
    return ParseCounter(monkeypatch)


@pytest.fixture
def resolver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AliasResolver:
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(home=tmp_path, hf_cache=tmp_path / "hub")
    (tmp_path / "aliases").mkdir()
    return AliasResolver(AliasStore(tmp_path / "aliases"), ModelRegistry(settings))


def write_alias(folder: Path, name: str, temperature: str = "0.1", age_s: float = 0.0) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"alias: {name}\nrepo: {BUNDLED_MODEL_ID}\nrequest_params:\n  temperature: {temperature}\n", encoding="utf-8"
    )
    if age_s:  # written a while ago (by hand, or by an earlier run of the studio)
        stamp = path.stat().st_mtime - age_s
        os.utime(path, (stamp, stamp))
    return path


def temperature(resolver: AliasResolver, name: str) -> float | None:
    alias = resolver.resolve(name).alias
    assert alias is not None
    return alias.request_params.temperature


def test_a_second_resolution_parses_no_unchanged_file(resolver: AliasResolver, parses: ParseCounter) -> None:
    folder = resolver.store.folder
    for i in range(MANY):
        write_alias(folder, f"a{i:03d}", age_s=60)
    assert temperature(resolver, "a250") == 0.1
    assert len(parses.take()) == MANY
    for name in ("a251", "a499", "a000"):
        assert temperature(resolver, name) == 0.1
    assert resolver.store.file_of("a007") == folder / "a007.yaml"
    assert len(resolver.list_aliases()) >= MANY
    assert parses.take() == []


def test_files_just_written_are_not_parsed_again_either(resolver: AliasResolver, parses: ParseCounter) -> None:
    folder = resolver.store.folder
    for i in range(20):
        write_alias(folder, f"a{i:03d}")  # fresh files: their time stamps alone cannot be trusted yet
    resolver.resolve("a001")
    assert len(parses.take()) == 20
    resolver.resolve("a002")
    assert parses.take() == []


def test_an_edited_file_is_picked_up_at_once(resolver: AliasResolver, parses: ParseCounter) -> None:
    folder = resolver.store.folder
    for i in range(50):
        write_alias(folder, f"a{i:03d}", age_s=60)
    assert temperature(resolver, "a010") == 0.1
    parses.take()
    # rewritten in place by hand, same size
    write_alias(folder, "a010", temperature="0.7")
    assert temperature(resolver, "a010") == 0.7
    assert parses.take() == [str(folder / "a010.yaml")]
    # an alias saved through the store (a new file renamed over the old one)
    cfg = resolver.store.require("a011").model_copy(update={"chat_template": "chatml"})
    resolver.store.save(cfg, replace="a011")
    assert resolver.resolve("a011").chat_template == "chatml"


def test_an_edit_within_one_time_stamp_tick_is_still_seen(resolver: AliasResolver) -> None:
    path = write_alias(resolver.store.folder, "quick")
    written = path.stat()
    assert temperature(resolver, "quick") == 0.1
    # a script rewrites it at once, same size, so fast that the file system keeps the same time stamp
    write_alias(resolver.store.folder, "quick", temperature="0.7")
    os.utime(path, ns=(written.st_atime_ns, written.st_mtime_ns))
    assert path.stat().st_size == written.st_size and path.stat().st_ino == written.st_ino
    assert temperature(resolver, "quick") == 0.7


def test_new_and_deleted_files_are_seen_at_once(resolver: AliasResolver) -> None:
    folder = resolver.store.folder
    for i in range(5):
        write_alias(folder, f"a{i:03d}", age_s=60)
    assert {v.config.alias for v in resolver.list_aliases() if v.source == "user"} == {f"a{i:03d}" for i in range(5)}
    write_alias(folder, "late")
    (folder / "a003.yaml").unlink()
    assert temperature(resolver, "late") == 0.1
    assert {v.config.alias for v in resolver.list_aliases() if v.source == "user"} == {
        "a000",
        "a001",
        "a002",
        "a004",
        "late",
    }
    assert resolver.store.get("a003") is None


def test_a_broken_file_is_logged_once_per_change(
    resolver: AliasResolver, parses: ParseCounter, caplog: pytest.LogCaptureFixture
) -> None:
    folder = resolver.store.folder
    write_alias(folder, "good", age_s=60)
    broken = folder / "broken.yaml"
    broken.write_text("alias: broken\nrepo: [unclosed\n", encoding="utf-8")
    caplog.set_level(logging.WARNING, logger="studio.aliases.store")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if str(broken) in r.getMessage()]

    for _ in range(20):
        assert temperature(resolver, "good") == 0.1
        assert [b.path for b in resolver.store.load_all()[1]] == [broken]  # still listed as broken every time
    assert len(warnings()) == 1

    broken.write_text("alias: broken\nrepo: [still unclosed\n", encoding="utf-8")
    for _ in range(5):
        resolver.resolve("good")
    assert len(warnings()) == 2
