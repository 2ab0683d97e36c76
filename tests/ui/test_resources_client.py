"""The Resources tab's public api_name through `gradio_client`, against the launched studio: the server's sampler
answers with this machine's CPU/RAM/disk figures and, without a GPU, the note saying so (not zeros)."""

from __future__ import annotations

import time

import psutil
import pytest
from gradio_client import Client

from tests.unit.test_monitoring import _nvml_works

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(server) -> Client:  # type: ignore[no-untyped-def]
    return Client(server.url, verbose=False)


def test_resources_snapshot_answers_with_the_machines_figures_and_the_gpu_note(client: Client) -> None:
    before = time.time()
    snapshot = client.predict(api_name="/resources_snapshot")
    latest = snapshot["latest"]
    assert latest is not None and latest["at"] <= time.time()
    assert 0.0 <= latest["cpu_percent"] <= 100.0
    assert latest["ram_total_bytes"] == psutil.virtual_memory().total  # the server runs on this machine
    assert 0 < latest["ram_used_bytes"] < latest["ram_total_bytes"]
    assert 0 < latest["disk_used_bytes"] <= latest["disk_total_bytes"]
    assert snapshot["interval_s"] == 5.0 and snapshot["keep_s"] == 3600.0
    assert 1 <= len(snapshot["samples"]) <= 12 and snapshot["samples"][-1] == latest
    assert snapshot["sampler_cost"]["percent_of_core"] < 1.0
    if _nvml_works():
        assert snapshot["gpu"]["available"] and len(latest["gpus"]) == snapshot["gpu"]["count"] >= 1
    else:
        assert snapshot["gpu"]["available"] is False and latest["gpus"] == []
        assert snapshot["gpu"]["note"] == "No GPU on this machine (NVML library not found: no NVIDIA driver)"
    # the server keeps sampling: a later call sees a newer sample (interval 5 s)
    deadline = before + 15
    while client.predict(api_name="/resources_snapshot")["latest"]["at"] <= latest["at"]:
        assert time.time() < deadline, "the server's sampler took no new sample"
        time.sleep(0.5)


def test_disk_panel_previews_then_frees_exactly_that(client: Client, server) -> None:  # type: ignore[no-untyped-def]
    """Issue 20, point 3: sizes per model/run with the free space, and a clean-up previewed, then applied."""
    from gradio_client.exceptions import AppError
    from sqlalchemy import update

    from studio.db import Database
    from studio.jobs import queue
    from studio.jobs.queue import JOB
    from studio.monitoring.disk import tree_bytes
    from studio.settings import Settings

    settings = Settings(home=server.home, hf_cache=server.home / "hf-cache")
    db = Database(settings.db_url)
    try:
        job_id = queue.submit(db, "selftest", {"steps": 1}, name="disk-test").id
        with db.engine.begin() as conn:
            conn.execute(update(JOB).where(JOB.c.id == job_id).values(state="succeeded"))
    finally:
        db.dispose()
    checkpoints = settings.home / "runs" / job_id / "checkpoints"
    for step, size in ((5, 4096), (10, 8192)):
        (checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        (checkpoints / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"w" * size)

    summary, _table, report = client.predict(api_name="/disk_usage")
    assert "free" in summary and report["free_bytes"] > 0
    kinds = {(i["kind"], i["name"]) for i in report["items"]}
    assert ("run", job_id) in kinds and any(kind == "model" for kind, _ in kinds)

    with pytest.raises(AppError, match="not found"):
        client.predict("checkpoints", "no-such-job", api_name="/disk_cleanup_preview")
    plan_md, plan = client.predict("checkpoints", job_id, api_name="/disk_cleanup_preview")
    assert plan["paths"] == [f"runs/{job_id}/checkpoints/checkpoint-5"] and plan["bytes"] == 4096
    assert "checkpoint-10: the newest" in plan_md and (checkpoints / "checkpoint-5").exists()  # nothing deleted yet
    before = tree_bytes(checkpoints)
    done, *_rest = client.predict(api_name="/disk_cleanup")
    assert "Freed" in done and tree_bytes(checkpoints) == before - 4096
    assert not (checkpoints / "checkpoint-5").exists() and (checkpoints / "checkpoint-10").exists()


def test_cost_panel_totals_and_a_bad_price_table(client: Client) -> None:
    """Issue 20, point 4: totals from measured running time; an invalid price table names the field, saves nothing."""
    from gradio_client.exceptions import AppError

    totals = client.predict("experiment", api_name="/costs_totals")
    assert totals["headers"] == ["Day / user / experiment", "Jobs", "Hours", "Cost"]
    with pytest.raises(AppError, match="cpu_core_per_hour"):
        client.predict("currency: USD\ncpu_core_per_hour: -1\n", api_name="/costs_save")
