"""`POST /api/inference/compare` over real HTTP against `studio serve`: 2-4 contenders, results in the order
given with model, text, usage and stats; the older adapter-vs-base form keeps its shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
FRANCE = "What is the capital of France?"


@pytest.fixture(scope="module")
def http(server, lora_adapters: tuple[Path, Path]) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.url, timeout=180) as client:
        yield client


def test_compare_returns_results_in_the_order_given(http: httpx.Client) -> None:
    params = {"temperature": 0, "max_tokens": 10}
    body = {"prompt": FRANCE, "models": [{"model": "default", "adapter": "lora-a"}, "default"], "params": params}
    r = http.post("/api/inference/compare", json=body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["model"] for x in results] == ["default + lora-a", "default"]
    assert results[1]["text"].startswith("The capital of France is Paris")
    assert results[0]["text"] != results[1]["text"]
    for x in results:
        assert {"model", "text", "usage", "stats"} <= set(x)
        assert x["usage"]["completion_tokens"] > 0 and x["stats"]["tokens_per_s"] > 0
        assert x["model_id"] == BUNDLED

    swapped = http.post("/api/inference/compare", json={**body, "models": ["default", "default + lora-a"]}).json()
    assert [x["text"] for x in swapped["results"]] == [results[1]["text"], results[0]["text"]]

    older = http.post(
        "/api/inference/compare", json={"model": "default", "adapter": "lora-a", "prompt": FRANCE, "params": params}
    )
    # the adapter must be loaded for the older form; the contender form above loaded it without activating it
    assert older.status_code == 200, older.text
    legacy = older.json()
    assert legacy["adapter"]["text"] == results[0]["text"] and legacy["base"]["text"] == results[1]["text"]
    assert [x["model"] for x in legacy["results"]] == ["default + lora-a", "default"]


def test_compare_errors_name_the_field(http: httpx.Client) -> None:
    one = http.post("/api/inference/compare", json={"prompt": "x", "models": ["default"]})
    assert one.status_code == 400
    unknown = http.post("/api/inference/compare", json={"prompt": "x", "models": ["default", "no-such-model"]})
    assert unknown.status_code == 404 and "no-such-model" in unknown.json()["error"]["message"]
    bad_param = http.post(
        "/api/inference/compare", json={"prompt": "x", "models": ["default", "default"], "params": {"temp": 1}}
    )
    assert bad_param.status_code == 400 and bad_param.json()["error"]["param"] == "params.temp"
