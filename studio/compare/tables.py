"""Database tables of the Compare tab (created by migration 4 in ``studio.db.migrations``).

``Battle``            one prompt answered by two contenders (named, blind or batch mode) and, once voted, the verdict
``RankingItem``       one prompt with 2-6 candidate replies for annotators to order or score
``RankingAnnotation`` one annotator's order (or 1-7 scores) of one item's candidates
``Annotator``         a person who annotates, identified by the name they type
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from studio.db.tables import new_id, utcnow


class Battle(SQLModel, table=True):
    """Two contenders' replies to the same prompt; ``winner`` is None until someone votes.

    ``messages_a``/``messages_b`` are the exact chats each side answered (they differ once a named-mode
    conversation has continued); ``config_*`` hold the contender (model, adapter, resolved model id).
    """

    __tablename__ = "compare_battle"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    mode: str = Field(max_length=16)  # named | blind | batch
    batch_id: str | None = Field(default=None, index=True, max_length=32)
    position: int = 0  # order within a batch
    model_a: str = Field(index=True, max_length=600)
    model_b: str = Field(index=True, max_length=600)
    config_a: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    config_b: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prompt: str = ""  # the last user message, for tables and filters
    messages_a: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    messages_b: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reply_a: str = ""
    reply_b: str = ""
    stats_a: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    stats_b: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    winner: str | None = Field(default=None, index=True, max_length=16)  # a | b | tie | both_bad
    note: str = ""
    voted_at: datetime | None = None
    use_case: str | None = Field(default=None, index=True, max_length=128)
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    user_id: str | None = Field(default=None, index=True, max_length=32)  # migration 9: who ran it (and voted)


class Annotator(SQLModel, table=True):
    """Someone who ranks candidates; created the first time a name is used."""

    __tablename__ = "compare_annotator"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=100)
    created_at: datetime = Field(default_factory=utcnow)
    user_id: str | None = Field(default=None, max_length=32)  # migration 9: the signed-in user behind the name


class RankingItem(SQLModel, table=True):
    """A prompt and its candidate replies (``candidates``: ``[{"label", "config", "text"}, ...]``)."""

    __tablename__ = "compare_ranking_item"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    prompt: str = ""
    messages: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    candidates: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    use_case: str | None = Field(default=None, index=True, max_length=128)
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class RankingAnnotation(SQLModel, table=True):
    """One annotator's judgement of one item: an ``order`` (candidate indices, best first) or ``scores``
    (one 1-7 reward per candidate). Annotating the same item again replaces the earlier judgement."""

    __tablename__ = "compare_ranking_annotation"
    __table_args__ = (UniqueConstraint("item_id", "annotator_id"),)

    id: int | None = Field(default=None, primary_key=True)
    item_id: str = Field(foreign_key="compare_ranking_item.id", ondelete="CASCADE", index=True, max_length=32)
    annotator_id: int = Field(foreign_key="compare_annotator.id", ondelete="CASCADE", index=True)
    kind: str = Field(max_length=8)  # order | score
    order: list[int] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    scores: list[int] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    note: str = ""
    created_at: datetime = Field(default_factory=utcnow, index=True)


COMPARE_TABLES = (Battle, Annotator, RankingItem, RankingAnnotation)
