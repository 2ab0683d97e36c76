"""The safety layer at inference time, through the engine manager and the OpenAI endpoint: a prompt's PII is
masked before the model sees it, a block rule stops a streaming reply mid-way (finish_reason content_filter),
the per-request switch turns it off, an alias's policy turns it on, and every finding is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from studio.context import AppContext
from studio.db.tables import RequestLog
from studio.inference.base import ChatMessage
from studio.inference.params import make_sampling_params
from studio.safety.service import SafetyBlockedError

pytestmark = pytest.mark.slow

FRANCE = [ChatMessage("user", "What is the capital of France?")]
GREEDY = make_sampling_params(temperature=0, max_tokens=24)
# greedy: "Bonjour, I'm delighted to share with you the breathtaking beauty of Paris, the capital ..." (40 tokens)
ABOUT_PARIS = [ChatMessage("user", "Tell me about Paris, the capital of France.")]


def write_policy(folder: Path, name: str, *, word_action: str = "block", pii_action: str = "mask") -> Path:
    """A policy whose word list holds 'Paris' (the bundled model's greedy answer to FRANCE contains it)."""
    folder.mkdir(parents=True, exist_ok=True)
    words = folder / f"{name}-words.txt"
    words.write_text("paris\n", encoding="utf-8")
    policy = {
        "name": name,
        "pii": {"enabled": True, "entities": ["EMAIL_ADDRESS", "PHONE_NUMBER"], "action": pii_action},
        "toxicity": {"enabled": False},
        "word_list": {"enabled": True, "file": str(words), "action": word_action, "apply_to": ["output"]},
        "streaming": {"hold_chars": 16, "release_chars": 32},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    return path


def test_block_rule_stops_the_stream_and_toggle_off_lets_it_through(private_ctx: AppContext) -> None:
    write_policy(private_ctx.settings.home / "safety", "policy")  # the studio's policy (what the Safety tab saves)
    long = make_sampling_params(temperature=0, max_tokens=40)
    plain = private_ctx.engines.chat("default", ABOUT_PARIS, long, safety=False)
    assert "Paris" in plain.text and plain.safety is None  # filtering off: nothing checked, nothing recorded

    handle = private_ctx.engines.start_chat("default", ABOUT_PARIS, long, safety=True)
    shown = "".join(item.text for item in handle if hasattr(item, "text"))
    result = handle.result
    assert result.stats.finish_reason == "content_filter"
    assert "Paris" not in result.text and plain.text.startswith(result.text)  # cut right before the word
    assert "Paris" not in shown  # never streamed, not even briefly
    assert result.stats.completion_tokens < plain.stats.completion_tokens  # the generation stopped early
    assert result.safety is not None and result.safety["output_blocked"]
    found = result.safety["findings"]
    assert ("word_list", "block", "output") in [(f["check"], f["action"], f["where"]) for f in found]


def test_prompt_pii_is_masked_before_the_model_and_recorded(private_ctx: AppContext) -> None:
    write_policy(private_ctx.settings.home / "safety", "policy", word_action="flag")
    msgs = [ChatMessage("user", "Repeat exactly: my e-mail is jane.doe@example.com")]
    result = private_ctx.engines.chat("default", msgs, make_sampling_params(temperature=0, max_tokens=20), safety=True)
    assert "jane.doe@example.com" not in result.text
    kinds = {(f["type"], f["action"], f["where"]) for f in result.safety["findings"]}  # type: ignore[index]
    assert ("EMAIL_ADDRESS", "mask", "input") in kinds
    assert result.safety["input_modified"]  # type: ignore[index]
    with private_ctx.db.session() as session:
        rows = session.query(RequestLog).all()
    recorded = [r.safety for r in rows if r.safety]
    assert recorded and ("EMAIL_ADDRESS", "input") in {(f["type"], f["where"]) for f in recorded[-1]["findings"]}


def test_alias_policy_filters_by_default_and_blocks_prompts(private_ctx: AppContext) -> None:
    folder = private_ctx.settings.home / "safety"
    write_policy(folder, "strict", pii_action="block")
    aliases = private_ctx.settings.home / "aliases"
    aliases.mkdir(exist_ok=True)
    alias = {"alias": "safe-smol", "repo": "HuggingFaceTB/SmolLM2-135M-Instruct", "safety_policy": "strict"}
    (aliases / "safe-smol.yaml").write_text(yaml.safe_dump(alias), encoding="utf-8")
    result = private_ctx.engines.chat("safe-smol", FRANCE, GREEDY)  # no switch: the alias's policy applies
    assert result.stats.finish_reason == "content_filter" and result.safety is not None
    assert result.safety["policy"] == "$STUDIO_HOME/safety/strict.yaml"  # never the absolute path
    assert private_ctx.engines.chat("safe-smol", FRANCE, GREEDY, safety=False).stats.finish_reason == "stop"
    with pytest.raises(SafetyBlockedError, match="blocked by the safety policy before generation"):
        private_ctx.engines.chat("safe-smol", [ChatMessage("user", "Mail me at bob@example.org")], GREEDY)


def test_openai_endpoint_honours_the_per_request_safety_field(server) -> None:  # type: ignore[no-untyped-def]
    from openai import BadRequestError, OpenAI

    folder = Path(server.home) / "safety"
    studio_policy = folder / "policy.yaml"
    before = studio_policy.read_text(encoding="utf-8") if studio_policy.is_file() else None
    policy = write_policy(folder, "policy")
    try:
        client = OpenAI(base_url=f"{server.url}/v1", api_key="none")
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        plain = client.chat.completions.create(model="default", messages=messages, temperature=0, max_tokens=24)
        assert "Paris" in (plain.choices[0].message.content or "")
        filtered = client.chat.completions.create(
            model="default", messages=messages, temperature=0, max_tokens=24, extra_body={"safety": True}
        )
        assert filtered.choices[0].finish_reason == "content_filter"
        assert "Paris" not in (filtered.choices[0].message.content or "")
        assert filtered.model_extra and filtered.model_extra["safety"]["output_blocked"]
        stream = client.chat.completions.create(
            model="default", messages=messages, temperature=0, max_tokens=24, stream=True, extra_body={"safety": True}
        )
        chunks = list(stream)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "Paris" not in streamed
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
            "content_filter"
        ]
        write_policy(folder, "policy", pii_action="block")
        with pytest.raises(BadRequestError, match=r"content_filter|blocked by the safety policy"):
            client.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "Mail me at bob@example.org"}],
                max_tokens=4,
                extra_body={"safety": True},
            )
    finally:  # the server's own policy as it was (the Safety tab tests read it)
        if before is None:
            policy.unlink()
        else:
            policy.write_text(before, encoding="utf-8")


def test_cli_safety_scan_json(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    text = tmp_path / "note.txt"
    text.write_text("My name is John Smith, email john.smith@example.com, phone 212-555-0123.", encoding="utf-8")
    env = dict(os.environ, STUDIO_HOME=str(tmp_path / "home"))
    out = subprocess.run(
        [sys.executable, "-m", "studio", "safety", "scan", str(text), "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    types = {f["type"] for f in report["findings"]}
    assert {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER"} <= types
    assert all({"type", "start", "end", "score"} <= set(f) for f in report["findings"])
    assert "john.smith@example.com" not in report["anonymized"] and "<EMAIL_ADDRESS>" in report["anonymized"]
