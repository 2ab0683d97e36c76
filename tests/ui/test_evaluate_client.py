"""The Evaluate tab's public api_names through `gradio_client`, against the launched studio (with its job worker):
run an evaluation to success, read its results, compare it, tag it, list metrics and plugins."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from gradio_client import Client

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def client(server) -> Client:  # type: ignore[no-untyped-def]
    return Client(server.url, verbose=False)


def rows_of(table: dict[str, Any]) -> list[list[Any]]:
    """A table's rows, whether it came back as a plain table or as a component update."""
    data = table["data"] if "data" in table else table["value"]["data"]
    return list(data)


def headers_of(table: dict[str, Any]) -> list[str]:
    """A table's headers, whether it came back as a plain table or as a component update."""
    inner = table if "data" in table else table["value"]
    return list(inner["headers"])


def form(**overrides: Any) -> list[Any]:
    values: dict[str, Any] = {
        "models": [BUNDLED],
        "adapter": "",
        "source": "dataset",
        "dataset": "whetstone-assistant",
        "version": "latest",
        "text_file": "",
        "metrics": ["rouge", "exact_match", "length"],
        "temperature": 0.0,
        "max_tokens": 16,
        "limit": 2,
        "judge": "",
        "name": "client eval",
    }
    values.update(overrides)
    return list(values.values())


def wait_for_results(client: Client, run_id: str, timeout: float = 240) -> tuple[Any, ...]:
    deadline = time.monotonic() + timeout
    out: tuple[Any, ...] = ()
    while time.monotonic() < deadline:
        out = client.predict(run_id, "all models", None, api_name="/evaluate_results")
        if any(state in out[0] for state in ("**succeeded**", "**failed**", "**cancelled**")):
            return out
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not finish: {out[0] if out else ''}")


def test_run_then_results_then_compare(client: Client) -> None:
    run_id, status = client.predict(*form(), api_name="/evaluate_run")
    assert run_id and run_id in status
    notes, summary, plot, examples, _models, _sort = wait_for_results(client, run_id)
    assert "**succeeded**" in notes
    assert headers_of(summary) == ["metric", BUNDLED]
    table = {row[0]: row[1] for row in rows_of(summary)}
    assert set(table) >= {"rouge1", "rouge2", "rougeL", "exact_match", "output_words", "examples"}
    assert table["examples"] == 2.0 and 0.0 <= table["rouge1"] <= 1.0
    assert [row[1] for row in rows_of(examples)] == [BUNDLED, BUNDLED]
    assert rows_of(examples)[0][3]  # the reference is shown
    first, second = (json.loads(row[5])["rouge1"] for row in rows_of(examples))
    assert first <= second  # worst first
    figure = json.loads(plot["plot"]) if isinstance(plot, dict) and "plot" in plot else plot
    assert "rouge1" in json.dumps(figure)

    _loss, _ppl, metrics, _diff, configs = client.predict(run_id, api_name="/evaluate_compare")
    (only,) = configs.values()
    assert only["config"]["dataset"] == "whetstone-assistant" and only["config"]["dataset_version"] == 1
    assert only["runtime"]["device"] == "cpu" and only["runtime"]["duration_s"] > 0
    assert headers_of(metrics)[1].endswith(f"· {BUNDLED}")
    assert {row[0] for row in rows_of(metrics)} >= {"rouge1", "exact_match"}

    action = client.predict(run_id, "client smoke", api_name="/evaluate_tag")
    assert "client, smoke" in action
    rows, _tags = client.predict("smoke", False, False, api_name="/evaluate_experiments")
    assert [r[0] for r in rows_of(rows)] == [run_id]


def test_run_errors_name_the_field(client: Client) -> None:
    with pytest.raises(Exception, match="unknown metric 'nope'"):
        client.predict(*form(metrics=["nope"]), api_name="/evaluate_run")
    with pytest.raises(Exception, match="models"):
        client.predict(*form(models=[]), api_name="/evaluate_run")


def test_metrics_and_plugins_are_listed(client: Client) -> None:
    metrics, _plugins = client.predict(api_name="/evaluate_plugins")
    names = [row[0] for row in rows_of(metrics)]
    assert names[:4] == ["perplexity", "lambada", "bleu", "rouge"] and "judge" in names
