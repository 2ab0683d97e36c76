"""The Models tab's public api_names through `gradio_client`, against a studio pointed at a loopback Hub
(``hub_studio`` in tests/conftest.py): list a repo's files and size, download it as a background job (progress, a
cancel and a resume), see the model listed with what its files say, delete it; a gated repo's 401."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from gradio_client import Client

pytestmark = pytest.mark.slow

REPO = "org/tiny-chat"


@pytest.fixture(scope="module")
def client(hub_studio) -> Client:  # type: ignore[no-untyped-def]
    return Client(hub_studio[0].url, verbose=False)


def rows(table: dict[str, Any]) -> list[list[Any]]:
    return [list(r) for r in table["data"]]


def by_first(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r[0]: dict(zip(table["headers"], r, strict=True)) for r in rows(table)}


def downloads(client: Client) -> dict[str, dict[str, Any]]:
    table = client.predict(api_name="/models_downloads")[0]  # then the timer's state
    return by_first(table)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_models_files_shows_the_files_and_what_the_download_takes(client: Client, hub_studio) -> None:  # type: ignore[no-untyped-def]
    summary, table = client.predict(REPO, "", "", api_name="/models_files")
    files = by_first(table)
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(files)
    assert all(f["Downloaded"] == "yes" for f in files.values())
    assert f"**{REPO}**" in summary and "The download takes" in summary
    assert "licence apache-2.0" in summary and "languages en, fr" in summary


def test_models_pull_downloads_in_the_background_and_lists_the_model(client: Client, hub_studio) -> None:  # type: ignore[no-untyped-def]
    _server, hub = hub_studio
    hub.rate = 1024 * 1024  # slow enough to cancel it on the way
    job_id, table = client.predict(REPO, "", "", api_name="/models_pull")[:2]
    assert job_id in by_first(table)
    wait_for(lambda: downloads(client)[job_id]["State"] == "running", 60, "the download to start")
    client.predict(job_id, api_name="/models_cancel")
    wait_for(lambda: downloads(client)[job_id]["State"] == "cancelled", 60, "the cancel")
    hub.rate = None
    client.predict(job_id, api_name="/models_resume")
    wait_for(lambda: downloads(client)[job_id]["State"] == "succeeded", 120, "the resumed download")
    done = downloads(client)[job_id]
    assert "100%" in done["Progress"]

    models, _picker = client.predict(None, api_name="/models_list")
    row = by_first(models)[REPO]
    assert row["Source"] == "Hugging Face cache" and row["Format"] == "safetensors" and row["Status"] == "ok"
    assert row["Licence"] == "apache-2.0" and row["Languages"] == "en, fr"
    assert row["Chat template"] in ("tokenizer_config.json", "chat_template.jinja")
    assert row["Parameters"].endswith("M")

    status, models, _picker = client.predict(REPO, False, api_name="/models_delete")
    assert status.startswith(f"removed {REPO}")
    assert REPO not in by_first(models)


def test_models_pull_of_a_gated_repo_without_a_token_says_what_to_do(client: Client) -> None:
    with pytest.raises(Exception) as err:
        client.predict("org/gated-chat", "", "", api_name="/models_pull")
    message = str(err.value)
    assert "gated" in message and "401" in message and "HF_TOKEN" in message
