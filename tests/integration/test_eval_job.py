"""Eval jobs on the bundled model, run in-process the way a job process runs them: two configs (a shipped dataset
with plugin metrics, a text file with two models, one of them with a LoRA adapter) producing stored per-example
scores; a plugin that raises is reported and the run completes; the CLI shows the run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studio.db import Database
from studio.evaluation.job import stored_samples
from studio.evaluation.results import get_results, results_view, submit_eval
from studio.jobs import queue
from studio.jobs.child import run_job
from studio.settings import Settings

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
POLITE = """
def polite(sample):
    return float("please" in sample.output.lower() or "thank" in sample.output.lower())


def register(registry):
    registry.add("polite", polite, "Says please or thank you")
"""
BOOM = """
def boom(sample):
    raise ZeroDivisionError("plugin bug")


def register(registry):
    registry.add("boom", boom, "Always fails")
"""


@pytest.fixture
def home(studio_home: Path, tmp_path: Path) -> Iterator[tuple[Settings, Database]]:
    root = tmp_path / "home"
    root.mkdir()
    (root / "models").symlink_to(studio_home / "models", target_is_directory=True)
    (root / "adapters").symlink_to(studio_home / "adapters", target_is_directory=True)
    settings = Settings(home=root, hf_cache=studio_home / "hf-cache")
    settings.ensure_dirs()
    plugins = root / "plugins"
    (plugins / "polite.py").write_text(POLITE, encoding="utf-8")
    (plugins / "boom.py").write_text(BOOM, encoding="utf-8")
    (plugins / "capital.yaml").write_text("name: mentions_capital\ntype: keywords\ninclude: [capital]\n")
    db = Database(settings.db_url)
    yield settings, db
    db.dispose()


def run_in_process(settings: Settings, db: Database, config: dict[str, Any]) -> str:
    job = submit_eval(settings, db, config)
    claimed = queue.claim_next(db, "test-worker:1")
    assert claimed is not None and claimed.id == job.id
    state = run_job(settings, db, queue.Lease.of(claimed))
    assert state == queue.SUCCEEDED, queue.log_tail(settings, job.id)
    return job.id


def test_dataset_run_with_plugins_stores_per_example_scores(home: tuple[Settings, Database]) -> None:
    settings, db = home
    job_id = run_in_process(
        settings,
        db,
        {
            "name": "quick with plugins",
            "models": [BUNDLED],
            "dataset_file": "configs/eval/data/quick-qa.jsonl",
            "dataset": "eval-quick-qa",
            "metrics": ["perplexity", "rouge", "exact_match", "polite", "mentions_capital", "boom"],
            "generation": {"max_tokens": 24},
            "limit": 3,
        },
    )
    job = queue.get_job(db, job_id)
    assert job.config["dataset_version"] == 1 and len(job.config["dataset_hash"]) == 64  # pinned at submit
    rows = stored_samples(db, job_id)
    assert [r.example_index for r in rows] == [0, 1, 2]
    first = rows[0]
    assert first.input.startswith("What is the capital of France?")
    assert first.reference == "The capital of France is Paris."
    assert "Paris" in first.output  # greedy answer of the bundled model
    for row in rows:
        assert set(row.scores) >= {
            "perplexity",
            "perplexity_tokens",
            "rouge1",
            "rouge2",
            "rougeL",
            "exact_match",
            "polite",
            "mentions_capital",
        }
        assert "boom" not in row.scores and row.error == "boom: ZeroDivisionError: plugin bug"
        assert row.scores["mentions_capital"] == float("capital" in row.output.lower())
        assert row.stats["completion_tokens"] > 0 and row.stats["latency_s"] > 0
    results = get_results(db, job_id)
    figures = results.models[BUNDLED]
    assert figures["examples"] == 3.0
    assert figures["exact_match"] == pytest.approx(sum(r.scores["exact_match"] for r in rows) / 3)
    assert 1.0 < figures["perplexity"] < 50.0
    assert results.metric_errors[0]["metric"] == "boom" and results.metric_errors[0]["count"] == 3
    assert "ZeroDivisionError" in results.metric_errors[0]["traceback"]
    assert "boom" in queue.log_tail(settings, job_id, 200)
    view = results_view(db, job_id, sort_by="rouge1")
    assert view.headers == ["metric", BUNDLED]
    worst = [json.loads(r[5])["rouge1"] for r in view.examples]
    assert len(worst) == 3  # every row carries the plugin error, so ordering is by example; values are stored
    assert "raised on 3 example(s)" in view.notes
    assert view.figure.data  # bars


def test_text_run_compares_base_and_adapter(home: tuple[Settings, Database], lora_adapters: tuple[Path, Path]) -> None:
    settings, db = home
    job_id = run_in_process(
        settings,
        db,
        {
            "models": [BUNDLED, {"model": BUNDLED, "adapter": "lora-a", "label": "with-lora"}],
            "text_file": "configs/eval/data/short-passages.txt",
            "metrics": ["perplexity", "lambada", "contains", "length", "toxicity"],
            "generation": {"max_tokens": 4},
            "limit": 2,
            "perplexity_window": 32,
            "perplexity_stride": 16,
        },
    )
    rows = stored_samples(db, job_id)
    assert sorted((r.model, r.example_index) for r in rows) == [
        (BUNDLED, 0),
        (BUNDLED, 1),
        ("with-lora", 0),
        ("with-lora", 1),
    ]
    base = {r.example_index: r for r in rows if r.model == BUNDLED}
    lora = {r.example_index: r for r in rows if r.model == "with-lora"}
    assert base[0].reference == "hills" and base[0].input.startswith("The sun rises")
    for i in (0, 1):
        assert base[i].scores["lambada"] in (0.0, 1.0)
        assert base[i].scores["perplexity"] != pytest.approx(lora[i].scores["perplexity"])  # the adapter changed it
    results = get_results(db, job_id)
    assert set(results.models) == {BUNDLED, "with-lora"}
    assert results.labels == [BUNDLED, "with-lora"]
    if "toxicity" in results.unavailable:  # the Safety layer is optional
        assert "unavailable" in results.unavailable["toxicity"]
    else:
        assert 0.0 <= results.models[BUNDLED]["toxic_rate"] <= 1.0  # type: ignore[operator]


def test_cli_shows_a_run_as_json(
    home: tuple[Settings, Database], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from studio.cli import main

    settings, db = home
    job_id = run_in_process(
        settings,
        db,
        {
            "models": [BUNDLED],
            "text_file": "configs/eval/data/short-passages.txt",
            "metrics": ["perplexity"],
            "limit": 1,
        },
    )
    monkeypatch.setenv("STUDIO_HOME", str(settings.home))
    assert main(["eval", "show", job_id[:8], "--json", "--examples", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == job_id and data["state"] == "succeeded"
    assert data["models"][BUNDLED]["perplexity"] > 1.0
    assert data["worst_examples"][0]["model"] == BUNDLED


def test_cli_run_prints_the_run_id(
    home: tuple[Settings, Database], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from studio.cli import main

    settings, db = home
    monkeypatch.setenv("STUDIO_HOME", str(settings.home))
    assert main(["eval", "run", "configs/eval/examples/smollm2-quick.yaml"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    job = queue.get_job(db, run_id)
    assert job.kind == "eval" and job.state == "queued" and job.name == "smollm2-quick"
    assert job.config["dataset"] == "eval-quick-qa" and job.config["dataset_version"] == 1


def test_a_cancelled_run_keeps_its_rows_and_resumes_where_it_stopped(home: tuple[Settings, Database]) -> None:
    from studio.context import AppContext
    from studio.evaluation.config import parse_eval_config
    from studio.evaluation.job import evaluate
    from studio.jobs.reporter import MemoryReporter

    settings, db = home
    data = {
        "models": [BUNDLED],
        "text_file": "configs/eval/data/short-passages.txt",
        "metrics": ["perplexity"],
        "limit": 3,
    }
    job = submit_eval(settings, db, data)
    config = parse_eval_config({k: v for k, v in job.config.items() if k != "kind"})
    ctx = AppContext.create(settings)
    try:
        stopped = evaluate(config, ctx, MemoryReporter(stop_after_step=1), job.id)
        assert stopped["stopped"] is True
        assert [r.example_index for r in stored_samples(db, job.id)] == [0]
        reporter = MemoryReporter()
        done = evaluate(config, ctx, reporter, job.id)
    finally:
        ctx.close()
    assert done["stopped"] is False and done["models"][BUNDLED]["examples"] == 3.0
    assert [r.example_index for r in stored_samples(db, job.id)] == [0, 1, 2]
    assert [p[0] for p in reporter.progress_calls] == [0, 2, 3]  # the stored example was skipped
