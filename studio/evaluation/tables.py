"""The evaluation tables: every generation of an eval run with its per-example scores.

An eval run is a ``job`` row of kind ``eval`` (config, state, progress, and the per-model summary in
``Job.result``); each example × model is one :class:`EvalSample`. Created by migration 6 (``eval samples``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from studio.db.tables import utcnow


class EvalSample(SQLModel, table=True):
    """One example scored for one model in one eval run: the input, reference, output and scores."""

    __tablename__ = "eval_sample"
    # one row per (run, model, example): a resumed or repeated write replaces instead of duplicating
    __table_args__ = (UniqueConstraint("job_id", "model", "example_index"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", ondelete="CASCADE", index=True, max_length=32)
    model: str = Field(max_length=512)  # the model's label in the run
    example_index: int  # 0-based position in the evaluated data
    input: str = ""
    reference: str | None = None
    output: str = ""
    scores: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    stats: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: str | None = None  # a metric that raised on this example: "metric: last line of the traceback"
    created_at: datetime = Field(default_factory=utcnow)
