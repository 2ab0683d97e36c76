"""``GET /metrics`` (issue 20, point 6) after real generations with the bundled model, scraped and parsed with
prometheus-client's own parser: requests and tokens per model/engine/endpoint, TTFT and tok/s histograms, the queue
gauges, jobs by state; behind the front door like every other route."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from studio.settings import Settings

pytestmark = pytest.mark.slow
KEY = "metrics-key-123456"


@pytest.fixture(scope="module")
def client(studio_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    from app import create_app

    tmp = tmp_path_factory.mktemp("metrics")
    mp = pytest.MonkeyPatch()
    mp.setenv("GRADIO_TEMP_DIR", str(tmp / "gradio-tmp"))
    settings = Settings(
        home=studio_home, hf_cache=studio_home / "hf-cache", database_url=f"sqlite:///{tmp / 'm.db'}", api_key=KEY
    )
    app, ctx = create_app(settings)
    with TestClient(app, base_url="http://127.0.0.1:7860") as c:
        yield c, ctx
    ctx.close()
    mp.undo()


def _samples(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def test_metrics_count_real_generations(client: tuple[TestClient, Any]) -> None:
    c, _ctx = client
    auth = {"authorization": f"Bearer {KEY}"}
    assert c.get("/metrics").status_code == 401
    for question in ("What is the capital of France?", "Name a colour."):
        r = c.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": question}], "max_tokens": 8},
            headers=auth,
        )
        assert r.status_code == 200, r.text
    scraped = c.get("/metrics", headers=auth)
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    samples = _samples(scraped.text)
    ok = [s for s in samples["studio_generation_requests_total"] if s.labels["outcome"] == "ok"]
    assert sum(s.value for s in ok) == 2
    assert {s.labels["endpoint"] for s in ok} == {"openai.chat"} and ok[0].labels["engine"] != "unknown"
    assert sum(s.value for s in samples["studio_generated_tokens_total"]) >= 2
    assert sum(s.value for s in samples["studio_time_to_first_token_seconds_count"]) == 2
    assert sum(s.value for s in samples["studio_decode_tokens_per_second_count"]) >= 1
    assert [s.value for s in samples["studio_generations_waiting"]] == [0.0]
    assert any(s.labels["state"] == "queued" for s in samples["studio_jobs"])
    assert sum(s.value for s in samples["studio_model_loaded_bytes"]) > 0
    assert "studio_gpu_memory_bytes" not in samples  # no GPU here: no GPU series rather than zeros
