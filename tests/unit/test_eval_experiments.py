"""Experiments: two training runs (rows made directly) compared — overlaid loss curves, perplexity from eval loss,
metric table, config diff — plus tags, favourites, archive and the tag filter; an eval run alongside."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.db import Database
from studio.db.tables import Job, JobMetric
from studio.errors import ValidationError
from studio.evaluation.experiments import (
    all_tags,
    checkpoint_eval_config,
    compare,
    config_diff,
    list_experiments,
    set_archived,
    set_favourite,
    set_tags,
)
from studio.settings import Settings


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'studio.db'}")
    yield database
    database.dispose()


def training_run(db: Database, name: str, lr: float, losses: list[tuple[float, float]]) -> str:
    config = {
        "name": name,
        "base_model": "smol",
        "dataset": "qa",
        "dataset_version": 1,
        "learning_rate": lr,
        "method": "lora",
        "lora_r": 8,
    }
    job = Job(kind="finetune", name=name, state="succeeded", config=config, step=len(losses) * 10)
    with db.session() as session:
        session.add(job)
    with db.session() as session:
        for i, (train, evl) in enumerate(losses, start=1):
            session.add(JobMetric(job_id=job.id, step=i * 10, epoch=i / 2, values={"train_loss": train}))
            session.add(JobMetric(job_id=job.id, step=i * 10, epoch=i / 2, values={"eval_loss": evl}))
    return job.id


def test_two_training_runs_compared(db: Database) -> None:
    a = training_run(db, "lr-high", 2e-4, [(2.0, 2.2), (1.5, 1.8), (1.0, 1.6)])
    b = training_run(db, "lr-low", 5e-5, [(2.1, 2.3), (1.9, 2.1)])
    c = compare(db, f"{a}, {b}")
    assert [e.job.id for e in c.experiments] == [a, b]
    # overlaid loss curves: train and eval per run
    names = [trace.name for trace in c.loss.data]
    assert names == [
        f"lr-high ({a[:8]}) train_loss",
        f"lr-high ({a[:8]}) eval_loss",
        f"lr-low ({b[:8]}) train_loss",
        f"lr-low ({b[:8]}) eval_loss",
    ]
    assert list(c.loss.data[0].y) == [2.0, 1.5, 1.0] and list(c.loss.data[0].x) == [10, 20, 30]
    # perplexity trend across the evaluation steps (checkpoints): exp(eval_loss)
    assert list(c.perplexity.data[0].y) == pytest.approx([math.exp(2.2), math.exp(1.8), math.exp(1.6)])
    table = {row[0]: row[1:] for row in c.metric_rows}
    assert table["final train_loss"] == [1.0, 1.9]
    assert table["best eval_loss"] == [1.6, 2.1]
    assert table["final perplexity"] == [round(math.exp(1.6), 4), round(math.exp(2.1), 4)]
    diff = {row[0]: row[1:] for row in c.diff_rows}
    assert diff == {"learning_rate": [2e-4, 5e-5], "name": ["lr-high", "lr-low"]}
    assert c.to_dict()["series"][a]["eval_loss"] == [[10, 2.2], [20, 1.8], [30, 1.6]]
    full = c.configs()[f"lr-high ({a[:8]})"]
    assert full["config"]["lora_r"] == 8 and full["runtime"]["device"] == "cpu"


def test_eval_runs_compare_with_their_model_figures(db: Database) -> None:
    t = training_run(db, "t", 1e-4, [(1.0, 1.2)])
    ev = Job(
        kind="eval",
        name="ev",
        state="succeeded",
        config={"metrics": ["rouge"]},
        result={
            "models": {
                "smol": {"rouge1": 0.5, "perplexity": 7.0, "examples": 3.0},
                "smol+checkpoint-20": {"rouge1": 0.6, "perplexity": 6.0, "examples": 3.0},
            }
        },
    )
    with db.session() as session:
        session.add(ev)
    c = compare(db, [t, ev.id])
    assert c.metric_headers == [
        "metric",
        f"t ({t[:8]})",
        f"ev ({ev.id[:8]}) · smol",
        f"ev ({ev.id[:8]}) · smol+checkpoint-20",
    ]
    assert {row[0]: row[1:] for row in c.metric_rows}["rouge1"] == [None, 0.5, 0.6]
    assert any(trace.name == f"ev ({ev.id[:8]})" for trace in c.perplexity.data)  # bars per model


def test_compare_needs_experiments(db: Database) -> None:
    with pytest.raises(ValidationError, match="pick at least one"):
        compare(db, "")
    job = Job(kind="selftest", name="s")
    with db.session() as session:
        session.add(job)
    with pytest.raises(ValidationError, match="only training and eval runs"):
        compare(db, [job.id])


def test_tag_favourite_archive_and_filter(db: Database) -> None:
    a = training_run(db, "a", 1e-4, [(1.0, 1.1)])
    b = training_run(db, "b", 1e-4, [(1.0, 1.1)])
    assert set_tags(db, a, "baseline, lora baseline").tags == ["baseline", "lora"]
    set_tags(db, b, ["lora"])
    assert all_tags(db) == ["baseline", "lora"]
    assert [j.id for j in list_experiments(db, tag="baseline")] == [a]
    assert {j.id for j in list_experiments(db, tag="lora")} == {a, b}
    assert set_favourite(db, b, True).favourite
    assert [j.id for j in list_experiments(db, favourites_only=True)] == [b]
    set_archived(db, a, True)
    assert [j.id for j in list_experiments(db, tag="lora")] == [b]
    assert {j.id for j in list_experiments(db, tag="lora", include_archived=True)} == {a, b}
    assert not set_archived(db, a, False).archived
    with pytest.raises(ValidationError, match="tag"):
        set_tags(db, a, "no spaces!")


def test_config_diff_flattens_nested_values() -> None:
    rows = config_diff(
        [
            {"generation": {"max_tokens": 8}, "models": [{"model": "a"}]},
            {"generation": {"max_tokens": 16}, "models": [{"model": "a"}]},
        ]
    )
    assert rows == [["generation.max_tokens", 8, 16]]


def test_checkpoint_eval_config(db: Database, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    job_id = training_run(db, "t", 1e-4, [(1.0, 1.1)])
    for step in (20, 10):
        folder = settings.home / "runs" / job_id / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
    data = checkpoint_eval_config(settings, db, job_id, text_file="t.txt")
    assert [m["label"] for m in data["models"]] == ["checkpoint-10", "checkpoint-20"]
    assert data["metrics"] == ["perplexity"] and data["models"][0]["model"] == "smol"
