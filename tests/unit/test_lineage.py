"""The dataset lineage graph: versions, the versions made from them in other datasets, and the jobs that read
them -- edges only from what is stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.curation.lineage import dataset_lineage, lineage_figure
from studio.datasets.store import DatasetStore
from studio.db import Database
from studio.db.tables import Job
from studio.errors import NotFoundError
from studio.settings import Settings


def _row(q: str, a: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DatasetStore]:
    db = Database("sqlite:///" + str(tmp_path / "t.db"))
    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    yield DatasetStore(settings, db)
    db.dispose()


def test_versions_derived_datasets_and_jobs_are_linked(store: DatasetStore) -> None:
    v1 = store.create_version("raw", [_row("a?", "A."), _row("b?", "B.")], source="edit").version
    v2 = store.create_version("raw", [_row("a?", "A."), _row("b?", "B."), _row("c?", "C.")], source="edit").version
    pipeline = {"name": "tidy", "steps": [{"step": "clean"}, {"step": "dedupe", "threshold": 0.8}]}
    lineage = {"source": {"dataset": "raw", "version": 2, "version_id": v2.id}, "pipeline": pipeline}
    clean = store.create_version("raw-clean", [_row("a?", "A.")], source="curate", lineage=lineage).version
    store.create_version("unrelated", [_row("z?", "Z.")], source="edit")
    with store.db.session() as s:
        s.add(
            Job(kind="finetune", name="on-clean", config={"dataset": "raw-clean", "dataset_hash": clean.content_hash})
        )
        s.add(Job(kind="finetune", name="on-raw-1", config={"dataset": "raw", "dataset_version": 1}))
        s.commit()

    graph = dataset_lineage(store, "raw")
    labels = {n.id: n.label for n in graph.nodes}
    assert sorted(labels.values()) == ["finetune on-clean", "finetune on-raw-1", "raw v1", "raw v2", "raw-clean v1"]
    edges = {(labels[e.parent], labels[e.child], e.label) for e in graph.edges}
    assert edges == {
        ("raw v1", "raw v2", "edit"),
        ("raw v2", "raw-clean v1", "curate: clean, dedupe"),
        ("raw-clean v1", "finetune on-clean", "finetune"),
        ("raw v1", "finetune on-raw-1", "finetune"),
    }
    assert v1.id in labels  # the first version is there though nothing points at it from before
    # from the derived dataset the same family is found, backwards
    assert {n.label for n in dataset_lineage(store, "raw-clean").nodes} >= {"raw v1", "raw v2", "raw-clean v1"}

    fig = lineage_figure(graph)
    assert len(fig.layout.annotations) == len(graph.edges)  # one arrow per edge
    assert list(fig.layout.yaxis.ticktext) == ["raw", "raw-clean", "jobs"]


def test_an_unknown_dataset_is_named(store: DatasetStore) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        dataset_lineage(store, "nope")
