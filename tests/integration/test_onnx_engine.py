"""ONNX export (Optimum's exporter, run from .venv-onnx) and the ONNX Runtime engine: the export of the bundled
model answers greedy prompts token for token as the transformers engine does (fp32), the registry lists it as an
ONNX model that ``auto`` serves on onnxruntime, and a failed or cancelled export leaves nothing behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.context import AppContext
from studio.errors import StudioError, ValidationError
from studio.inference.base import ChatMessage, TokenEvent
from studio.inference.params import make_sampling_params
from studio.settings import Settings
from tests.conftest import BUNDLED_DIR_NAME

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Who wrote Hamlet?",
    "Explain what a neural network is in one sentence.",
    "Translate 'good morning' into Spanish.",
    "What is 12 times 12?",
    "Give me a name for a black cat.",
]


def greedy_ids(engine, prompt: str, n: int = 16) -> list[int]:  # type: ignore[no-untyped-def]
    params = make_sampling_params(temperature=0, max_tokens=n)
    items = engine.stream_chat([ChatMessage("user", prompt)], params, threading.Event())
    return [i.token_id for i in items if isinstance(i, TokenEvent)]


@pytest.fixture(scope="module")
def onnx_ctx(onnx_bundled: Path, tmp_path_factory: pytest.TempPathFactory, studio_home: Path) -> Iterator[AppContext]:
    home = tmp_path_factory.mktemp("onnx-home")
    settings = Settings(home=home, hf_cache=studio_home / "hf-cache", model_dirs=str(onnx_bundled.parent))
    context = AppContext.create(settings)
    yield context
    context.close()


def test_onnx_export_answers_as_the_source_token_for_token(onnx_bundled: Path, studio_home: Path) -> None:
    from studio.inference.onnx_backend import OnnxRuntimeEngine
    from studio.inference.transformers_backend import TransformersEngine

    assert (onnx_bundled / "model.onnx").is_file() and (onnx_bundled / "tokenizer.json").is_file()
    assert (onnx_bundled / "chat_template.jinja").is_file()  # copied from the source: the same prompt text
    source = TransformersEngine("smol", studio_home / "models" / BUNDLED_DIR_NAME, dtype="float32", threads=2)
    onnx = OnnxRuntimeEngine("smol-onnx", onnx_bundled, threads=2)
    try:
        assert onnx.info.parameters > 100_000_000  # counted from the graph's initializers
        for prompt in PROMPTS:
            expected = greedy_ids(source, prompt)
            assert len(expected) >= 4
            assert greedy_ids(onnx, prompt) == expected, prompt
    finally:
        source.unload()
        onnx.unload()


def test_registry_lists_the_export_and_auto_serves_it_on_onnxruntime(onnx_ctx: AppContext) -> None:
    entry = onnx_ctx.registry.resolve("smollm2-onnx")
    assert entry.format == "onnx" and entry.problem is None
    reply = onnx_ctx.engines.chat(
        "smollm2-onnx",
        [ChatMessage("user", "What is the capital of France?")],
        make_sampling_params(temperature=0, max_tokens=24, top_logprobs=3),
    )
    assert "Paris" in reply.text
    loaded = onnx_ctx.engines.loaded()[0]
    assert loaded.backend == "onnxruntime"
    assert loaded.extra["engine_reason"] == "ONNX export: served by ONNX Runtime"
    assert reply.stats.prompt_tokens == 37  # the same chat template as on every other engine
    with pytest.raises(ValidationError, match="runs on the onnxruntime engine"):
        onnx_ctx.engines.load("smollm2-onnx", engine="transformers")
    with pytest.raises(ValidationError, match="does not load PEFT adapters"):
        onnx_ctx.engines.engine("smollm2-onnx").stream_chat(
            [ChatMessage("user", "hi")], make_sampling_params(max_tokens=2), threading.Event(), adapter="lora-a"
        )


def test_a_failed_export_leaves_no_folder_and_names_the_reason(tmp_path: Path) -> None:
    from studio.export.onnx import export_onnx

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")  # no weights
    out = tmp_path / "out"
    with pytest.raises(StudioError, match="exporter failed"):
        export_onnx(broken, out, log_file=tmp_path / "export.log")
    assert not out.exists()
    assert (tmp_path / "export.log").read_text(encoding="utf-8").startswith("$ ")


def test_a_cancelled_export_stops_the_exporter_and_removes_its_output(tmp_path: Path, studio_home: Path) -> None:
    from studio.export.onnx import export_onnx

    out = tmp_path / "out"
    with pytest.raises(StudioError, match="cancelled"):
        export_onnx(studio_home / "models" / BUNDLED_DIR_NAME, out, log_file=tmp_path / "log", should_stop=lambda: True)
    assert not out.exists()


def test_the_exporter_reads_transformers_5_rope_settings() -> None:
    """transformers 4.x (the exporter's) ignores ``rope_parameters``: without the rewrite it used rope_theta
    10000 instead of SmolLM2's 100000 and the export answered other tokens than its source."""
    from studio.export.onnx import legacy_config

    five = {
        "model_type": "llama",
        "dtype": "bfloat16",
        "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
    }
    assert legacy_config(five)["rope_theta"] == 100000.0 and "rope_scaling" not in legacy_config(five)
    assert legacy_config(five)["torch_dtype"] == "bfloat16"
    scaled = {"rope_parameters": {"rope_theta": 5e5, "rope_type": "llama3", "factor": 8.0}}
    assert legacy_config(scaled)["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0}


def test_the_onnx_export_deploys_as_its_own_onnxruntime_server(
    onnx_bundled: Path, tmp_path: Path, studio_home: Path
) -> None:
    """A deployment of the export: ``studio serve-model`` on onnxruntime, healthy, a chat through the official SDK."""
    from openai import OpenAI

    from studio.deploy.service import delete_deployment, start_deployment, stop_deployment, wait_until_ready

    home = tmp_path / "home"
    settings = Settings(home=home, hf_cache=studio_home / "hf-cache")
    settings.ensure_dirs()
    (home / "models" / "smollm2-onnx").symlink_to(onnx_bundled, target_is_directory=True)
    context = AppContext.create(settings)
    try:
        started = start_deployment(context.db, settings, {"target": "smollm2-onnx", "name": "onnx"})
        assert started.engine == "onnxruntime"
        try:
            ready = wait_until_ready(context.db, settings, started.id, timeout_s=180)
            assert ready.status == "healthy", ready.message
            client = OpenAI(base_url=ready.url, api_key="unused", max_retries=0, timeout=60)
            reply = client.chat.completions.create(
                model=ready.served_model,
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                temperature=0,
                max_tokens=16,
            )
            assert "Paris" in (reply.choices[0].message.content or "")
        finally:
            stop_deployment(context.db, settings, started.id)
            delete_deployment(context.db, settings, started.id)
    finally:
        context.close()
