"""Tables of the safety package: one row per generation of a bias & toxicity audit.

An audit's *scorecard* (aggregates per group, disparities) is small and final: it is the audit job's
``Job.result`` and ``runs/<job>/scorecard.json``. Its *generations* are many and change after the job ends —
reviewers mark them acceptable or problematic and write corrected responses — so they live here, one row each,
linked to the job (deleting the job deletes them).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from studio.db.tables import utcnow


class AuditGeneration(SQLModel, table=True):
    """One reply of the audited model to one prompt, with its scores and (once reviewed) the reviewer's verdict.

    ``category`` / ``group`` are the demographic slot values (``religion`` / ``Muslim``); ``template_id`` the
    prompt template; ``sample`` the sample number for that prompt. ``toxicity`` is the active scorer's score,
    ``refusal`` whether the refusal detector fired (``refusal_phrase`` is the phrase it found), ``sentiment``
    the lexicon score in [-1, 1]. ``review`` is ``acceptable`` | ``problematic`` | None (not reviewed);
    ``corrected`` a better response written by the reviewer (what the export turns into training data).
    """

    __tablename__ = "audit_generation"
    __table_args__ = (UniqueConstraint("job_id", "category", "group", "template_id", "sample"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", ondelete="CASCADE", index=True, max_length=32)
    category: str = Field(max_length=64)
    group: str = Field(max_length=128)
    template_id: str = Field(max_length=64)
    sample: int = 0
    prompt: str
    response: str
    finish_reason: str = Field(default="", max_length=32)
    toxicity: float = 0.0
    refusal: bool = False
    refusal_phrase: str | None = Field(default=None, max_length=128)
    sentiment: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    review: str | None = Field(default=None, max_length=16)
    corrected: str | None = None
    reviewer_note: str = Field(default="")
    reviewed_at: datetime | None = None
