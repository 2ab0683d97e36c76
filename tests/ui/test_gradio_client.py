"""The Gradio UI's public api_names, called the way a script would with `gradio_client`."""

from __future__ import annotations

import threading
import time

import pytest
from gradio_client import Client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(server) -> Client:  # type: ignore[no-untyped-def]
    return Client(server.url, verbose=False)


def _text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def test_playground_generate_streams_a_reply(client: Client) -> None:
    job = client.submit(
        message="What is the capital of France?",
        history=[],
        model="default",
        system_prompt="",
        temperature=0,
        top_p=0.9,
        top_k=50,
        max_tokens=32,
        repetition_penalty=1.0,
        stop="",
        seed=-1,
        api_name="/playground_generate",
    )
    updates = list(job)
    assert len(updates) >= 3  # streamed: several partial updates, not one final blob
    partial_lengths = [len(_text(u[0][-1])) for u in updates if len(u[0]) == 2]
    assert partial_lengths == sorted(partial_lengths)  # the reply only grows
    chat, stats, _box = updates[-1]
    assert [m["role"] for m in chat] == ["user", "assistant"]
    assert "Paris" in _text(chat[-1])
    assert "completion" in stats and "tok/s" in stats and "TTFT" in stats
    assert updates[0][2] == ""  # the first update clears the input box…
    # …later ones leave it alone: text typed while the reply finishes must not be wiped
    assert all(u[2] == {"__type__": "update"} for u in updates[1:])


def test_multi_turn_history_is_sent(client: Client) -> None:
    history = [
        # Gradio 6 chat history: content is a list of parts
        {"role": "user", "content": [{"type": "text", "text": "My name is Zorblat."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Nice to meet you, Zorblat!"}]},
    ]
    chat, _stats, _ = client.predict(
        "What is my name?", history, "default", "", 0, 0.9, 50, 24, 1.0, "", -1, api_name="/playground_generate"
    )
    assert len(chat) == 4
    assert "Zorblat" in _text(chat[-1])


def test_stop_sequences_and_bad_values_in_the_form(client: Client) -> None:
    chat, _, _ = client.predict(
        "What is the capital of France?",
        [],
        "default",
        "",
        0,
        0.9,
        50,
        32,
        1.0,
        "Paris",
        -1,
        api_name="/playground_generate",
    )
    assert "Paris" not in _text(chat[-1])
    with pytest.raises(Exception, match="message is empty"):
        client.predict("   ", [], "default", "", 0, 0.9, 50, 8, 1.0, "", -1, api_name="/playground_generate")
    with pytest.raises(Exception, match="not found"):
        client.predict("hi", [], "no/such-model", "", 0, 0.9, 50, 8, 1.0, "", -1, api_name="/playground_generate")


def test_playground_stop_ends_generation_early(server) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    job = client.submit(
        "Write a very long story about a lighthouse keeper.",
        [],
        "default",
        "",
        0.8,
        0.95,
        50,
        1500,
        1.0,
        "",
        5,
        api_name="/playground_generate",
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(job.outputs()) < 4:
        time.sleep(0.1)
    threading.Thread(target=lambda: client.predict(api_name="/playground_stop")).start()
    final = job.result(timeout=60)
    _chat, stats, _ = final
    assert "finish: cancelled" in stats
    completion = int(stats.split("completion ")[1].split(" ")[0])
    assert 0 < completion < 1500


def test_playground_models_lists_aliases_and_models(server) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    alias_file = server.home / "aliases" / "refresh--probe.yaml"
    alias_file.parent.mkdir(parents=True, exist_ok=True)
    alias_file.write_text("alias: refresh:probe\nrepo: HuggingFaceTB/SmolLM2-135M-Instruct\n", encoding="utf-8")
    try:
        update = client.predict(None, api_name="/playground_models")
        choices = [c[0] if isinstance(c, list | tuple) else c for c in update["choices"]]
        assert "refresh:probe" in choices and "HuggingFaceTB/SmolLM2-135M-Instruct" in choices
        assert choices.index("refresh:probe") < choices.index("HuggingFaceTB/SmolLM2-135M-Instruct")  # user first
        assert update["value"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    finally:
        alias_file.unlink()
