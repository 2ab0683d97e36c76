"""The Playground's Prompt and Conversations views through `gradio_client`, against the launched studio:
one test per public api_name (playground_prompt, playground_conversation_new, playground_conversations,
playground_conversation_open, playground_conversation_delete). Calls that share a browser session's state
(the active conversation, Stop) use the same Client, which keeps one session hash."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from gradio_client import Client

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
NEW_LABEL = "New conversation (not saved yet)"


@pytest.fixture(scope="module")
def client(server) -> Client:  # type: ignore[no-untyped-def]
    return Client(server.url, verbose=False)


def _examples(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"headers": ["input", "output"], "data": [list(p) for p in pairs] or [["", ""]]}


def _prompt(client: Client, prompt: str, **kwargs: Any) -> tuple[str, str, str]:
    values = {"temperature": 0, "max_tokens": 32, "stream": False, **kwargs}
    text, code, stats = client.predict(prompt=prompt, **values, api_name="/playground_prompt")
    return text, code, stats


def _completion_tokens(stats: str) -> int:
    return int(stats.split("completion ")[1].split(" ")[0])


def _prompt_tokens(stats: str) -> int:
    return int(stats.split("prompt ")[1].split(" ")[0])


def _parts(text: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": text}]


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


# -- playground_prompt -------------------------------------------------------------------------------------------
def test_chat_template_answers_the_france_question(client: Client) -> None:
    job = client.submit(
        prompt="What is the capital of France?",
        template="chat",
        model="default",
        temperature=0,
        max_tokens=32,
        stream=True,
        api_name="/playground_prompt",
    )
    updates = list(job)
    assert len(updates) >= 3  # streamed token by token, not one final blob
    partial = [u[0] for u in updates[1:-1]]
    assert partial and all(t.endswith("▌") for t in partial)  # the cursor shows while streaming
    assert any(u[2].startswith("Generating… ") for u in updates[1:-1])
    text, code, stats = updates[-1]
    assert "Paris" in text and not text.endswith("▌")
    assert code == text  # no fenced block: the code view holds the whole reply
    assert "completion" in stats and "TTFT" in stats and "finish: stop" in stats


@pytest.mark.parametrize(
    ("template", "prompt"),
    [("instruction", "Name the capital of France."), ("raw", "The capital of France is")],
)
def test_instruction_and_raw_templates_generate(client: Client, template: str, prompt: str) -> None:
    text, _code, stats = _prompt(client, prompt, template=template, max_tokens=16)
    assert text.strip()
    assert 0 < _completion_tokens(stats) <= 16
    assert "tok/s" in stats and "finish:" in stats


def test_streaming_off_gives_the_output_in_one_piece(client: Client) -> None:
    job = client.submit(
        prompt="Write a haiku about the sea.", temperature=0, max_tokens=24, stream=False, api_name="/playground_prompt"
    )
    updates = list(job)
    assert len(updates) == 2  # the 'waiting' status, then the whole reply
    assert updates[0][0] == "" and updates[1][0].strip() and "▌" not in updates[1][0]


def test_few_shot_examples_are_placed_before_the_prompt(client: Client) -> None:
    pairs = _examples(("Germany", "Berlin"), ("Italy", "Rome"), ("Japan", "Tokyo"))
    _, _, bare_stats = _prompt(client, "Input: France\nOutput:", template="raw", stop="\\n", max_tokens=8)
    text, _, stats = _prompt(client, "Input: France\nOutput:", template="raw", examples=pairs, stop="\\n", max_tokens=8)
    # raw: "Input: Germany\nOutput: Berlin\n\n" per pair, then the prompt
    assert _prompt_tokens(stats) > _prompt_tokens(bare_stats) + 12
    assert text.strip() == "Paris"
    # a row with only one side filled is refused, naming the row
    with pytest.raises(Exception, match="row 2 has no output"):
        _prompt(client, "France", examples=_examples(("Germany", "Berlin"), ("Italy", "")))


def test_chat_history_is_included_only_when_asked(client: Client) -> None:
    history = [
        {"role": "user", "content": _parts("My name is Zorblat.")},
        {"role": "assistant", "content": _parts("Nice to meet you, Zorblat!")},
    ]
    with_history, _, with_stats = _prompt(client, "What is my name?", history=history, include_history=True)
    without, _, without_stats = _prompt(client, "What is my name?", history=history, include_history=False)
    assert "Zorblat" in with_history
    assert "Zorblat" not in without
    assert _prompt_tokens(with_stats) > _prompt_tokens(without_stats)


def test_prompt_errors_name_the_problem(client: Client) -> None:
    with pytest.raises(Exception, match="prompt is empty"):
        _prompt(client, "   ")
    with pytest.raises(Exception, match="not in the list of choices"):
        _prompt(client, "hi", template="sonnet")
    with pytest.raises(Exception, match="not found"):
        _prompt(client, "hi", model="no/such-model")


def test_stop_ends_a_long_prompt_generation_early(server) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)  # its own session: Stop cancels this session's generations
    job = client.submit(
        prompt="Write a very long story about a lighthouse keeper.",
        template="chat",
        temperature=0.8,
        top_p=0.95,
        max_tokens=1500,
        seed=5,
        stream=True,
        api_name="/playground_prompt",
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(job.outputs()) < 5:
        time.sleep(0.1)
    threading.Thread(target=lambda: client.predict(api_name="/playground_stop")).start()
    text, _code, stats = job.result(timeout=60)
    assert "finish: cancelled" in stats
    assert 0 < _completion_tokens(stats) < 1500
    assert text.strip() and not text.endswith("▌")


# -- conversations -----------------------------------------------------------------------------------------------
def _chat(client: Client, message: str, history: list[dict[str, Any]] | None = None, **kwargs: Any) -> list[dict]:
    """One Chat-view exchange (/playground_generate, positional as a script calls it); it is saved."""
    chat, _stats, _box = client.predict(
        message, history or [], "default", "", 0, 0.9, 50, 12, 1.0, "", -1, **kwargs, api_name="/playground_generate"
    )
    return list(chat)


def _rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    headers = table["headers"]
    return [dict(zip(headers, row, strict=True)) for row in table["data"]]


def _listing(client: Client, model: str = "", use_case: str = "") -> list[dict[str, Any]]:
    return _rows(client.predict(model, use_case, api_name="/playground_conversations"))


def _find(rows: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["title"].startswith(tag)]


def test_chat_replies_are_listed_opened_and_continued(server) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    tag = f"Conv {uuid.uuid4().hex[:8]}"
    first = _chat(client, f"{tag}: what is the capital of France?")
    rows = _find(_listing(client), tag)
    assert len(rows) == 1
    row = rows[0]
    assert row["title"] == f"{tag}: what is the capital of France?"
    assert row["model"] == BUNDLED and row["messages"] == 2 and row["updated"].endswith("UTC")

    chat, label, transcript = client.predict(row["id"], api_name="/playground_conversation_open")
    assert [m["role"] for m in chat] == ["user", "assistant"]
    assert _text(chat[0]) == f"{tag}: what is the capital of France?"
    assert _text(chat[1]) == _text(first[-1])
    assert tag in label and "2 messages" in label
    assert "**User**" in transcript and "**Assistant**" in transcript and "UTC" in transcript

    # the opened conversation is the active one: the next reply is appended to it
    _chat(client, "And of Italy?", history=chat)
    rows = _find(_listing(client), tag)
    assert len(rows) == 1 and rows[0]["messages"] == 4

    # "New conversation" clears the chat; the next reply starts a second conversation
    cleared, _state_label, _transcript, selected = client.predict(api_name="/playground_conversation_new")
    assert cleared == [] and selected == ""
    _chat(client, f"{tag} again: name a colour.")
    rows = _find(_listing(client), tag)
    assert len(rows) == 2 and len({r["id"] for r in rows}) == 2
    assert rows[0]["title"].startswith(f"{tag} again")  # most recently updated first

    with pytest.raises(Exception, match="not found"):
        client.predict("no-such-conversation", api_name="/playground_conversation_open")
    with pytest.raises(Exception, match="pick a conversation"):
        client.predict("", api_name="/playground_conversation_open")


def test_history_filters_by_model_and_use_case(server) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    tag = f"Filter {uuid.uuid4().hex[:8]}"
    _chat(client, f"{tag}: what is 2 + 2?", use_case_name="Question Answering")
    assert _find(_listing(client, model=BUNDLED), tag)
    assert not _find(_listing(client, model="no/such-model"), tag)
    assert _find(_listing(client, use_case="Question Answering"), tag)
    assert not _find(_listing(client, use_case="Creative Writing"), tag)
    assert _find(_listing(client, model=BUNDLED, use_case="Question Answering"), tag)
    assert all(r["use case"] == "Question Answering" for r in _listing(client, use_case="Question Answering"))


def test_delete_removes_a_conversation(server) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    tag = f"Delete {uuid.uuid4().hex[:8]}"
    _chat(client, f"{tag}: say hello.")
    (row,) = _find(_listing(client), tag)
    # it is the active conversation of this session: deleting it also starts afresh
    table, selected, label, _transcript, chat = client.predict(
        row["id"], "", "", api_name="/playground_conversation_delete"
    )
    assert not _find(_rows(table), tag) and not _find(_listing(client), tag)
    assert selected == "" and label == NEW_LABEL and chat == []
    with pytest.raises(Exception, match="not found"):
        client.predict(row["id"], api_name="/playground_conversation_open")
    with pytest.raises(Exception, match="not found"):
        client.predict(row["id"], "", "", api_name="/playground_conversation_delete")
    # the next reply goes to a new conversation, not to the deleted one
    _chat(client, f"{tag} after: say goodbye.")
    rows = _find(_listing(client), tag)
    assert [r["messages"] for r in rows] == [2]
