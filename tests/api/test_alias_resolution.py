"""Aliases through the official `openai` SDK: resolution, parameter precedence, usage counting."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest
import yaml

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
LONG = [{"role": "user", "content": "Tell me a long story about a dragon and a knight."}]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def short_alias(server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A hand-written alias file (the documented format) dropped into STUDIO_HOME/aliases."""
    name = "smol:short"
    path = server.home / "aliases" / "smol--short.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {
                "alias": name,
                "repo": BUNDLED,
                "filename": "SmolLM2-135M-Instruct.Q4_1.gguf",
                "chat_template": "chatml",
                "request_params": {"temperature": 0, "max_tokens": 5},
            },
            sort_keys=False,
        ),
        encoding="utf-8",
    )
    yield name
    path.unlink(missing_ok=True)


def test_alias_params_apply_and_request_params_win(client: openai.OpenAI, short_alias: str) -> None:
    listed = [m.id for m in client.models.list()]
    assert BUNDLED in listed

    by_alias = client.chat.completions.create(model=short_alias, messages=LONG)
    assert by_alias.model == BUNDLED  # the alias's model served it
    assert by_alias.usage is not None and by_alias.usage.completion_tokens <= 5
    assert by_alias.choices[0].finish_reason == "length"

    again = client.chat.completions.create(model=short_alias, messages=LONG)
    assert again.choices[0].message.content == by_alias.choices[0].message.content  # temperature 0 from the alias

    overridden = client.chat.completions.create(model=short_alias, messages=LONG, max_tokens=12)
    assert overridden.usage is not None and overridden.usage.completion_tokens == 12


def test_alias_template_is_used(client: openai.OpenAI, short_alias: str) -> None:
    # chatml is SmolLM2's own format, so with the alias's template the answer is still right
    resp = client.chat.completions.create(
        model=short_alias, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=16
    )
    assert "Paris" in (resp.choices[0].message.content or "")


def test_requests_are_counted_per_alias(client: openai.OpenAI, short_alias: str, server) -> None:  # type: ignore[no-untyped-def]
    from studio.aliases.listing import usage_last_24h
    from studio.db import Database

    db = Database(f"sqlite:///{server.home / 'studio.db'}")
    try:
        before = usage_last_24h(db).get(short_alias, 0)
        client.chat.completions.create(model=short_alias, messages=LONG, max_tokens=2)
        time.sleep(0.5)
        assert usage_last_24h(db).get(short_alias, 0) == before + 1
    finally:
        db.dispose()


def test_unknown_alias_is_404_with_close_matches(client: openai.OpenAI, short_alias: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="smol:shrt", messages=LONG)
    message = info.value.body["message"]  # type: ignore[index]
    assert "Did you mean" in message and short_alias in message
