"""Validation errors through the Gradio API (issue 15, point 8): a form value out of range is refused before the
handler runs with the sentence the page shows at the field, and a user's mistake leaves no traceback in the
server log (it is not a server error)."""

from __future__ import annotations

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from gradio_client.exceptions import ValidationError as ClientValidationError

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
ALIAS_FORM = [
    "temperature",
    "top_p",
    "top_k",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "max_tokens",
    "seed",
    "stop",
    "user",
    "n_threads",
    "n_ctx",
    "n_parallel",
    "n_predict",
    "n_keep",
    "n_seed",
    "engine",
    "dtype",
]


def test_an_out_of_range_form_value_is_refused_in_the_users_words(server) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    form = {**dict.fromkeys(ALIAS_FORM, ""), "name": "ui:hot", "model": BUNDLED, "chat_template": "(model's own)"}
    with pytest.raises(
        ClientValidationError, match=r"- temperature: Temperature must be between 0 and 2 \(you entered 5\)"
    ):
        client.predict(**{**form, "temperature": "5"}, api_name="/aliases_validate")
    # a field of the collapsed "Performance & Resources" section is not marked (the mark would go unseen): the
    # handler refuses it with a toast in the same words
    with pytest.raises(AppError, match=r"^n_ctx must be a whole number \(you entered 2\.5\)$"):
        client.predict(**{**form, "n_ctx": "2.5"}, api_name="/aliases_save")
    assert not (server.home / "aliases" / "ui--hot.yaml").exists()


def test_a_users_mistake_is_logged_without_a_traceback(server) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    start = server.log.stat().st_size
    with pytest.raises(AppError, match=r"Temperature must be between 0 and 2 \(you entered 5\)"):
        client.predict('{"prompt": "hi", "params": {"temperature": 5}}', None, BUNDLED, api_name="/playground_import")
    logged = server.log.read_bytes()[start:].decode("utf-8", "replace")
    assert "Traceback" not in logged
    assert "Input should be less than or equal to 2" in logged  # one line with the technical detail
