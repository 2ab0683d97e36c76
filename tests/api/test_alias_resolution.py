"""Aliases through the official `openai` SDK: resolution, parameter precedence, usage counting."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
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
    assert by_alias.model == short_alias  # named as the client asked for it, not by the model behind the alias
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


# -- aliases everywhere a client looks (issue 16, point 5) ---------------------------------------------------------
def test_models_list_holds_user_aliases_and_model_aliases_with_their_source(
    client: openai.OpenAI, short_alias: str
) -> None:
    models = {m.id: m for m in client.models.list()}

    user = models[short_alias]
    assert user.owned_by == "alias"
    assert user.model_extra == {"source": "user", "root": BUNDLED}  # the model the alias serves
    bundled = models[BUNDLED]
    assert bundled.owned_by == "bundled"
    assert bundled.model_extra == {"source": "model", "root": BUNDLED}
    assert list(models).index(short_alias) < list(models).index(BUNDLED)  # user aliases first, as they resolve


def test_models_retrieve_answers_for_an_alias(client: openai.OpenAI, short_alias: str) -> None:
    model = client.models.retrieve(short_alias)
    assert (model.id, model.owned_by, model.model_extra) == (short_alias, "alias", {"source": "user", "root": BUNDLED})
    assert client.models.retrieve(BUNDLED).model_extra == {"source": "model", "root": BUNDLED}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("smol:nosuch")


def test_every_answer_names_the_model_as_asked(client: openai.OpenAI, short_alias: str, server) -> None:  # type: ignore[no-untyped-def]
    chunks = list(client.chat.completions.create(model=short_alias, messages=LONG, max_tokens=2, stream=True))
    assert chunks and {c.model for c in chunks} == {short_alias}
    completion = client.completions.create(model=short_alias, prompt="Once upon a time", max_tokens=2)
    assert completion.model == short_alias
    by_default = client.chat.completions.create(model="default", messages=LONG, max_tokens=1)
    assert by_default.model == "default"

    with httpx.Client(base_url=server.url, timeout=120) as http:
        body = {"model": short_alias, "prompt": "Once upon a time", "params": {"max_tokens": 2}}
        r = http.post("/api/inference/generate", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == short_alias
        with http.stream("POST", "/api/inference/generate", json={**body, "stream": True}) as sse:
            events = [json.loads(line[6:]) for line in sse.iter_lines() if line.startswith("data: ")]
        assert [e["model"] for e in events if "model" in e] == [short_alias, short_alias]  # start and done


@pytest.fixture
def broken_aliases(server) -> Iterator[dict[str, Path]]:  # type: ignore[no-untyped-def]
    """Two hand-written alias files that cannot be read: an unknown key, and YAML that does not parse."""
    folder = server.home / "aliases"
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "api:typo": folder / "api--typo.yaml",
        "api:syntax": folder / "api-syntax-by-hand.yaml",  # not the canonical file name: found by its `alias:` line
    }
    files["api:typo"].write_text(
        f"alias: api:typo\nrepo: {BUNDLED}\nrequest_params: {{temprature: 0.5}}\n", encoding="utf-8"
    )
    files["api:syntax"].write_text(f"alias: api:syntax\nrepo: {BUNDLED}\nrequest_params: [unclosed\n", encoding="utf-8")
    yield files
    for path in files.values():
        path.unlink(missing_ok=True)


def test_a_broken_alias_file_answers_400_saying_why(
    client: openai.OpenAI, broken_aliases: dict[str, Path], server
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="api:typo", messages=LONG, max_tokens=1)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "alias_file_broken" and body["param"] == "model"
    message = body["message"]
    assert "alias 'api:typo'" in message and "broken" in message and "not found" not in message
    assert "$STUDIO_HOME/aliases/api--typo.yaml: " in message and "temprature" in message
    assert str(server.home) not in message  # no absolute path in an answer

    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="api:syntax", messages=LONG, max_tokens=1)
    message = info.value.body["message"]  # type: ignore[index]
    assert "$STUDIO_HOME/aliases/api-syntax-by-hand.yaml, line 4" in message and "not valid YAML" in message

    with pytest.raises(openai.BadRequestError, match="broken"):
        client.models.retrieve("api:typo")
    assert not {"api:typo", "api:syntax"} & {m.id for m in client.models.list()}  # listed only where they can be fixed
