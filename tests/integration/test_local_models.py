"""Models a user brings: a local HF directory, the HF hub cache, a bare path, a broken copy; and the
one-time GGUF conversion, which must never leave half a model behind.

The local-model tests use a tiny random Llama (made here in a few seconds, with the bundled tokenizer and
its chat template), so they exercise the real registry, the real engine and real safetensors files.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from studio.errors import ForbiddenError, ModelLoadError, ServerError
from studio.inference.base import ChatMessage
from studio.inference.manager import EngineManager
from studio.inference.params import make_sampling_params
from studio.models import convert
from studio.models.registry import MARKER_FILE, ModelRegistry
from studio.settings import BUNDLED_MODEL_ID, Settings

pytestmark = pytest.mark.slow

HELLO = [ChatMessage("user", "Hello there")]
BUNDLED_DIR = "HuggingFaceTB--SmolLM2-135M-Instruct"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL", "HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tiny_model(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama saved as safetensors, with the bundled tokenizer (and its chat template)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(studio_home / "models" / BUNDLED_DIR), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    assert (path / "model.safetensors").is_file()
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # float32 so greedy decoding gives the same tokens on every CPU (auto would pick bf16 on some).
    s = Settings(home=tmp_path / "home", hf_cache=tmp_path / "hf-cache", dtype="float32")
    s.ensure_dirs()
    return s


@pytest.fixture
def manager(settings: Settings) -> Iterator[EngineManager]:
    mgr = EngineManager(settings, ModelRegistry(settings))
    yield mgr
    mgr.close()


def _greedy(max_tokens: int) -> Any:
    return make_sampling_params(temperature=0, max_tokens=max_tokens, stop=[])


# -- local models --------------------------------------------------------------------------------------------
def test_model_dropped_into_models_dir_is_listed_and_generates(
    tiny_model: Path, settings: Settings, manager: EngineManager
) -> None:
    shutil.copytree(tiny_model, settings.models_dir / "org--tiny")

    entries = {e.id: e for e in manager.registry.list_models()}
    assert "org/tiny" in entries
    assert entries["org/tiny"].source == "local"
    assert entries["org/tiny"].format == "hf"
    assert entries["org/tiny"].problem is None

    result = manager.chat("org/tiny", HELLO, _greedy(12))
    # Random weights: the reply is gibberish, but it must run until max_tokens (EOS is a 1-in-49k pick).
    assert result.stats.completion_tokens == len(result.tokens) == 12
    assert result.stats.finish_reason == "length"
    assert result.stats.prompt_tokens > 5  # the bundled chat template wrapped the message
    assert [info.model_id for info in manager.loaded()] == ["org/tiny"]


def test_model_in_hf_cache_resolves_by_repo_id_through_refs_main(
    tiny_model: Path, settings: Settings, manager: EngineManager
) -> None:
    repo_dir = settings.hf_cache_dir / "models--org--cached"
    shutil.copytree(tiny_model, repo_dir / "snapshots" / "abc123")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("abc123\n", encoding="utf-8")
    # A newer but incomplete snapshot: picking "the newest" instead of refs/main would make it unusable.
    stale = repo_dir / "snapshots" / "zzz999"
    stale.mkdir()
    (stale / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")

    entry = manager.resolve("org/cached").entry
    assert entry.source == "hf_cache"
    assert entry.snapshot == "abc123"
    assert entry.path == repo_dir / "snapshots" / "abc123"

    result = manager.chat("org/cached", HELLO, _greedy(6))
    assert result.stats.completion_tokens == 6
    assert result.stats.finish_reason == "length"


def test_directory_path_works_as_model_name(tiny_model: Path, settings: Settings, manager: EngineManager) -> None:
    shutil.copytree(tiny_model, settings.models_dir / "org--tiny")
    by_id = manager.chat("org/tiny", HELLO, _greedy(8))
    # a folder named by its path must lie in a model root (here STUDIO_HOME); elsewhere it is refused
    shelf = settings.home / "shelf" / "tiny"
    shutil.copytree(tiny_model, shelf)
    with pytest.raises(ForbiddenError):
        manager.chat(str(tiny_model), HELLO, _greedy(8))

    by_path = manager.chat(str(shelf), HELLO, _greedy(8))

    assert by_path.stats.finish_reason == "length"
    assert by_path.stats.completion_tokens == 8
    # Same weights, greedy decoding: the same tokens whichever way the model was named.
    assert [t.token_id for t in by_path.tokens] == [t.token_id for t in by_id.tokens]
    assert {info.model_id for info in manager.loaded()} == {"org/tiny", str(shelf.resolve())}


def test_unload_removes_model_from_loaded(tiny_model: Path, settings: Settings, manager: EngineManager) -> None:
    shutil.copytree(tiny_model, settings.models_dir / "org--tiny")
    manager.load("org/tiny")
    assert [info.model_id for info in manager.loaded()] == ["org/tiny"]

    assert manager.unload("org/tiny") is True

    assert manager.loaded() == []
    assert manager.unload("org/tiny") is False  # nothing left to unload


def test_invalid_config_json_gives_model_load_error_naming_the_model(
    tiny_model: Path, settings: Settings, manager: EngineManager
) -> None:
    broken = settings.models_dir / "org--badconfig"
    shutil.copytree(tiny_model, broken)
    (broken / "config.json").write_text("{not json", encoding="utf-8")

    with pytest.raises(ModelLoadError, match="org/badconfig"):
        manager.load("org/badconfig")
    assert manager.loaded() == []


def _break_weights(path: Path, how: str) -> None:
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if how == "truncated" else b"\x00not a safetensors file" * 64)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_corrupt_weights_give_model_load_error_naming_the_model(
    tiny_model: Path, settings: Settings, manager: EngineManager, how: str
) -> None:
    broken = settings.models_dir / "org--broken"
    shutil.copytree(tiny_model, broken)
    _break_weights(broken, how)

    with pytest.raises(ModelLoadError, match="org/broken"):
        manager.load("org/broken")
    assert manager.loaded() == []


def test_corrupt_weights_during_chat_give_model_load_error(
    tiny_model: Path, settings: Settings, manager: EngineManager
) -> None:
    broken = settings.models_dir / "org--broken"
    shutil.copytree(tiny_model, broken)
    _break_weights(broken, "truncated")

    with pytest.raises(ServerError) as info:  # today a GenerationError; it should be a ModelLoadError
        manager.chat("org/broken", HELLO, _greedy(4))
    assert isinstance(info.value, ModelLoadError), f"{type(info.value).__name__}: {info.value}"
    assert "org/broken" in str(info.value)


# -- GGUF conversion -----------------------------------------------------------------------------------------
def test_gguf_conversion_is_atomic_and_runs_once_under_concurrency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the weights were written leaves no model and no temp dir; two concurrent callers
    then share a single conversion."""
    import transformers

    settings = Settings(home=tmp_path / "fresh", hf_cache=tmp_path / "hf-cache")
    settings.ensure_dirs()
    entry = ModelRegistry(settings).resolve("default")
    assert entry.id == BUNDLED_MODEL_ID and entry.format == "gguf"
    models = settings.models_dir
    target = models / BUNDLED_DIR

    # 1. Crash while saving the tokenizer, i.e. after model.save_pretrained has written the weights.
    crashed_in: list[Path] = []
    real_from_pretrained = transformers.AutoTokenizer.from_pretrained

    def tokenizer_that_crashes_on_save(*args: Any, **kwargs: Any) -> Any:
        tok = real_from_pretrained(*args, **kwargs)

        def crash(save_directory: str, *a: Any, **kw: Any) -> None:
            crashed_in.append(Path(save_directory))
            assert list(Path(save_directory).glob("*.safetensors")), "weights should be written by now"
            raise RuntimeError("simulated crash mid-conversion")

        tok.save_pretrained = crash
        return tok

    with monkeypatch.context() as m:
        m.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer_that_crashes_on_save)
        with pytest.raises(RuntimeError, match="simulated crash"):
            convert.prepare_model(entry, models)

    assert len(crashed_in) == 1
    assert crashed_in[0].parent == models and crashed_in[0].name.startswith(".tmp-")
    assert not target.exists()
    assert not crashed_in[0].exists()
    assert list(models.glob(".tmp-*")) == []
    assert [e.id for e in ModelRegistry(settings).list_models()] == [BUNDLED_MODEL_ID]

    # 2. Two callers at once: the file lock makes one convert and the other reuse its result.
    conversions: list[str] = []
    real_convert = convert.convert_gguf

    def counting_convert(*args: Any, **kwargs: Any) -> None:
        conversions.append(threading.current_thread().name)
        real_convert(*args, **kwargs)

    monkeypatch.setattr(convert, "convert_gguf", counting_convert)
    barrier = threading.Barrier(2)

    def prepare() -> Path:
        barrier.wait(timeout=30)
        return convert.prepare_model(entry, models)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(prepare) for _ in range(2)]
        paths = [f.result(timeout=300) for f in futures]

    assert paths == [target, target]
    assert len(conversions) == 1
    assert (target / "model.safetensors").stat().st_size > 100_000_000
    assert (target / MARKER_FILE).is_file()
    assert convert.is_converted(target, entry)
    assert list(models.glob(".tmp-*")) == []
    assert [e.id for e in ModelRegistry(settings).list_models()] == [BUNDLED_MODEL_ID]  # listed once
