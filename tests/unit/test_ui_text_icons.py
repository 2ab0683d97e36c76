"""No string the studio shows needs an emoji font (issue 15, point 11): labels, statuses, toasts and table cells
are written in text (the browser test checks the rendered page; this one covers the messages it cannot reach,
such as toasts and errors, in every module of ``components/``, ``studio/`` and ``app.py``)."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

from studio.safety.service import safety_summary

ROOT = Path(__file__).resolve().parents[2]
EMOJI = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2300-\u23ff\u2b00-\u2bff\ufe0f\u2139\u2194-\u2199\u21a9\u21aa\u3030\u303d]"
)
SOURCES = sorted([*(ROOT / "components").rglob("*.py"), *(ROOT / "studio").rglob("*.py"), ROOT / "app.py"])


def emoji_in_strings(path: Path) -> list[str]:
    found = []
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    for token in tokens:
        if token.type in (tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -1)) and EMOJI.search(token.string):
            found.append(f"{path.relative_to(ROOT)}:{token.start[0]}: {EMOJI.findall(token.string)}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_string_in_the_code_needs_an_emoji_font(path: Path) -> None:
    assert emoji_in_strings(path) == []


def test_the_safety_summary_is_written_in_text() -> None:
    report = {
        "findings": [{"type": "EMAIL_ADDRESS", "action": "mask", "where": "input", "score": 1.0}],
        "output_blocked": True,
        "reason": "offensive word",
    }
    assert safety_summary(report) == (
        "Safety: EMAIL_ADDRESS mask in the prompt (score 1.00); reply stopped: offensive word"
    )
    assert safety_summary({"findings": []}) == "Safety: no findings"
    assert safety_summary(None) == ""
