"""The Adapter Manager with the bundled model loaded: delete refused while an adapter is loaded, enable / disable
switching what the model answers, speed measured both ways on the engine, the quality comparison run as one eval job
of the base and the adapter (whose figures the pushed model card then shows), and ``studio adapters`` / ``studio
push`` as a user runs them (subprocesses, the push against a loopback Hub)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.context import AppContext
from studio.errors import ConflictError, NotFoundError
from studio.export.push import push_source, push_to_hub
from studio.inference.base import ChatMessage
from studio.jobs import queue
from studio.jobs.child import run_job
from studio.models.adapter_compare import (
    compare_speed,
    disable_adapter,
    enable_adapter,
    submit_quality_comparison,
)
from studio.models.adapter_upload import upload_adapter
from studio.models.adapters import WEIGHTS_FILE, delete_adapter, get_adapter, list_adapters, rename_adapter
from studio.settings import BUNDLED_MODEL_ID, Settings
from tests.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_write_secret_token_0123456789"


@pytest.fixture
def settings(home_sharing_models: Settings) -> Settings:
    return home_sharing_models


@pytest.fixture
def own_ctx(settings: Settings, lora_adapters: tuple[Path, Path], tmp_path: Path) -> Iterator[AppContext]:
    """An AppContext on ``settings`` (own engines, own database) with the fixture adapter lora-a uploaded as 'mine'."""
    upload_adapter(settings, Path(shutil.copytree(lora_adapters[0], tmp_path / "src" / "my-lora")), "mine")
    context = AppContext.create(settings)
    yield context
    context.close()


def _answer(ctx: AppContext, prompt: str = "What is the capital of France?") -> str:
    params = ctx.engines.params_for("default", temperature=0.0, max_tokens=12)
    return ctx.engines.start_chat("default", [ChatMessage("user", prompt)], params).wait().text


def test_delete_is_refused_while_loaded_then_allowed(own_ctx: AppContext) -> None:
    settings, engines = own_ctx.settings, own_ctx.engines
    engines.load("default")
    engines.load_adapter("default", "mine")
    assert get_adapter(settings, "mine", engines).loaded_on == [BUNDLED_MODEL_ID]
    with pytest.raises(ConflictError, match=f"loaded on {BUNDLED_MODEL_ID}: unload that model before you delete"):
        delete_adapter(settings, "mine", engines)
    disable_adapter(engines, "default")  # disabled is still loaded
    with pytest.raises(ConflictError, match="before you rename it"):
        rename_adapter(settings, "mine", "other", engines)
    assert (settings.home / "adapters" / "mine" / WEIGHTS_FILE).is_file()
    engines.unload("default")
    removed = delete_adapter(settings, "mine", engines)
    assert removed.kept is None and removed.freed_bytes > 100_000
    assert list_adapters(settings, engines) == [] and list((settings.home / "adapters").iterdir()) == []


def test_enable_and_disable_switch_what_the_loaded_model_answers(own_ctx: AppContext) -> None:
    engines = own_ctx.engines
    with pytest.raises(NotFoundError, match="not loaded"):
        enable_adapter(engines, "default", "mine")
    engines.load("default")
    base = _answer(own_ctx)
    assert base.startswith("The capital of France is Paris")

    state = enable_adapter(engines, "default", "mine")
    assert (state.active, state.loaded) == ("mine", ["mine"])
    with_adapter = _answer(own_ctx)
    assert with_adapter != base  # the random LoRA weights change the greedy answer

    state = disable_adapter(engines, "default")
    assert (state.active, state.loaded) == (None, ["mine"])
    assert _answer(own_ctx) == base
    assert enable_adapter(engines, "default", "mine").active == "mine"  # a swap: no second copy is loaded
    assert _answer(own_ctx) == with_adapter and engines.engine("default").adapters.keys() == {"mine"}  # type: ignore[attr-defined]
    with pytest.raises(NotFoundError, match=r"no adapter 'no-such-adapter'.*known adapters: mine"):
        enable_adapter(engines, "default", "no-such-adapter")


def test_compare_speed_measures_both_ways_on_the_same_prompts(own_ctx: AppContext) -> None:
    engines = own_ctx.engines
    prompts = ["What is the capital of France?", "Name a colour."]
    report = compare_speed(engines, "default", "mine", prompts, max_tokens=8)
    assert (report["adapter"], report["prompts"], report["max_tokens"]) == ("mine", 2, 8)
    for side in ("with_adapter", "base"):
        assert report[side]["tokens_per_s"] > 0 and report[side]["completion_tokens"] >= 2
    assert report["speed_ratio"] == pytest.approx(
        report["with_adapter"]["tokens_per_s"] / report["base"]["tokens_per_s"], rel=0.01
    )
    assert [r["prompt"] for r in report["rows"]] == prompts
    assert report["rows"][0]["base_text"].startswith("The capital of France is Paris")
    assert report["rows"][0]["adapter_text"] != report["rows"][0]["base_text"]
    assert engines.engine("default").active_adapter is None  # type: ignore[attr-defined]  # measuring left the base active


def test_quality_comparison_is_one_eval_of_both_and_the_pushed_card_shows_it(
    own_ctx: AppContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings, db = own_ctx.settings, own_ctx.db
    queued = submit_quality_comparison(settings, db, "mine", metrics=["exact_match", "contains"], limit=2, max_tokens=8)
    job = queue.get_job(db, queued.job_id)
    assert [m.get("adapter") for m in job.config["models"]] == [None, "mine"]
    assert queued.dataset == "whetstone-assistant" and queued.dataset_version == 1 and job.config["dataset_hash"]
    claimed = queue.claim_next(db, "test-worker:1")
    assert claimed is not None and claimed.id == queued.job_id
    assert run_job(settings, db, queue.Lease.of(claimed)) == queue.SUCCEEDED, queue.log_tail(settings, queued.job_id)
    figures = queue.get_job(db, queued.job_id).result["models"]
    assert set(figures) == {queued.base_label, queued.adapter_label}
    assert figures[queued.base_label]["examples"] == figures[queued.adapter_label]["examples"] == 2.0

    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    with FakeHub() as hub:
        hub.patch(monkeypatch)
        folder, adapter = push_source(settings, "mine")
        push_to_hub(settings, folder, "alice/mine", True, TOKEN, db=db, adapter=adapter)
        card = hub.repos["alice/mine"].files["README.md"].decode()
    base_contains = figures[queued.base_label]["contains"]
    adapter_contains = figures[queued.adapter_label]["contains"]
    assert f"Eval run `{queued.job_id}`" in card
    assert f"| contains | {adapter_contains:.4g} | {base_contains:.4g} |" in card


def _studio(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, STUDIO_HOME=str(home), PYTHONPATH=str(ROOT), **(env or {}))
    full.pop("STUDIO_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "studio", *args], env=full, cwd=ROOT, capture_output=True, text=True, timeout=180
    )


def test_the_cli_lists_and_pushes_an_adapter(
    settings: Settings, lora_adapters: tuple[Path, Path], tmp_path: Path
) -> None:
    env = {"STUDIO_HF_CACHE": str(settings.hf_cache_dir), "HF_TOKEN_PATH": str(tmp_path / "none"), "HF_TOKEN": ""}
    upload_adapter(settings, lora_adapters[1], "cli-lora")
    listed = _studio(settings.home, "adapters", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [(a["name"], a["origin"], a["rank"]) for a in json.loads(listed.stdout)] == [("cli-lora", "upload", 8)]

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("hf_wrong_token_ABCDEFGHIJ\n")
    with FakeHub() as hub:
        hub.write_token = TOKEN
        env.update(hub.env())
        pushed = _studio(settings.home, "push", "cli-lora", "alice/cli-lora", "--token-file", str(token_file),
                         "--json", env=env)  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        result = json.loads(pushed.stdout)
        assert result["url"] == f"{hub.url}/alice/cli-lora" and hub.repos["alice/cli-lora"].private
        assert sorted(hub.repos["alice/cli-lora"].files) == ["README.md", "adapter_config.json", WEIGHTS_FILE]

        denied = _studio(settings.home, "push", "cli-lora", "alice/other", "--token-file", str(wrong_file), env=env)
        assert denied.returncode == 1 and "refused the token (401)" in denied.stderr
        assert "hf_wrong_token" not in denied.stdout + denied.stderr and "alice/other" not in hub.repos
