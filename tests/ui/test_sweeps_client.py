"""The Evaluate tab's Sweeps api_names through `gradio_client`, against the launched studio (with its job worker):
check a sweep without queuing it (dry run), queue a sweep of 3 tiny ``selftest`` jobs (one failing) and follow it to
``done`` with its runs ranked and their curves overlaid, list sweeps, cancel one, and a spec error naming its field.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml
from gradio_client import Client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(server) -> Client:  # type: ignore[no-untyped-def]
    return Client(server.url, verbose=False)


def sweep_yaml(name: str, **fields: Any) -> str:
    data: dict[str, Any] = {
        "name": name,
        # steps 4 reaches fail_at_step 4 and fails; steps 2 and 3 succeed (train_loss 1/step: 0.5 and 0.333)
        "base": {"kind": "selftest", "sleep_s": 0.05, "fail_at_step": 4},
        "method": "grid",
        "parameters": {"steps": [4, 2, 3]},
        "metric": "train_loss",
        "mode": "min",
    }
    data.update(fields)
    return yaml.safe_dump(data, sort_keys=False)


def show(client: Client, ref: str, metric: str = "", mode: str = "") -> tuple[str, dict[str, Any], Any, dict[str, Any]]:
    summary, ranking, plot, details = client.predict(ref, metric, mode, api_name="/evaluate_sweep")
    return summary, ranking, plot, details


def wait_until_over(client: Client, ref: str, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    details: dict[str, Any] = {}
    while time.monotonic() < deadline:
        details = show(client, ref)[3]
        if details["state"] not in ("queued", "running"):
            return details
        time.sleep(1.0)
    raise AssertionError(f"sweep {ref} still {details.get('state')}: {details.get('counts')}")


def sweep_names(client: Client) -> list[str]:
    table = client.predict(api_name="/evaluate_sweeps")
    return [row[1] for row in table["data"]]


def test_a_dry_run_lists_the_trials_and_queues_nothing(client: Client) -> None:
    message, _sweep_id = client.predict(sweep_yaml("ui-dry"), True, api_name="/evaluate_sweep_submit")
    assert "Dry run: **3** selftest job(s)" in message and "| ui-dry-3 | 3 |" in message
    assert "ui-dry" not in sweep_names(client)


def test_a_sweep_of_3_tiny_jobs_with_one_failing_completes_the_other_two_ranked(client: Client) -> None:
    message, sweep_id = client.predict(sweep_yaml("ui-sweep"), False, api_name="/evaluate_sweep_submit")
    assert sweep_id and sweep_id in message and "3 job(s)" in message
    details = wait_until_over(client, sweep_id)
    assert details["state"] == "done" and details["counts"] == {"succeeded": 2, "failed": 1}

    summary, ranking, plot, details = show(client, sweep_id)
    assert "ui-sweep" in summary and "ranked by `train_loss` (min)" in summary
    assert ranking["headers"][:5] == ["rank", "trial", "job", "state", "train_loss"] and "steps" in ranking["headers"]
    ranked = [(row[0], row[1], row[3]) for row in ranking["data"]]
    assert ranked == [(1, 3, "succeeded"), (2, 2, "succeeded"), ("", 1, "failed")]
    figure = json.loads(plot["plot"]) if isinstance(plot, dict) and "plot" in plot else plot
    assert len(figure["data"]) == 3  # every run's curve overlaid, the failed one up to its failure

    by_max = show(client, sweep_id, "train_loss", "max")[1]
    assert [row[1] for row in by_max["data"][:2]] == [2, 3]  # ranked the other way round
    assert "ui-sweep" in sweep_names(client)


def test_a_bad_sweep_names_the_field_and_queues_nothing(client: Client) -> None:
    bad = sweep_yaml("ui-bad", method="random", parameters={"sleep_s": {"low": 0.5, "high": 0.1}})
    with pytest.raises(Exception, match=r"parameters\.sleep_s\.low"):
        client.predict(bad, False, api_name="/evaluate_sweep_submit")
    assert "ui-bad" not in sweep_names(client)


def test_cancel_a_sweep_then_cancelling_again_says_it_has_ended(client: Client) -> None:
    slow = sweep_yaml("ui-cancel", base={"kind": "selftest", "steps": 500}, parameters={"sleep_s": [0.1, 0.11, 0.12]})
    _message, sweep_id = client.predict(slow, False, api_name="/evaluate_sweep_submit")
    _summary, _ranking, _plot, details = client.predict(sweep_id, api_name="/evaluate_sweep_cancel")
    assert details["counts"].get("queued", 0) == 0  # every queued trial cancelled at once
    assert "cancelled by the user" in details["message"]
    assert wait_until_over(client, sweep_id, timeout=60)["state"] == "cancelled"
    with pytest.raises(Exception, match=r"has ended"):
        client.predict(sweep_id, api_name="/evaluate_sweep_cancel")
