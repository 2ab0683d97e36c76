"""User alias files on disk (studio/aliases/store.py): the documented YAML format both ways, file names,
atomic writes, broken files, conflicts, rename and delete. No model is needed: the store never looks one up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from studio.aliases import store as store_mod
from studio.aliases.schema import AliasConfig
from studio.aliases.store import AliasStore, alias_filename, dump_alias_yaml, parse_alias_yaml
from studio.errors import ConflictError, NotFoundError, ValidationError

# The example of ARCHITECTURE.md "Alias file", comments included, as a user would write it by hand.
DOCUMENTED_FILE = """\
alias: llama3:instruct
repo: QuantFactory/Meta-Llama-3-8B-Instruct-GGUF
filename: Meta-Llama-3-8B-Instruct.Q8_0.gguf
snapshot: 5007652f7a641fe7170e0bad4f63839419bd9213
chat_template: llama3          # built-in id, "embedded", or a repo whose tokenizer_config.json has one
context_params: {n_keep: 24}   # n_threads n_ctx n_parallel n_predict n_keep n_seed (+ engine, dtype, ...)
request_params:                # temperature top_p top_k frequency_penalty presence_penalty
  stop: ["<|eot_id|>"]         # repetition_penalty max_tokens stop seed user
"""


@pytest.fixture
def store(tmp_path: Path) -> AliasStore:
    return AliasStore(tmp_path / "aliases")


def _cfg(name: str = "chat", **fields: object) -> AliasConfig:
    return AliasConfig.model_validate({"alias": name, "repo": "org/model", **fields})


def _files(folder: Path) -> dict[str, bytes]:
    """Every entry in the folder (hidden temporary files included) with its bytes."""
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


# -- the file format ---------------------------------------------------------------------------------------------
def test_hand_written_documented_file_loads(store: AliasStore) -> None:
    store.folder.mkdir()
    (store.folder / "llama3--instruct.yaml").write_text(DOCUMENTED_FILE, encoding="utf-8")

    aliases, broken = store.load_all()

    assert broken == []
    assert len(aliases) == 1
    cfg = aliases[0]
    assert cfg.alias == "llama3:instruct"
    assert cfg.repo == "QuantFactory/Meta-Llama-3-8B-Instruct-GGUF"
    assert cfg.filename == "Meta-Llama-3-8B-Instruct.Q8_0.gguf"
    assert cfg.snapshot == "5007652f7a641fe7170e0bad4f63839419bd9213"
    assert cfg.chat_template == "llama3"
    assert cfg.context_params.n_keep == 24
    assert cfg.request_params.stop == ["<|eot_id|>"]
    assert store.get("llama3:instruct") == cfg


def test_hand_written_yml_file_with_any_name_loads(store: AliasStore) -> None:
    store.folder.mkdir()
    (store.folder / "my favourite.yml").write_text("alias: fav\nrepo: org/model\n", encoding="utf-8")

    assert [c.alias for c in store.load_all()[0]] == ["fav"]


def test_saved_file_has_the_documented_keys_in_order_and_omits_unset_ones(store: AliasStore) -> None:
    cfg = parse_alias_yaml(DOCUMENTED_FILE)

    path = store.save(cfg)

    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert list(data) == [
        "alias",
        "repo",
        "filename",
        "snapshot",
        "chat_template",
        "context_params",
        "request_params",
    ]
    assert data["context_params"] == {"n_keep": 24}
    assert data["request_params"] == {"stop": ["<|eot_id|>"]}
    assert "null" not in text  # unset fields are left out, not written as null


def test_minimal_alias_is_saved_as_just_alias_and_repo(store: AliasStore) -> None:
    path = store.save(_cfg("tiny"))

    assert path.read_text(encoding="utf-8") == "alias: tiny\nrepo: org/model\n"


def test_yaml_round_trip_keeps_every_field(store: AliasStore) -> None:
    cfg = _cfg(
        "full",
        filename="model.Q4_K_M.gguf",
        snapshot="abc123",
        chat_template="chatml",
        context_params={
            "n_threads": 4,
            "n_ctx": 4096,
            "n_parallel": 2,
            "n_predict": -1,
            "n_keep": 8,
            "n_seed": 42,
            "engine": "transformers",
            "dtype": "float32",
        },
        request_params={
            "temperature": 0.3,
            "top_p": 0.95,
            "top_k": 40,
            "frequency_penalty": 0.5,
            "presence_penalty": -0.5,
            "repetition_penalty": 1.1,
            "max_tokens": 128,
            "stop": ["</s>", "\n\nUser:"],
            "seed": 7,
            "user": "ünïcode-user",
        },
    )

    path = store.save(cfg)

    assert parse_alias_yaml(path.read_text(encoding="utf-8"), str(path)) == cfg
    assert store.get("full") == cfg
    assert "ünïcode-user" in path.read_text(encoding="utf-8")  # written as UTF-8, not escaped
    assert yaml.safe_load(dump_alias_yaml(cfg)) == cfg.to_yaml_dict()


# -- file names --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "filename"),
    [
        ("llama3:instruct", "llama3--instruct.yaml"),
        ("plain_name-1.0", "plain_name-1.0.yaml"),
        ("two words", "two--words.yaml"),
        ("a:b@c", "a--b--c.yaml"),
        ("café", "caf--.yaml"),
        ("repo:Q4_K_M", "repo--Q4_K_M.yaml"),
    ],
)
def test_alias_filename_replaces_every_char_outside_the_safe_set(name: str, filename: str) -> None:
    assert alias_filename(name) == filename


def test_save_writes_the_sanitised_file_name(store: AliasStore) -> None:
    path = store.save(_cfg("llama3:instruct"))

    assert path == store.folder / "llama3--instruct.yaml"
    assert sorted(_files(store.folder)) == ["llama3--instruct.yaml"]


# -- atomic writes -----------------------------------------------------------------------------------------------
def test_failed_rename_leaves_no_partial_file_and_the_old_file_unchanged(
    store: AliasStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(_cfg("chat", request_params={"temperature": 0.2}))
    before = _files(store.folder)

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.save(_cfg("chat", request_params={"temperature": 1.5}), replace="chat")
    with pytest.raises(OSError, match="disk full"):
        store.save(_cfg("other"))

    assert _files(store.folder) == before
    monkeypatch.undo()
    assert store.get("chat") == _cfg("chat", request_params={"temperature": 0.2})


def test_failure_half_way_through_writing_leaves_nothing_behind(
    store: AliasStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(_cfg("chat"))
    before = _files(store.folder)

    def broken_fsync(fd: int) -> None:
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)  # the temporary file already holds the text here
    with pytest.raises(OSError, match="I/O error"):
        store.save(_cfg("second", request_params={"stop": ["x"]}))

    assert _files(store.folder) == before


def test_failed_serialisation_writes_nothing(store: AliasStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.save(_cfg("chat"))
    before = _files(store.folder)

    def broken_dump(cfg: AliasConfig) -> str:
        raise RuntimeError("cannot serialise")

    monkeypatch.setattr(store_mod, "dump_alias_yaml", broken_dump)
    with pytest.raises(RuntimeError):
        store.save(_cfg("chat", chat_template="chatml"), replace="chat")

    assert _files(store.folder) == before


# -- broken files ------------------------------------------------------------------------------------------------
def test_malformed_yaml_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    text = "alias: x\nrepo: y\nrequest_params:\n  temperature: 0.2\n   top_p: 0.5\n"

    with pytest.raises(ValidationError) as info:
        parse_alias_yaml(text, str(tmp_path / "bad.yaml"))

    assert str(tmp_path / "bad.yaml") in info.value.message
    assert "line 5" in info.value.message


def test_a_broken_file_is_reported_and_the_others_still_load(store: AliasStore) -> None:
    store.save(_cfg("good"))
    bad = store.folder / "bad.yaml"
    bad.write_text("alias: bad\nrepo: org/model\ncontext_params: {n_ctx: 2048\n", encoding="utf-8")
    unknown_key = store.folder / "typo.yaml"
    unknown_key.write_text("alias: typo\nrepo: org/model\ntemprature: 0.5\n", encoding="utf-8")
    not_a_mapping = store.folder / "list.yaml"
    not_a_mapping.write_text("- alias: x\n", encoding="utf-8")

    aliases, broken = store.load_all()

    assert [c.alias for c in aliases] == ["good"]
    by_path = {b.path: b.error for b in broken}
    assert set(by_path) == {bad, unknown_key, not_a_mapping}
    assert str(bad) in by_path[bad] and "line 4" in by_path[bad]
    assert "temprature" in by_path[unknown_key]
    assert str(not_a_mapping) in by_path[not_a_mapping]


def test_a_missing_folder_means_no_aliases(store: AliasStore) -> None:
    assert store.load_all() == ([], [])
    assert store.get("anything") is None


# -- conflicts, edit, delete -------------------------------------------------------------------------------------
def test_duplicate_alias_name_is_a_conflict_and_keeps_the_first(store: AliasStore) -> None:
    store.save(_cfg("chat", chat_template="chatml"))

    with pytest.raises(ConflictError) as info:
        store.save(_cfg("chat", chat_template="llama3"))

    assert info.value.status_code == 409
    assert info.value.param == "alias"
    assert store.require("chat").chat_template == "chatml"


def test_two_names_that_sanitise_to_the_same_file_conflict(store: AliasStore) -> None:
    store.save(_cfg("a:b"))

    with pytest.raises(ConflictError, match=r"a--b\.yaml"):
        store.save(_cfg("a b"))

    assert store.require("a:b").alias == "a:b"
    assert store.get("a b") is None


def test_edit_in_place_overwrites(store: AliasStore) -> None:
    store.save(_cfg("chat", request_params={"temperature": 0.2}))

    store.save(_cfg("chat", request_params={"temperature": 0.9}), replace="chat")

    assert sorted(_files(store.folder)) == ["chat.yaml"]
    assert store.require("chat").request_params.temperature == 0.9


def test_edit_with_rename_removes_the_old_file(store: AliasStore) -> None:
    store.save(_cfg("old:name", chat_template="chatml"))

    path = store.save(_cfg("new-name", chat_template="chatml"), replace="old:name")

    assert path == store.folder / "new-name.yaml"
    assert sorted(_files(store.folder)) == ["new-name.yaml"]
    assert store.get("old:name") is None
    assert store.require("new-name").chat_template == "chatml"


def test_rename_onto_an_existing_alias_is_a_conflict_and_changes_nothing(store: AliasStore) -> None:
    store.save(_cfg("a"))
    store.save(_cfg("b"))
    before = _files(store.folder)

    with pytest.raises(ConflictError):
        store.save(_cfg("b", chat_template="chatml"), replace="a")

    assert _files(store.folder) == before


def test_delete_removes_the_file(store: AliasStore) -> None:
    store.save(_cfg("llama3:instruct"))
    store.save(_cfg("keep"))

    path = store.delete("llama3:instruct")

    assert path == store.folder / "llama3--instruct.yaml"
    assert not path.exists()
    assert [c.alias for c in store.load_all()[0]] == ["keep"]


def test_delete_unknown_alias_is_not_found_listing_the_known_ones(store: AliasStore) -> None:
    store.save(_cfg("keep"))

    with pytest.raises(NotFoundError, match="keep") as info:
        store.delete("nope")

    assert info.value.status_code == 404
    assert (store.folder / "keep.yaml").exists()


def test_delete_a_hand_written_alias_whose_file_has_another_name(store: AliasStore) -> None:
    store.folder.mkdir()
    (store.folder / "mine.yml").write_text("alias: fav\nrepo: org/model\n", encoding="utf-8")

    store.delete("fav")

    assert store.get("fav") is None
    assert _files(store.folder) == {}


def test_rename_a_hand_written_alias_whose_file_has_another_name(store: AliasStore) -> None:
    store.folder.mkdir()
    (store.folder / "mine.yml").write_text("alias: fav\nrepo: org/model\n", encoding="utf-8")

    store.save(_cfg("favourite"), replace="fav")

    assert [c.alias for c in store.load_all()[0]] == ["favourite"]
