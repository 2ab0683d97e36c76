"""Datasets that ship with the studio (``configs/datasets/``), imported into a new STUDIO_HOME once.

``STUDIO_HOME/datasets/builtin.json`` records which were imported, so that a built-in dataset the user deleted
does not come back at the next start.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from studio.datasets.store import DatasetStore
from studio.settings import CONFIG_DIR

log = logging.getLogger(__name__)

BUILTIN_DIR = CONFIG_DIR / "datasets"
MARKER = "builtin.json"


@dataclass(frozen=True)
class BuiltinDataset:
    """One shipped dataset file and the name it is imported under."""

    name: str
    filename: str
    description: str

    @property
    def path(self) -> Path:
        """The shipped file."""
        return BUILTIN_DIR / self.filename


BUILTIN_DATASETS: tuple[BuiltinDataset, ...] = (
    BuiltinDataset(
        name="whetstone-assistant",
        filename="whetstone-assistant.jsonl",
        description="Short, correct answers on geography, maths, programming, writing and this studio; "
        "the data of the one-command fine-tune demo.",
    ),
    BuiltinDataset(
        name="preference-sample",
        filename="preference-sample.jsonl",
        description="Prompts with a preferred and a dispreferred reply, to try preference training (DPO).",
    ),
)


def _read_marker(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names = data.get("imported", []) if isinstance(data, dict) else []
    return [str(n) for n in names]


def ensure_builtin_datasets(store: DatasetStore) -> list[str]:
    """Import every built-in dataset not imported into this home before; returns the names imported now."""
    marker = store.root / MARKER
    done = _read_marker(marker)
    imported: list[str] = []
    for builtin in BUILTIN_DATASETS:
        if builtin.name in done:
            continue
        store.import_upload(
            builtin.name, builtin.path, builtin.filename, description=builtin.description, source="builtin"
        )
        done.append(builtin.name)
        imported.append(builtin.name)
        log.info("imported the built-in dataset %r", builtin.name)
    if imported:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"imported": done}, indent=2) + "\n", encoding="utf-8")
        tmp.replace(marker)
    return imported
