"""The shapes the dataset store returns (never live table rows), and the labels a dataset card shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from studio.datasets.formats import DatasetKind
from studio.datasets.stats import LanguageMix, TokenStats
from studio.datasets.validate import ValidationReport

KIND_BADGES: dict[str, str] = {"supervised": "Supervised", "preference": "Preference", "kto": "KTO"}


class DatasetPublic(BaseModel):
    """A dataset as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str
    kind: DatasetKind
    created_at: datetime
    updated_at: datetime
    latest_version_id: str | None
    owner_id: str | None = None  # the user who made it (None: before users, or the single user)
    private: bool = False  # only its owner and admins see it


class DatasetVersionPublic(BaseModel):
    """One immutable version of a dataset."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    number: int
    content_hash: str
    format: str
    kind: DatasetKind
    num_examples: int
    size_bytes: int
    path: str = Field(description="The JSONL file, relative to STUDIO_HOME.")
    source: str
    parent_version_id: str | None
    lineage: dict[str, Any]
    stats: dict[str, Any]
    created_at: datetime


class ImportResult(BaseModel):
    """The outcome of an import or a new version: ``created`` is False when identical content already existed."""

    dataset: DatasetPublic
    version: DatasetVersionPublic
    created: bool
    report: ValidationReport | None = None


class DatasetCard(BaseModel):
    """One dataset in the list: what a card shows."""

    name: str
    description: str
    kind: DatasetKind
    badge: str = Field(description='"Supervised", "Preference" or "KTO".')
    format: str = Field(description="The format of the latest version's upload.")
    format_label: str
    num_examples: int
    examples_label: str = Field(description='e.g. "150 pairs" (supervised) or "40 preference pairs".')
    size_bytes: int
    size_label: str
    version: int = Field(description="Number of the latest version.")
    versions: int = Field(description="How many versions exist.")
    version_id: str
    created_at: datetime
    updated_at: datetime
    token_stats: TokenStats | None = None
    languages: LanguageMix | None = Field(None, description="The latest version's language mix, when worked out.")
    owner: str = ""  # the user who made it ("" before users existed, or the single user)
    private: bool = False  # only its owner and admins see it


class DatasetPreview(BaseModel):
    """Rows for a preview table; long texts are cut to about ``PREVIEW_CHARS`` characters."""

    headers: list[str]
    rows: list[list[str | int]]
    total: int


def examples_label(kind: str, n: int) -> str:
    """``"150 pairs"`` for supervised examples (input → output), ``"40 preference pairs"`` for preference,
    ``"30 labelled replies"`` for KTO examples."""
    if kind == "kto":
        return f"{n} labelled repl{'y' if n == 1 else 'ies'}"
    unit = "pair" if n == 1 else "pairs"
    return f"{n} {unit}" if kind == "supervised" else f"{n} preference {unit}"


def size_label(n: int) -> str:
    """Bytes in a short human form: ``"812 B"``, ``"12.3 KB"``, ``"4.0 MB"``."""
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"
