"""Datasets of labelled examples: upload (JSONL/CSV/JSON), format detection, validation, versions, lineage.

``DatasetStore`` is the entry point; ``formats`` documents the accepted and the canonical formats.
"""

from studio.datasets.builtin import ensure_builtin_datasets
from studio.datasets.formats import ColumnMapping, DatasetFormat, DatasetKind, detect_format, normalise, to_trl_record
from studio.datasets.parse import MAX_UPLOAD_BYTES, parse_file
from studio.datasets.schemas import DatasetCard, DatasetPreview, DatasetPublic, DatasetVersionPublic, ImportResult
from studio.datasets.stats import TokenStats
from studio.datasets.store import DatasetStore
from studio.datasets.validate import MIN_EXAMPLES, RowError, ValidationReport, validate_records

__all__ = [
    "MAX_UPLOAD_BYTES",
    "MIN_EXAMPLES",
    "ColumnMapping",
    "DatasetCard",
    "DatasetFormat",
    "DatasetKind",
    "DatasetPreview",
    "DatasetPublic",
    "DatasetStore",
    "DatasetVersionPublic",
    "ImportResult",
    "RowError",
    "TokenStats",
    "ValidationReport",
    "detect_format",
    "ensure_builtin_datasets",
    "normalise",
    "parse_file",
    "to_trl_record",
    "validate_records",
]
