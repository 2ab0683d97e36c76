"""A studio served with STUDIO_API_KEY, through its real clients: `gradio_client` and the openai SDK pass the key
(as README's Security section says), and without it they are turned away at the door."""

from __future__ import annotations

import httpx
import openai
import pytest
from gradio_client import Client
from gradio_client.exceptions import AuthenticationError

from tests.conftest import TEST_KEY

pytestmark = pytest.mark.slow


def test_gradio_client_passes_the_key_as_a_header(keyed_server) -> None:  # type: ignore[no-untyped-def]
    client = Client(keyed_server.url, verbose=False, headers={"Authorization": f"Bearer {TEST_KEY}"})
    choices = client.predict("default", api_name="/playground_models")
    assert choices  # the model picker's refresh answered through the queue with the key
    reply = client.predict("hello world", api_name="/safety_scan")
    assert "findings" in reply


def test_gradio_client_without_the_key_is_turned_away(keyed_server) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AuthenticationError, match="credentials were not provided"):
        Client(keyed_server.url, verbose=False)
    # the raw queue, as a script that skips the client would use it
    r = httpx.post(
        f"{keyed_server.url}/gradio_api/queue/join",
        json={"data": ["hi"], "fn_index": 0, "session_hash": "x", "trigger_id": None},
    )
    assert r.status_code == 401


def test_openai_sdk_uses_the_key(keyed_server) -> None:  # type: ignore[no-untyped-def]
    good = openai.OpenAI(base_url=f"{keyed_server.url}/v1", api_key=TEST_KEY, max_retries=0, timeout=60)
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in [m.id for m in good.models.list().data]
    bad = openai.OpenAI(base_url=f"{keyed_server.url}/v1", api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
