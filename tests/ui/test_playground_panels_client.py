"""The Playground panels' public api_names (token view, attention, batch, export/import), called with
`gradio_client` against the launched studio.

The token view and attention read the per-session state the last `/playground_generate` left behind, so each
test that needs a reply uses the one Client (one Gradio session) that generated it.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.exceptions import ValidationError as ClientValidationError

from studio.playground.prompts import BATCH_COLUMNS, import_prompt, to_openai_request

pytestmark = pytest.mark.slow

FRANCE = "What is the capital of France?"
BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
# model, system_prompt, temperature, top_p, top_k, max_tokens, repetition_penalty, frequency_penalty,
# presence_penalty, stop, seed: the shared Playground form as the batch and export endpoints take it
GREEDY_FORM = ["default", "", 0, 0.9, 50, 16, 1.0, 0, 0, "", -1]


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def _token_data(view: str) -> list[dict[str, Any]]:
    """The per-token facts the token view carries in each token's data-token attribute."""
    return [json.loads(html.unescape(m)) for m in re.findall(r'data-token="([^"]*)"', view)]


def _plot(value: Any) -> dict[str, Any]:
    assert isinstance(value, dict) and value.get("type") == "plotly", value
    figure: dict[str, Any] = json.loads(value["plot"])
    return figure


def _matrix(value: Any) -> np.ndarray:
    """A heat map's z as an array (plotly writes numpy arrays as typed binary: dtype, bdata, shape)."""
    if isinstance(value, dict):
        shape = tuple(int(n) for n in str(value["shape"]).split(","))
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).reshape(shape)
    return np.asarray(value, dtype=float)


@pytest.fixture(scope="module")
def replied(server) -> tuple[Client, str]:  # type: ignore[no-untyped-def]
    """A client whose session has just had a greedy reply to FRANCE; and that reply."""
    client = Client(server.url, verbose=False)
    chat, _stats, _box = client.predict(
        FRANCE, [], "default", "", 0, 0.9, 50, 16, 1.0, "", -1, api_name="/playground_generate"
    )
    reply = _text(chat[-1])
    assert "Paris" in reply
    return client, reply


def test_token_view_before_any_reply_says_what_to_do(server) -> None:  # type: ignore[no-untyped-def]
    fresh = Client(server.url, verbose=False)  # a new Gradio session: no reply yet
    with pytest.raises(AppError, match="no reply to analyse yet"):
        fresh.predict(api_name="/playground_token_view")


def test_token_view_shows_the_last_replys_tokens(replied: tuple[Client, str]) -> None:
    client, reply = replied
    view, plot = client.predict(api_name="/playground_token_view")

    tokens = _token_data(view)
    assert "".join(t["token"] for t in tokens) == reply  # exactly this session's reply, token by token
    assert any(t["token"].strip() == "Paris" for t in tokens)
    for t in tokens:
        assert 0.0 <= t["probability"] <= 1.0
        assert len(t["top"]) == 5  # the top-5 alternatives shown on hover
    assert view.count('class="wt-tok"') == len(tokens)

    figure = _plot(plot)
    chosen = figure["data"][0]
    assert chosen["x"] == list(range(len(tokens)))
    assert chosen["y"] == pytest.approx([t["logprob"] for t in tokens])


def test_attention_for_the_last_reply(replied: tuple[Client, str]) -> None:
    client, _reply = replied
    layer, head, plot, summary = client.predict(False, api_name="/playground_attention")

    # SmolLM2-135M: 30 layers, 9 heads; the sliders are set from the maps, the middle layer shown first
    assert layer["maximum"] == 29 and layer["value"] == 15
    assert head["maximum"] == 8 and head["value"] == 0
    assert "30 layers × 9 heads" in summary
    figure = _plot(plot)
    heat = figure["data"][0]
    assert heat["type"] == "heatmap"
    assert "layer 15 of 29" in figure["layout"]["title"]["text"] and "head 0" in figure["layout"]["title"]["text"]
    z = _matrix(heat["customdata"])  # the weights; ``z`` is their log10, which the colours follow
    assert z.shape == (len(heat["x"]), len(heat["y"]))
    assert any(label.endswith("Paris") for label in heat["x"])  # the reply's tokens are on the axes
    # each query's weights are a distribution over keys (to bf16 precision)
    assert np.allclose(z.sum(axis=1), 1.0, atol=1e-2)
    assert np.allclose(np.triu(z, k=1), 0.0)  # causal: no token attends to a later one

    _layer, _head, averaged, _summary = client.predict(True, api_name="/playground_attention")
    assert "average of all heads" in _plot(averaged)["layout"]["title"]["text"]


def _rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    assert table["headers"] == list(BATCH_COLUMNS)
    return [dict(zip(table["headers"], row, strict=True)) for row in table["data"]]


def test_batch_of_three_prompts_gives_three_rows_and_a_matching_csv(server) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    prompts = [FRANCE, "Name a primary colour.", "Say hello."]
    table, csv_path = client.predict("\n".join(prompts), None, *GREEDY_FORM, api_name="/playground_batch")

    rows = _rows(table)
    assert [r["index"] for r in rows] == [1, 2, 3]
    assert [r["prompt"] for r in rows] == prompts
    assert "Paris" in rows[0]["output"]
    assert all(r["output"] and r["error"] == "" and 0 < r["completion_tokens"] <= 16 for r in rows)

    with open(csv_path, encoding="utf-8", newline="") as fh:
        saved = list(csv.DictReader(fh))
    assert [r["prompt"] for r in saved] == prompts
    assert [r["output"] for r in saved] == [r["output"] for r in rows]
    assert [int(r["completion_tokens"]) for r in saved] == [r["completion_tokens"] for r in rows]
    # and a copy stays in STUDIO_HOME/exports
    kept = sorted((server.home / "exports").glob("batch-*/batch.csv"), key=lambda p: p.stat().st_mtime)
    assert kept and kept[-1].read_text(encoding="utf-8") == Path(csv_path).read_text(encoding="utf-8")


def test_batch_from_an_uploaded_jsonl_file_with_a_system_prompt(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    upload = tmp_path / "prompts.jsonl"
    upload.write_text(
        json.dumps({"prompt": FRANCE}) + "\n\n" + json.dumps({"prompt": "What is 2 + 2?"}) + "\n", encoding="utf-8"
    )
    form = list(GREEDY_FORM)
    table, _ = client.predict("", handle_file(str(upload)), *form, api_name="/playground_batch")
    plain = _rows(table)
    # longer than the default system prompt the model's chat template adds when none is given
    form[1] = (
        "You are a pirate captain sailing the seven seas. Answer every question in the voice of a pirate, "
        "with plenty of nautical words and a hearty arr."
    )
    table, _ = client.predict("", handle_file(str(upload)), *form, api_name="/playground_batch")
    pirate = _rows(table)

    assert [r["prompt"] for r in plain] == [FRANCE, "What is 2 + 2?"]
    # the system prompt is sent with every prompt: longer prompts, different replies
    assert all(p["prompt_tokens"] > q["prompt_tokens"] for p, q in zip(pirate, plain, strict=True))


def test_batch_errors_are_shown_not_swallowed(server) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    with pytest.raises(AppError, match="no prompts"):
        client.predict("  \n \n", None, *GREEDY_FORM, api_name="/playground_batch")
    bad = list(GREEDY_FORM)
    bad[9] = "\\x"  # a stop sequence with a broken escape
    with pytest.raises(AppError, match="stop sequence"):
        client.predict("hi", None, *bad, api_name="/playground_batch")


def test_batch_stop_ends_the_running_batch(server) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    form = list(GREEDY_FORM)
    form[5] = 400  # long replies, so the stop arrives while the first is being written
    prompts = [f"Write a long story about a dragon number {i}." for i in range(6)]
    job = client.submit("\n".join(prompts), None, *form, api_name="/playground_batch")
    deadline = time.monotonic() + 120
    while not job.done() and time.monotonic() < deadline:  # stop again until it lands on a running reply
        time.sleep(0.5)
        client.predict(api_name="/playground_batch_stop")
    table, _csv = job.result(timeout=120)

    rows = _rows(table)
    assert 1 <= len(rows) < len(prompts)  # no prompt started after the stop
    assert rows[-1]["finish_reason"] == "cancelled"
    assert rows[-1]["completion_tokens"] < 400


def _export(client: Client, prompt: str, system: str, temperature: float, template: str = "chat") -> tuple:
    form = ["default", system, temperature, 0.9, 50, 64, 1.0, 0, 0, "", -1]
    return tuple(client.predict(prompt, template, *form, api_name="/playground_export"))


def test_export_gives_an_openai_request_with_the_model_and_temperature(server) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    spec_json, spec_yaml, body_json, curl, openai_code, gradio_code, file_path = _export(
        client, FRANCE, "Answer in one word.", 0.3
    )

    spec = import_prompt(spec_json)
    body = to_openai_request(spec)
    assert body["model"] == "default"
    assert body["temperature"] == 0.3
    assert body["messages"] == [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": FRANCE},
    ]
    assert json.loads(body_json) == body  # the OpenAI view shows the same body
    assert import_prompt(spec_yaml) == spec
    assert Path(file_path).read_text(encoding="utf-8").strip() == spec_json.strip()
    assert f"{server.url}/v1/chat/completions" in curl and '"temperature": 0.3' in curl
    assert f'base_url="{server.url}/v1"' in openai_code
    assert "temperature=0.3" in gradio_code and 'api_name="/playground_generate"' in gradio_code
    compile(openai_code, "openai_snippet", "exec")
    compile(gradio_code, "gradio_snippet", "exec")


def test_export_needs_a_prompt(server) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    # refused before the export runs, with the sentence the page shows at the Prompt field (issue 15, point 8)
    with pytest.raises(ClientValidationError, match="- prompt: type the prompt to export first"):
        _export(client, "   ", "", 0.3)


def test_import_restores_the_prompt_and_its_settings(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    prompt = "Summarise:\nThe quick brown fox jumps over the lazy dog."
    spec_json, spec_yaml, *_rest = _export(client, prompt, "You summarise.", 0.3, template="instruction")

    out = client.predict(spec_json, None, "default", api_name="/playground_import")
    got_prompt, template, system, *params, status = out
    assert (got_prompt, template, system) == (prompt, "instruction", "You summarise.")
    by_name = dict(zip(("temperature", "top_p", "top_k", "max_tokens"), params[:4], strict=True))
    assert by_name["temperature"] == 0.3
    assert by_name["max_tokens"] == 64
    assert by_name["top_p"] == {"__type__": "update"}  # not in the file: the form keeps its value
    assert status.startswith("Imported a **instruction** prompt") and "pick it" not in status
    *_same, status = client.predict(spec_json, None, BUNDLED, api_name="/playground_import")
    assert "pick it" not in status  # 'default' is the bundled model: nothing to switch

    upload = tmp_path / "prompt.yaml"
    upload.write_text(spec_yaml, encoding="utf-8")
    from_file = client.predict("", handle_file(str(upload)), "default", api_name="/playground_import")
    assert tuple(from_file[:3]) == (prompt, "instruction", "You summarise.")
    assert from_file[3] == 0.3


def test_import_of_an_openai_request_and_of_bad_text(server) -> None:  # type: ignore[no-untyped-def]
    client = Client(server.url, verbose=False)
    body = {
        "model": "some-other-model",
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": FRANCE}],
        "temperature": 0.2,
        "stop": ["\n\n", "END"],
    }
    got_prompt, template, system, *params, status = client.predict(
        json.dumps(body), None, "default", api_name="/playground_import"
    )
    assert (got_prompt, template, system) == (FRANCE, "chat", "Be terse.")
    assert params[0] == 0.2
    assert params[7] == "\\n\\n\nEND"  # the stop box: one per line, escapes for newlines
    assert "some-other-model" in status and "pick it in the Model box" in status  # the model is not switched

    with pytest.raises(AppError, match="line 1, column 2"):
        client.predict("{bad json", None, "default", api_name="/playground_import")
