"""The Models tab's Adapter Manager, Exports and Deployments api_names through `gradio_client`, against
`studio serve` as a user starts it: an adapter uploaded as a zip is checked and listed, a pickle refused; an export
with a path for a name refused; the bundled model deployed as its own process, healthy, used from the Playground's
side through its ``deploy:<name>`` alias (a real chat through the studio's OpenAI API), its log, stop and delete."""

from __future__ import annotations

import re
import shutil
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client, handle_file

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def client(server) -> Client:  # type: ignore[no-untyped-def]
    return Client(server.url, verbose=False)


def by_first(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r[0]: dict(zip(table["headers"], r, strict=True)) for r in table["data"]}


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1.0)
    pytest.fail(f"timed out waiting for {what}")


def zip_folder(folder: Path, out: Path, skip: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.name not in skip:
                zf.write(f, f"adapter/{f.name}")
    return out


def test_an_uploaded_adapter_is_checked_listed_and_deleted(client: Client, lora_adapters, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    table = client.predict(None, api_name="/adapters_list")[0]
    assert by_first(table)["lora-a"]["Method"] == "LoRA"
    base, with_adapter, prompts = client.predict("lora-a", api_name="/adapters_batch_ab")  # Compare's batch sides
    assert (base, with_adapter) == (BUNDLED, f"{BUNDLED} + lora-a") and len(prompts.splitlines()) == 4
    upload = zip_folder(lora_adapters[0], tmp_path / "mine.zip")
    status, table = client.predict([handle_file(str(upload))], "uploaded-lora", "", api_name="/adapters_upload")[:2]
    assert "Registered **uploaded-lora**" in status
    row = by_first(table)["uploaded-lora"]
    assert row["Origin"] == "upload" and row["Base model"] == BUNDLED
    assert "q_proj" in row["Target modules"]
    status, table = client.predict("uploaded-lora", api_name="/adapters_delete")[:2]
    assert "uploaded-lora" not in by_first(table)
    # the folder's files, as a browser sends a picked folder (without the folder): gathered and checked alike
    loose = [handle_file(str(f)) for f in sorted(lora_adapters[0].iterdir()) if f.is_file()]
    status, table = client.predict(loose, "", "", api_name="/adapters_upload")[:2]
    named = re.search(r"Registered \*\*(adapter-\d{8}-\d{6})\*\*", status)
    assert named is not None, status
    assert by_first(table)[named.group(1)]["Method"] == "LoRA"
    client.predict(named.group(1), api_name="/adapters_delete")

    pickle_dir = tmp_path / "pickled"
    shutil.copytree(lora_adapters[0], pickle_dir)
    (pickle_dir / "adapter_model.safetensors").rename(pickle_dir / "adapter_model.bin")
    with pytest.raises(Exception, match="safetensors"):
        client.predict(
            [handle_file(str(zip_folder(pickle_dir, tmp_path / "p.zip")))], "p", "", api_name="/adapters_upload"
        )
    with pytest.raises(Exception, match="safetensors"):  # loose files alike
        client.predict([handle_file(str(f)) for f in pickle_dir.iterdir()], "p", "", api_name="/adapters_upload")
    assert "p" not in by_first(client.predict(None, api_name="/adapters_list")[0])


def test_an_export_named_like_a_path_is_refused(client: Client) -> None:
    with pytest.raises(Exception, match="name"):
        client.predict("merged", "default", "", "", "../x", api_name="/export_start")
    jobs, exports = client.predict(api_name="/export_list")[:2]
    assert jobs["headers"][:3] == ["Job", "Export", "Format"] and exports["headers"][0] == "Name"


def test_deploy_use_from_the_playground_stop_and_delete(client: Client, server) -> None:  # type: ignore[no-untyped-def]
    status, table = client.predict("default", "transformers", None, "ui-smol", api_name="/deploy_start")[:2]
    assert "**ui-smol** is starting" in status
    try:
        wait_for(
            lambda: by_first(client.predict(None, api_name="/deploy_list")[0])["ui-smol"]["Status"] == "healthy",
            180,
            "the deployment to answer its health check",
        )
        row = by_first(client.predict(None, api_name="/deploy_list")[0])["ui-smol"]
        assert row["Engine"] == "transformers" and row["URL"].startswith("http://127.0.0.1:")
        alias, note = client.predict("ui-smol", api_name="/deploy_alias")
        assert alias == "deploy:ui-smol" and "ui-smol" in note
        reply = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={
                "model": alias,
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "temperature": 0,
                "max_tokens": 16,
            },
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
        assert "Paris" in reply.json()["choices"][0]["message"]["content"]
        wait_for(
            lambda: by_first(client.predict(None, api_name="/deploy_list")[0])["ui-smol"]["Requests"] >= 1,
            30,
            "the request to be counted",
        )
        assert "POST /v1/chat/completions" in client.predict("ui-smol", api_name="/deploy_logs")
        with pytest.raises(Exception, match="running"):
            client.predict("ui-smol", api_name="/deploy_delete")
    finally:
        status, table = client.predict("ui-smol", api_name="/deploy_stop")[:2]
    assert by_first(table)["ui-smol"]["Status"] == "stopped"
    status, table = client.predict("ui-smol", api_name="/deploy_delete")[:2]
    assert "ui-smol" not in by_first(table)
