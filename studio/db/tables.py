"""Database tables (SQLModel). Table classes are singular nouns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A random 32-character hex id (uuid4), used where ids appear in URLs."""
    return uuid.uuid4().hex


class SchemaVersion(SQLModel, table=True):
    """One row per applied migration."""

    __tablename__ = "schema_version"

    version: int = Field(primary_key=True)
    description: str
    applied_at: datetime = Field(default_factory=utcnow)


class RequestLog(SQLModel, table=True):
    """One finished generation, whichever door it came through (UI, OpenAI API, CLI)."""

    __tablename__ = "request_log"

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    model: str = Field(index=True, max_length=512)
    alias: str | None = Field(default=None, index=True, max_length=512)
    endpoint: str = Field(max_length=64)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    total_ms: float = 0.0
    finish_reason: str = Field(default="", max_length=32)
    error: str | None = None
    safety: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))  # migration 4
    user_id: str | None = Field(default=None, max_length=32)  # migration 9: who asked (None: the single user)


class Conversation(SQLModel, table=True):
    """One saved Playground conversation; its turns are ``ConversationMessage`` rows."""

    __tablename__ = "conversation"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    title: str = Field(default="", max_length=200)  # "" until the first user message names it
    model: str = Field(index=True, max_length=512)  # the model of the latest saved exchange
    use_case: str | None = Field(default=None, index=True, max_length=128)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)  # the history lists newest first
    owner_id: str | None = Field(default=None, index=True, max_length=32)  # migration 9 (None: the single user's)


class ConversationMessage(SQLModel, table=True):
    """One turn of a conversation, with the model, parameters and figures of the generation behind it."""

    __tablename__ = "conversation_message"
    # one row per place in the conversation: two writers racing for the same position fail instead of interleaving;
    # the constraint's index also serves "messages of conversation X in order"
    __table_args__ = (UniqueConstraint("conversation_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", ondelete="CASCADE", max_length=32)
    position: int  # 0-based order within the conversation
    role: str = Field(max_length=16)
    content: str
    created_at: datetime = Field(default_factory=utcnow)
    model: str | None = Field(default=None, max_length=512)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    stats: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class Dataset(SQLModel, table=True):
    """A named dataset of labelled examples; its content lives in immutable ``DatasetVersion`` rows."""

    __tablename__ = "dataset"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    name: str = Field(unique=True, max_length=200)
    description: str = Field(default="")
    kind: str = Field(max_length=16)  # "supervised" | "preference"
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)
    latest_version_id: str | None = Field(default=None, max_length=32)
    owner_id: str | None = Field(default=None, index=True, max_length=32)  # migration 9: who made it
    private: bool = False  # migration 9: only its owner (and admins) see it


class DatasetVersion(SQLModel, table=True):
    """One immutable version of a dataset, identified by the sha256 of its normalised content.

    The normalised examples are stored as JSONL under ``STUDIO_HOME/datasets/<dataset_id>/<content_hash>.jsonl``
    (``path`` is relative to STUDIO_HOME). Re-uploading identical content finds the existing row.
    """

    __tablename__ = "dataset_version"
    __table_args__ = (UniqueConstraint("dataset_id", "content_hash"), UniqueConstraint("dataset_id", "number"))

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    dataset_id: str = Field(foreign_key="dataset.id", ondelete="CASCADE", index=True, max_length=32)
    number: int  # 1, 2, 3 ... per dataset
    content_hash: str = Field(index=True, max_length=64)
    format: str = Field(max_length=32)  # messages | prompt_completion | alpaca | sharegpt | preference
    kind: str = Field(max_length=16)  # supervised | preference
    num_examples: int = 0
    size_bytes: int = 0
    path: str = Field(max_length=1024)
    source: str = Field(default="upload", max_length=32)  # upload | edit | conversations | feedback | builtin
    parent_version_id: str | None = Field(default=None, max_length=32)
    lineage: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    stats: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    """A background job (fine-tuning, evaluation, audit) queued in the database and claimed by a worker.

    States: queued -> running -> succeeded | failed | cancelled | interrupted. ``config`` holds the full,
    validated job config (the same schema as the YAML file / UI form / CLI).
    """

    __tablename__ = "job"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    kind: str = Field(index=True, max_length=32)  # finetune | eval | audit | ...
    name: str = Field(default="", max_length=200)
    state: str = Field(default="queued", index=True, max_length=16)
    priority: int = Field(default=0, index=True)  # higher runs first
    not_before: datetime | None = Field(default=None)
    device: str = Field(default="cpu", max_length=32)
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    worker_id: str | None = Field(default=None, max_length=128)
    pid: int | None = None
    attempts: int = 0
    cancel_requested: bool = False
    progress: float = 0.0  # 0..1
    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    eta_s: float | None = None
    message: str = Field(default="")  # last status line, or the failure reason
    artifact_path: str | None = Field(default=None, max_length=1024)
    checkpoint_path: str | None = Field(default=None, max_length=1024)
    result: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    favourite: bool = False
    archived: bool = False
    owner_id: str | None = Field(default=None, index=True, max_length=32)  # migration 9: who submitted it
    private: bool = False  # migration 9: only its owner (and admins) see it
    sweep_id: str | None = Field(default=None, index=True, max_length=32)  # migration 11: the sweep it belongs to


class JobMetric(SQLModel, table=True):
    """One logged point of a job (a training log step or an eval): ``values`` maps metric name -> number."""

    __tablename__ = "job_metric"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", ondelete="CASCADE", index=True, max_length=32)
    step: int
    epoch: float | None = None
    values: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Sweep(SQLModel, table=True):
    """A grid or random search over a job config: its trials are ``job`` rows carrying its id (``Job.sweep_id``).

    ``spec`` holds the validated ``studio.jobs.sweeps.SweepSpec`` as submitted; ``metric`` and ``mode`` rank the
    runs. The sweep's state is read from its jobs; ``message`` says why the queued rest was cancelled (a failure
    with ``continue_on_error`` false, the ``max_hours`` budget, or the user), ``stopped_at`` when.
    """

    __tablename__ = "sweep"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    name: str = Field(index=True, max_length=80)
    kind: str = Field(max_length=32)  # the job kind of every trial
    method: str = Field(max_length=16)  # grid | random
    metric: str = Field(max_length=100)
    mode: str = Field(max_length=8)  # min | max
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)
    stopped_at: datetime | None = None
    cancelled: bool = False  # the user cancelled it (else a stop was the budget's or a failure's)
    message: str = Field(default="")
    owner_id: str | None = Field(default=None, index=True, max_length=32)
    private: bool = False
