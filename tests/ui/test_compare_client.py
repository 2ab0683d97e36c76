"""The Compare tab's public api_names through `gradio_client`, against the launched studio: named streaming,
a blind battle whose outputs never name the contenders before the vote, the vote's reveal, the leaderboard,
ranking with agreement, batch A/B voting and the preference export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
ADAPTED = f"{BUNDLED} + lora-a"


@pytest.fixture(scope="module")
def client(server, lora_adapters: tuple[Path, Path]) -> Client:  # type: ignore[no-untyped-def]
    return Client(server.url, verbose=False)


def rows(table: Any) -> list[list[Any]]:
    data = table.get("data") if "data" in table else table.get("value", {}).get("data")
    return list(data or [])


def value(update: Any) -> Any:
    return update.get("value") if isinstance(update, dict) and "__type__" in update else update


def text(message: dict[str, Any]) -> str:
    """A chat message's text (gradio 6 sends content as a list of parts)."""
    content = message["content"]
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def test_compare_run_streams_both_sides(client: Client) -> None:
    job = client.submit(["default", ADAPTED], "What is the capital of France?", "", 0.0, 10, api_name="/compare_run")
    final = job.result()
    streamed = job.outputs()
    assert len(streamed) > 2  # several updates from one generator
    chat_a, chat_b = value(final[0]), value(final[1])
    assert text(chat_a[-1]).startswith("The capital of France is Paris")
    assert text(chat_b[-1]) and text(chat_b[-1]) != text(chat_a[-1])
    assert "tok/s" in final[4] and "TTFT" in final[5]


def test_side_by_side_shows_each_reply_once_after_send_continue_and_regenerate(server, lora_adapters) -> None:  # type: ignore[no-untyped-def]
    """Issue 15, point 2: the final update appended each finished reply to a transcript that already held it, so
    every bubble showed its reply twice; continuing and regenerating did the same. Each side's chat ends with
    exactly the reply its last streamed update showed, once."""
    own = Client(server.url, verbose=False)  # a fresh session: a new side-by-side conversation

    def turn(job: Any) -> tuple[list[list[dict[str, Any]]], list[list[dict[str, Any]]]]:
        final, streamed = job.result(), job.outputs()
        return [value(final[i]) for i in (0, 1)], [value(streamed[-2][i]) for i in (0, 1)]

    chats, last_streamed = turn(
        own.submit(["default", ADAPTED], "What is the capital of France?", "", 0.0, 12, api_name="/compare_run")
    )
    first_replies = []
    for chat, streamed in zip(chats, last_streamed, strict=True):
        assert [m["role"] for m in chat] == ["user", "assistant"], chat
        assert text(chat[-1]) == text(streamed[-1]) and text(chat[-1])
        first_replies.append(text(chat[-1]))
    assert first_replies[0].startswith("The capital of France is Paris")
    assert first_replies[0].count("capital of France") == 1

    chats, last_streamed = turn(own.submit(["default", ADAPTED], "And of Italy?", "", 0.0, 12, api_name="/compare_run"))
    for chat, streamed, first in zip(chats, last_streamed, first_replies, strict=True):
        assert [m["role"] for m in chat] == ["user", "assistant", "user", "assistant"], chat
        assert text(chat[1]) == first and text(chat[-1]) == text(streamed[-1])

    job = own.submit("2", 0.0, 12, api_name="/compare_regenerate")
    final, streamed = job.result(), job.outputs()
    for i in (0, 1):
        chat = value(final[i])
        assert [m["role"] for m in chat] == ["user", "assistant", "user", "assistant"], chat
        assert text(chat[-1]) == text(value(streamed[-2][i])[-1]) == text(chats[i][-1])


def test_blind_battle_hides_names_until_the_vote_then_leaderboard(client: Client) -> None:
    job = client.submit(["default", ADAPTED], "Name a colour.", 0.0, 8, "", "ui-test", api_name="/compare_blind")
    final = job.result()
    sent = json.dumps([list(o) for o in job.outputs()])
    for name in ("default", "lora-a", "SmolLM2", "HuggingFaceTB"):
        assert name not in sent, f"{name!r} reached the client before the vote"
    assert "Vote for the better reply" in final[4]
    reveal, _note = client.predict("A is better", "clearer", api_name="/compare_vote")
    assert "Model A was" in reveal and "default" in reveal and "lora-a" in reveal
    with pytest.raises(Exception, match="already voted"):
        client.predict("Tie", "", api_name="/compare_vote")

    summary, table, _plot, _uc, _tags = client.predict("(all)", "ui-test", api_name="/compare_leaderboard")
    names = {row[1] for row in rows(table)}
    assert names == {"default", ADAPTED}
    assert "1 voted battle" in summary
    # issue 15, point 6: one battle gives no interval to speak of, and the table says so
    assert [row[3] for row in rows(table)] == ["n too small (1 battle)"] * 2


def test_ranking_batch_and_export(client: Client) -> None:
    out = client.predict(["default"], "Say a number.", 2, 1.0, 6, "", "", api_name="/compare_rank_generate")
    item_id = out[0]
    assert item_id and "#1" in out[1] and "#2" in out[2]
    ranks = ["2", "1", "", "", "", ""]
    scores = [4, 4, 4, 4, 4, 4]
    status = client.predict(
        item_id, "ann", "Order (rank 1 = best)", "", *ranks, *scores, api_name="/compare_rank_submit"
    )
    assert "Saved ann" in status
    history, agreement, _per, _pairs = client.predict("ann", api_name="/compare_rank_history")
    assert rows(history)[0][4] == "#2 > #1" and "Krippendorff" in agreement

    progress, batch_id, table, battle_id, current = client.predict(
        "default", ADAPTED, "Hi\nBye", 0.0, 6, "", "batch", api_name="/compare_batch_run"
    )
    assert progress.startswith("done: 2") and len(rows(table)) == 2 and battle_id and "Prompt 1" in current
    table, battle_id, current, _vote = client.predict(
        batch_id, battle_id, "B is better", api_name="/compare_batch_vote"
    )
    assert rows(table)[0][4] == "b" and "Prompt 2" in current

    summary, version, job_yaml = client.predict("ui-prefs", "", "", "dpo", "default", api_name="/compare_export")
    assert "ui-prefs" in summary and version >= 1
    assert "kind: dpo" in job_yaml and "dataset: ui-prefs" in job_yaml and "beta: 0.1" in job_yaml


def test_job_submit_status_and_loop_guard(client: Client) -> None:
    out = client.predict(["default"], "Say a word.", 2, 1.0, 6, "", "", api_name="/compare_rank_generate")
    scores = [7, 1, 4, 4, 4, 4]
    client.predict(out[0], "jo", "Scores (1-7)", "", *[""] * 6, *scores, api_name="/compare_rank_submit")
    _summary, _version, job_yaml = client.predict("ui-prefs", "", "", "dpo", "default", api_name="/compare_export")
    # scheduled far ahead so the server's worker leaves it queued (this test checks the wiring, not training)
    job_id, status, *_timer = client.predict(
        job_yaml.rstrip() + "\nnot_before: '2099-01-01T00:00:00'\n", api_name="/compare_job_submit"
    )
    assert job_id and "dpo job" in status and "queued" in status
    assert "queued" in client.predict(job_id, api_name="/compare_job_status")
    with pytest.raises(Exception, match="no finished DPO adapter"):
        client.predict(job_id, api_name="/compare_loop")
    with pytest.raises(Exception, match="beta"):
        client.predict(job_yaml.replace("beta: 0.1", "beta: -1"), api_name="/compare_job_submit")
