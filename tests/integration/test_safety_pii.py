"""Presidio, offline, with the spaCy model package: finds, masks and streams PII in a reference sentence."""

from __future__ import annotations

from typing import Any

import pytest

from studio.safety.filter import SafetyFilter
from studio.safety.pii import Edit, PiiAnalyzer, apply_edits, get_pii_analyzer
from studio.safety.policy import SUPPORTED_PII_ENTITIES, SafetyPolicyConfig, policy_from_dict

SENTENCE = "My name is John Smith, email john.smith@example.com, phone 212-555-0123, card 4111 1111 1111 1111"
EXPECTED = {
    "PERSON": "John Smith",
    "EMAIL_ADDRESS": "john.smith@example.com",
    "PHONE_NUMBER": "212-555-0123",
    "CREDIT_CARD": "4111 1111 1111 1111",
}
MASKED = "My name is <PERSON>, email <EMAIL_ADDRESS>, phone <PHONE_NUMBER>, card <CREDIT_CARD>"


@pytest.fixture(scope="module")
def analyzer() -> PiiAnalyzer:
    return get_pii_analyzer()


def pii_policy(**pii: Any) -> SafetyPolicyConfig:
    return policy_from_dict(
        {
            "pii": {"entities": list(EXPECTED), **pii},
            "toxicity": {"enabled": False},
            "word_list": {"enabled": False},
            "streaming": {"hold_chars": 32, "release_chars": 24},
        }
    )


def test_reference_sentence_entities_and_spans(analyzer: PiiAnalyzer) -> None:
    assert analyzer.ner_available
    spans = analyzer.analyze(SENTENCE, list(EXPECTED), 0.4)
    assert {s.entity_type: SENTENCE[s.start : s.end] for s in spans} == EXPECTED


def test_phone_number_is_not_reported_as_another_id(analyzer: PiiAnalyzer) -> None:
    # Ask for every entity type the analyzer knows: the phone's span must only be a PHONE_NUMBER
    # (the UK NHS recognizer, dropped here, reads 10-digit US phone numbers as NHS numbers).
    start = SENTENCE.index("212-555-0123")
    end = start + len("212-555-0123")
    spans = analyzer._analyzer.analyze(text=SENTENCE, language="en", entities=list(SUPPORTED_PII_ENTITIES))
    on_phone = {r.entity_type for r in spans if r.start < end and start < r.end}
    assert on_phone == {"PHONE_NUMBER"}
    assert "UK_NHS" not in analyzer.supported_entities()


def test_policy_entity_list_matches_the_analyzer(analyzer: PiiAnalyzer) -> None:
    assert analyzer.supported_entities() == sorted(SUPPORTED_PII_ENTITIES)


def test_check_input_masks_the_reference_sentence() -> None:
    result = SafetyFilter(pii_policy()).check_input(SENTENCE)
    assert result.text == MASKED
    assert [(f.type, f.action, f.where) for f in result.findings] == [
        (t, "mask", "input") for t in ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD")
    ]
    assert {f.type: SENTENCE[f.start : f.end] for f in result.findings} == EXPECTED


def test_redact_and_block_actions() -> None:
    redacted = SafetyFilter(pii_policy(action="redact")).check_input(SENTENCE)
    assert redacted.text == "My name is ****, email ****, phone ****, card ****"
    blocked = SafetyFilter(pii_policy(action="block")).check_input(SENTENCE)
    assert blocked.blocked and blocked.text == SENTENCE
    assert blocked.reason is not None and blocked.reason.startswith("prompt refused: personal data (")
    flagged = SafetyFilter(pii_policy(action="flag")).check_input(SENTENCE)
    assert flagged.text == SENTENCE and len(flagged.findings) == 4 and not flagged.modified


def test_apply_edits_uses_presidio_replacements() -> None:
    text = "Mail jane@example.org now, damn it"
    edits = [Edit(5, 21, "EMAIL_ADDRESS", "mask"), Edit(27, 31, "offensive_word", "stars")]
    assert apply_edits(text, edits) == "Mail <EMAIL_ADDRESS> now, **** it"


def tokens_of(text: str, size: int = 3) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


REPLY = (
    "Sure, I can help with that request. You can write to john.smith@example.com or call "
    "212-555-0123 during office hours, and the team will answer quickly."
)


def test_stream_masks_pii_split_across_tokens() -> None:
    guard = SafetyFilter(pii_policy()).output_guard()
    shown = []
    for tok in tokens_of(REPLY):
        decision = guard.feed(tok)
        assert not decision.stop
        shown.append(decision.emit)
        so_far = "".join(shown)
        # No part of the e-mail address or phone number is ever shown, not even before it is complete.
        assert "john" not in so_far and "212" not in so_far and "555" not in so_far
    shown.append(guard.flush().emit)
    text = "".join(shown)
    assert text == REPLY.replace("john.smith@example.com", "<EMAIL_ADDRESS>").replace("212-555-0123", "<PHONE_NUMBER>")
    assert sum(1 for s in shown if s) >= 3  # released in several chunks, not only at the end
    result = guard.finish()
    assert result.text == text
    assert [(f.type, REPLY[f.start : f.end]) for f in result.findings] == [
        ("EMAIL_ADDRESS", "john.smith@example.com"),
        ("PHONE_NUMBER", "212-555-0123"),
    ]


def test_stream_block_stops_before_the_card_number() -> None:
    reply = "Here are the details you asked for: the card number is 4111 1111 1111 1111 and it expires soon."
    guard = SafetyFilter(pii_policy(action="block")).output_guard()
    shown, stopped_at = [], None
    for i, tok in enumerate(tokens_of(reply)):
        decision = guard.feed(tok)
        shown.append(decision.emit)
        if decision.stop:
            stopped_at = i
            break
    assert stopped_at is not None and stopped_at < len(tokens_of(reply)) - 1  # stopped mid-way
    text = "".join(shown)
    assert text == "Here are the details you asked for: the card number is "
    result = guard.finish()
    assert result.blocked and result.text == text
    assert [f.type for f in result.findings] == ["CREDIT_CARD"]


def test_output_only_flag_runs_once_at_the_end() -> None:
    policy = pii_policy(action="flag", apply_to=["output"])
    safety = SafetyFilter(policy)
    assert safety.check_input(SENTENCE).findings == ()
    guard = safety.output_guard()
    shown = "".join(guard.feed(t).emit for t in tokens_of(SENTENCE)) + guard.flush().emit
    assert shown == SENTENCE
    assert {f.type for f in guard.finish().findings} == set(EXPECTED)


def test_pattern_only_fallback_without_the_spacy_package() -> None:
    analyzer = PiiAnalyzer(spacy_model="no_such_spacy_model_package")
    assert not analyzer.ner_available
    assert "names, locations and organisations unavailable" in analyzer.status
    found = {s.entity_type for s in analyzer.analyze(SENTENCE, list(EXPECTED), 0.3)}
    assert found == {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"}
    assert analyzer.unavailable(["PERSON", "EMAIL_ADDRESS", "LOCATION"]) == ["PERSON", "LOCATION"]
