"""What the safety checks report: one :class:`Finding` per triggered check, a :class:`SafetyResult` per text.

Spans (``start``/``end``) are character offsets into the text as it was given to the check — the prompt as the
user typed it, or the reply as the model generated it — never into the masked text. Findings carry no copy of
the matched text, so recording them (next to a message, in the DB) does not store the personal data again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Check = Literal["pii", "toxicity", "word_list", "length"]
Where = Literal["input", "output"]
ActionTaken = Literal["flag", "mask", "redact", "block", "truncate"]


@dataclass(frozen=True)
class Finding:
    """One triggered check.

    ``check`` is the rule family; ``type`` the entity type (``PERSON``), ``toxicity``, ``offensive_word`` or the
    length limit's field name (``max_output_tokens``); ``score`` is the detector's confidence (1.0 for word list
    and length); ``action`` is what was done about it; ``where`` says whether it was the prompt or the reply.
    """

    check: Check
    type: str
    start: int
    end: int
    score: float
    action: ActionTaken
    where: Where
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what the API returns and the DB stores)."""
        return {
            "check": self.check,
            "type": self.type,
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 4),
            "action": self.action,
            "where": self.where,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class SafetyResult:
    """The outcome of checking one prompt or one reply.

    ``text`` is what may be used: the prompt to send to the model (masked/truncated as the policy says) or the
    reply as shown to the user. ``blocked`` is true when a block rule fired: for a prompt, do not generate;
    for a reply, it was stopped before the offending part. ``checked`` is false when filtering was turned off
    for this call (then ``text`` is the input unchanged and there are no findings).
    """

    text: str
    findings: tuple[Finding, ...] = ()
    blocked: bool = False
    reason: str | None = None
    checked: bool = True
    where: Where = "input"
    modified: bool = False
    scorer: str | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``findings`` as a list of :meth:`Finding.to_dict`."""
        return {
            "text": self.text,
            "findings": [f.to_dict() for f in self.findings],
            "blocked": self.blocked,
            "reason": self.reason,
            "checked": self.checked,
            "where": self.where,
            "modified": self.modified,
            "scorer": self.scorer,
        }
