"""The rule that keeps dates and codes out of PERSON findings, without spaCy (issue 15, point 7)."""

from __future__ import annotations

import pytest

from studio.safety.pii import PiiSpan, drop_implausible_people


def person(text: str, part: str) -> PiiSpan:
    start = text.index(part)
    return PiiSpan("PERSON", start, start + len(part), 0.85)


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("expiry 09/27", "expiry 09/27"),  # a digit: names have none
        ("Batch INV-2024-001", "Batch INV-2024-001"),
        ("Order B12", "Order B12"),
        ("Valid Sept 27", "Valid Sept"),  # ends in a month that a day number follows
        ("The deadline 27 Sept is fine.", "27 Sept"),
        ("Due 3rd of May, said Kim", "Due 3rd"),
        ("-- / --", "-- / --"),  # no letter at all
    ],
)
def test_dates_and_codes_are_dropped(text: str, part: str) -> None:
    assert drop_implausible_people(text, [person(text, part)]) == []


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("My name is John Smith", "John Smith"),
        ("June Carter sang on 27 Sept", "June Carter"),  # the month is a first name; the date is elsewhere
        ("Ask May Chen on the 5th", "May Chen"),
        ("José Álvarez-Núñez wrote", "José Álvarez-Núñez"),
        ("O'Brien called", "O'Brien"),
    ],
)
def test_names_are_kept(text: str, part: str) -> None:
    span = person(text, part)
    assert drop_implausible_people(text, [span]) == [span]


def test_other_entity_types_are_left_alone() -> None:
    text = "Meet at 10 Downing Street"
    place = PiiSpan("LOCATION", 8, len(text), 0.85)
    assert drop_implausible_people(text, [place]) == [place]
