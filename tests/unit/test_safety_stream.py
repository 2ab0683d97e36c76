"""The safety filter without models (PII and toxicity off): word list, length cutoffs, the streaming guard and
the per-call switch. Presidio and the toxicity scorers are tested in tests/integration/test_safety_*.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from studio.safety.filter import OutputGuard, SafetyFilter, approx_token_count
from studio.safety.policy import SafetyPolicyConfig, policy_from_dict


@pytest.fixture
def words_file(tmp_path: Path) -> Path:
    path = tmp_path / "words.txt"
    path.write_text("# test list\nshit\nidiot\nass\nson of a bitch\n", encoding="utf-8")
    return path


def make_policy(words_file: Path, **sections: dict[str, Any]) -> SafetyPolicyConfig:
    data: dict[str, Any] = {
        "pii": {"enabled": False},
        "toxicity": {"enabled": False},
        "word_list": {"file": str(words_file), "action": "block"},
        "streaming": {"hold_chars": 8},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return policy_from_dict(data)


def stream(guard: OutputGuard, tokens: list[str]) -> tuple[list[str], bool]:
    """Feed ``tokens`` as a generation loop does; returns what was shown at each step and whether it stopped."""
    shown: list[str] = []
    for tok in tokens:
        decision = guard.feed(tok)
        shown.append(decision.emit)
        if decision.stop:
            return shown, True
    shown.append(guard.flush().emit)
    return shown, False


REPLY = ["The weather", " is lovely", " today, but", " honestly", " that sh", "it was bad", " and more", " text."]


def test_streaming_block_stops_before_a_word_split_across_tokens(words_file: Path) -> None:
    guard = SafetyFilter(make_policy(words_file)).output_guard()
    shown, stopped = stream(guard, REPLY)
    text = "".join(shown)
    assert stopped
    assert text == "The weather is lovely today, but honestly that "
    assert "sh" not in text.split()  # not even the first half of the split word was shown
    assert len(shown) == 6  # stopped on the token that completed the word, generation ends there
    assert guard.feed(" more").emit == "" and guard.feed(" more").stop
    result = guard.finish()
    assert result.blocked and result.text == text
    assert result.reason == "reply stopped: a word from the offensive-word list"
    [finding] = result.findings
    raw = "".join(REPLY[:6])
    assert (finding.check, finding.type, finding.action, finding.where) == (
        "word_list",
        "offensive_word",
        "block",
        "output",
    )
    assert raw[finding.start : finding.end] == "shit"


def test_streaming_does_not_block_a_word_that_only_starts_like_a_listed_one(words_file: Path) -> None:
    guard = SafetyFilter(make_policy(words_file)).output_guard()
    shown, stopped = stream(guard, ["I am your ass", "istant; ask me", " anything."])
    assert not stopped
    assert "".join(shown) == "I am your assistant; ask me anything."
    assert guard.finish().findings == ()


def test_text_is_held_back_then_released_whole_words_only(words_file: Path) -> None:
    guard = SafetyFilter(make_policy(words_file)).output_guard()
    decisions = [guard.feed(t) for t in ["Hello", " wonderful", " world", " of", " streaming"]]
    emitted = [d.emit for d in decisions]
    assert emitted[0] == ""  # nothing shown before a word has ended and hold_chars have followed
    for piece in emitted:
        assert piece == "" or piece.endswith(" ")
    assert "".join(emitted) + guard.flush().emit == "Hello wonderful world of streaming"


def test_masking_in_stream(words_file: Path) -> None:
    policy = make_policy(words_file, word_list={"action": "mask"})
    guard = SafetyFilter(policy).output_guard()
    shown, stopped = stream(guard, REPLY)
    assert not stopped
    assert "".join(shown) == "The weather is lovely today, but honestly that **** was bad and more text."
    result = guard.finish()
    assert not result.blocked and result.modified
    assert [(f.type, f.action) for f in result.findings] == [("offensive_word", "mask")]


def test_flag_records_without_changing_the_reply(words_file: Path) -> None:
    guard = SafetyFilter(make_policy(words_file, word_list={"action": "flag"})).output_guard()
    shown, _ = stream(guard, REPLY)
    assert "".join(shown) == "".join(REPLY)
    assert [f.action for f in guard.finish().findings] == ["flag"]


def test_toggle_off_lets_everything_through(words_file: Path) -> None:
    safety = SafetyFilter(make_policy(words_file, length={"max_output_tokens": 2, "max_input_chars": 5}))
    guard = safety.output_guard(enabled=False)
    shown = [guard.feed(t) for t in REPLY]
    assert [d.emit for d in shown] == REPLY and not any(d.stop for d in shown)
    result = guard.finish()
    assert result.text == "".join(REPLY) and result.findings == () and not result.checked
    prompt = safety.check_input("you idiot, a long prompt", enabled=False)
    assert prompt.text == "you idiot, a long prompt" and not prompt.checked and not prompt.blocked


def test_check_input_word_list_block_and_mask(words_file: Path) -> None:
    blocked = SafetyFilter(make_policy(words_file)).check_input("You idiot.")
    assert blocked.blocked and blocked.text == "You idiot."
    assert blocked.reason == "prompt refused: a word from the offensive-word list"
    masked = SafetyFilter(make_policy(words_file, word_list={"action": "mask"})).check_input("You idiot.")
    assert not masked.blocked and masked.text == "You *****." and masked.modified
    assert [(f.start, f.end, f.where) for f in masked.findings] == [(4, 9, "input")]


def test_word_list_can_apply_to_output_only(words_file: Path) -> None:
    safety = SafetyFilter(make_policy(words_file, word_list={"apply_to": ["output"]}))
    assert safety.check_input("You idiot.").findings == ()
    assert safety.check_output("You idiot.").blocked


def test_input_length_cutoffs(words_file: Path) -> None:
    cut = SafetyFilter(make_policy(words_file, length={"max_input_chars": 10})).check_input("0123456789abcdef")
    assert cut.text == "0123456789" and not cut.blocked
    [finding] = cut.findings
    assert (finding.type, finding.start, finding.end, finding.action) == ("max_input_chars", 10, 16, "truncate")

    blocked = SafetyFilter(make_policy(words_file, length={"max_input_chars": 10, "action": "block"})).check_input(
        "0123456789abcdef"
    )
    assert blocked.blocked and "16 characters > max_input_chars=10" in (blocked.reason or "")

    # Token limit with the model's tokenizer (here: one token per character pair).
    safety = SafetyFilter(make_policy(words_file, length={"max_input_tokens": 3}), count_tokens=lambda s: len(s) // 2)
    tokens = safety.check_input("abcdefghij")
    assert tokens.text == "abcdefg"  # the longest prefix with at most 3 tokens
    assert tokens.findings[0].type == "max_input_tokens"


def test_output_token_limit_stops_the_stream(words_file: Path) -> None:
    guard = SafetyFilter(make_policy(words_file, length={"max_output_tokens": 4})).output_guard()
    decisions = [guard.feed(t) for t in ["One", " two", " three", " four", " five", " six"]]
    assert [d.stop for d in decisions] == [False, False, False, False, True, True]
    assert "".join(d.emit for d in decisions) == "One two three four"
    result = guard.finish()
    assert not result.blocked  # truncate: the reply ends at the limit, it is not marked blocked
    assert [(f.type, f.action) for f in result.findings] == [("max_output_tokens", "truncate")]


def test_output_char_limit_with_block(words_file: Path) -> None:
    policy = make_policy(words_file, length={"max_output_chars": 12, "action": "block"})
    guard = SafetyFilter(policy).output_guard()
    decisions = [guard.feed(t) for t in ["Hello", " there", " general", " Kenobi"]]
    assert decisions[2].stop
    assert "".join(d.emit for d in decisions) == "Hello there "
    result = guard.finish()
    assert result.blocked and result.reason == "reply stopped: reply reached max_output_chars=12"


def test_check_output_matches_streaming(words_file: Path) -> None:
    safety = SafetyFilter(make_policy(words_file, word_list={"action": "mask"}))
    whole = safety.check_output("".join(REPLY))
    guard = safety.output_guard()
    stream(guard, REPLY)
    assert whole.text == guard.finish().text
    limited = SafetyFilter(make_policy(words_file, length={"max_output_tokens": 3})).check_output("a b c d e f")
    assert limited.text == "a b c " and limited.findings[0].type == "max_output_tokens"


def test_approx_token_count() -> None:
    assert approx_token_count("Hello, world! It's 2 o'clock.") == 12
