"""Sweeps (issue 22, point 3): a grid or random search over a job config becomes N queued jobs grouped as one sweep,
with a budget (max jobs, max hours), continue-on-error, and a ranking of the runs by a metric.

Real SQLite files; the headline cases run ``selftest`` jobs through a real worker (a ``Worker`` looping in a thread,
each job in its own process, as ``tests/integration/test_jobs_worker.py`` does); the rest drive the queue's own
transitions in-process, which run the same job-end hook."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import inspect, text, update
from sqlmodel import select

from studio.auth import Principal
from studio.db import Database
from studio.db.tables import Job, Sweep
from studio.errors import ConflictError, ForbiddenError, RateLimitError, ValidationError
from studio.jobs import queue, sweeps
from studio.jobs.kinds import JobKind, register_kind
from studio.jobs.queue import JOB, Lease
from studio.jobs.worker import Worker, WorkerOptions
from studio.settings import Settings
from studio.users.acting import acting_as
from studio.users.service import UserService

FAST = WorkerOptions(poll_s=0.05, heartbeat_s=0.5, cancel_grace_s=10.0, kill_after_s=1.0, watch_s=0.05, resource_s=0)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(home=tmp_path / "home")
    s.ensure_dirs()
    return s


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.db_url)
    yield database
    database.dispose()


def spec(**fields: Any) -> sweeps.SweepSpec:
    data: dict[str, Any] = {"name": "st", "base": {"kind": "selftest", "sleep_s": 0.0}, "metric": "train_loss"}
    data.update(fields)
    return sweeps.parse_spec(data)


def finetune_spec(**fields: Any) -> sweeps.SweepSpec:
    base = {"dataset": "whetstone-assistant", "max_steps": 2}
    data: dict[str, Any] = {"name": "ft", "base": base, "parameters": {"learning_rate": [1e-4]}}
    data.update(fields)
    return sweeps.parse_spec(data)


def refused(make: Callable[[], object]) -> ValidationError:
    with pytest.raises(ValidationError) as err:
        make()
    return err.value


def run_in_process(db: Database, state: str, result: dict[str, Any] | None = None, **values: Any) -> Job:
    """Claim the next job and end it in ``state`` through the queue (its job-end hooks run here)."""
    job = queue.claim_next(db, "test:1")
    assert job is not None
    if values:
        with db.engine.begin() as conn:
            conn.execute(update(JOB).where(JOB.c.id == job.id).values(**values))
    assert queue.finish(db, Lease.of(job), state, message=f"ended {state}", result=result)
    return queue.get_job(db, job.id)


# --- expansion --------------------------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_in_order_and_each_trial_is_a_valid_config() -> None:
    s = spec(parameters={"steps": [2, 3], "sleep_s": [0.01, 0.02]})
    assert sweeps.assignments(s) == [
        {"steps": 2, "sleep_s": 0.01},
        {"steps": 2, "sleep_s": 0.02},
        {"steps": 3, "sleep_s": 0.01},
        {"steps": 3, "sleep_s": 0.02},
    ]
    configs = sweeps.expand(s)
    assert [(c["steps"], c["sleep_s"]) for c in configs] == [(2, 0.01), (2, 0.02), (3, 0.01), (3, 0.02)]
    assert all(c["checkpoint_every"] == 5 for c in configs)  # the kind's defaults filled in
    named = sweeps.expand(finetune_spec(parameters={"learning_rate": [1e-4, 3e-4], "lora_r": [4, 16]}))
    assert [(c["name"], c["learning_rate"], c["lora_r"]) for c in named] == [
        ("ft-1", 1e-4, 4),
        ("ft-2", 1e-4, 16),
        ("ft-3", 3e-4, 4),
        ("ft-4", 3e-4, 16),
    ]


def test_a_grid_larger_than_max_jobs_is_refused_unless_truncated() -> None:
    too_big = refused(lambda: sweeps.expand(spec(parameters={"steps": [1, 2, 3], "sleep_s": [0.0, 0.1]}, max_jobs=4)))
    assert too_big.param == "max_jobs"
    assert "6 combinations (3 steps x 2 sleep_s)" in str(too_big) and "truncate: true" in str(too_big)
    cut = sweeps.expand(spec(parameters={"steps": [1, 2, 3], "sleep_s": [0.0, 0.1]}, max_jobs=4, truncate=True))
    assert [(c["steps"], c["sleep_s"]) for c in cut] == [(1, 0.0), (1, 0.1), (2, 0.0), (2, 0.1)]


def test_random_search_draws_seeded_values_within_the_ranges() -> None:
    params = {
        "learning_rate": {"low": 1e-5, "high": 1e-2, "log": True},
        "lora_r": {"low": 4, "high": 64, "integer": True, "log": True},
        "warmup_ratio": {"low": 0.0, "high": 0.2},
        "lr_scheduler": {"choices": ["linear", "cosine"]},
        "epochs": [1, 2],  # a plain list in a random search: its choices
    }
    first = sweeps.expand(finetune_spec(method="random", trials=12, seed=7, parameters=params))
    again = sweeps.expand(finetune_spec(method="random", trials=12, seed=7, parameters=params))
    other = sweeps.expand(finetune_spec(method="random", trials=12, seed=8, parameters=params))
    assert first == again and first != other
    assert len(first) == 12 and [c["name"] for c in first] == [f"ft-{i}" for i in range(1, 13)]
    for c in first:
        assert 1e-5 <= c["learning_rate"] <= 1e-2
        assert isinstance(c["lora_r"], int) and 4 <= c["lora_r"] <= 64
        assert 0.0 <= c["warmup_ratio"] <= 0.2
        assert c["lr_scheduler"] in ("linear", "cosine") and c["epochs"] in (1.0, 2.0)
    rates = sorted(c["learning_rate"] for c in first)
    assert rates[0] < 1e-3 and rates[-1] > 1e-4  # a log range spreads over its decades
    default = sweeps.assignments(spec(method="random", parameters={"steps": {"low": 1, "high": 9, "integer": True}}))
    assert len(default) == sweeps.DEFAULT_TRIALS


def _random(**ranges: Any) -> dict[str, Any]:
    return {"method": "random", "parameters": ranges}


@pytest.mark.parametrize(
    ("fields", "param", "needle"),
    [
        (_random(learning_rate={"low": 0.0, "high": 1e-3, "log": True}), "parameters.learning_rate.low", "above 0"),
        (_random(learning_rate={"low": 1e-3, "high": 1e-5}), "parameters.learning_rate.low", "not be more than high"),
        (_random(learning_rate={"low": "fast", "high": 1e-3}), "parameters.learning_rate.low", "valid number"),
        (_random(learning_rate={"low": 1e-5}), "parameters.learning_rate.high", "needs both low and high"),
        (_random(learning_rate={"lo": 1e-5, "high": 1e-3}), "parameters.learning_rate.lo", "unknown key 'lo'"),
        (_random(lora_r={"low": 4.2, "high": 4.8, "integer": True}), "parameters.lora_r", "no whole number"),
        (_random(lora_r={"values": [4], "integer": True}), "parameters.lora_r", "apply to a range"),
        (_random(lora_r={"values": [4], "choices": [8]}), "parameters.lora_r", "exactly one of"),
        ({"parameters": {"learning_rate": 0.1}}, "parameters.learning_rate", "give a list of values"),
        ({"parameters": {"name": ["a", "b"]}}, "parameters.name", "set by the sweep itself"),
        ({"parameters": {"a..b": [1]}}, "parameters.a..b", "not a field name"),
        ({"parameters": {}}, "parameters", "at least 1"),
        ({"trials": 3}, "trials", "applies to method random"),
        ({"method": "random", "trials": 30, "max_jobs": 20}, "trials", "more than max_jobs"),
        ({"max_jobs": 1001}, "max_jobs", "1000"),
        ({"max_hours": 0}, "max_hours", "greater than 0"),
        ({"mode": "lowest"}, "mode", "min"),
        ({"name": "two words"}, "name", "pattern"),
    ],
)
def test_spec_errors_name_the_field(fields: dict[str, Any], param: str, needle: str) -> None:
    err = refused(lambda: finetune_spec(**fields))
    assert err.param == param and needle in str(err), str(err)


def test_a_range_on_a_grid_is_refused() -> None:
    err = refused(lambda: finetune_spec(parameters={"learning_rate": {"low": 1e-5, "high": 1e-3}}))
    assert err.param == "parameters.learning_rate" and "method random" in str(err)


def test_trial_values_are_checked_by_the_kinds_config_model_naming_the_parameter_or_base_field() -> None:
    out_of_range = refused(lambda: sweeps.expand(finetune_spec(parameters={"learning_rate": [1e-4, 5.0]})))
    assert out_of_range.param == "parameters.learning_rate"
    assert "trial 2 (learning_rate=5.0)" in str(out_of_range) and "less than or equal to 1" in str(out_of_range)
    range_end = refused(
        lambda: sweeps.expand(
            finetune_spec(method="random", parameters={"learning_rate": {"low": 1e-5, "high": 2.0, "log": True}})
        )
    )
    assert range_end.param == "parameters.learning_rate.high"  # a draw could land there: refused before any draw
    unknown = refused(lambda: sweeps.expand(finetune_spec(parameters={"learnin_rate": [1e-4]})))
    assert unknown.param == "parameters.learnin_rate" and "not a field of a finetune job config" in str(unknown)
    bad_base = refused(lambda: sweeps.expand(finetune_spec(base={"dataset": "d", "batch_size": 0})))
    assert bad_base.param == "base.batch_size"
    bad_kind = refused(lambda: sweeps.expand(finetune_spec(base={"kind": "finetuen"})))
    assert bad_kind.param == "base.kind" and "known kinds" in str(bad_kind)


class _Optimizer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(0.1, gt=0.0, le=1.0)
    momentum: float = 0.9


class _NestedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    optimizer: _Optimizer = _Optimizer()
    output_name: str | None = None


def test_dotted_names_set_a_nested_field_and_each_trial_saves_its_own_artifact() -> None:
    register_kind(JobKind("unit-nested", _NestedConfig, lambda cfg, rt: {}, "nested config"))
    s = sweeps.parse_spec(
        {
            "name": "nest",
            "base": {"kind": "unit-nested", "optimizer": {"momentum": 0.5}, "output_name": "adapter"},
            "parameters": {"optimizer.lr": [0.01, 0.1]},
        }
    )
    configs = sweeps.expand(s)
    assert [c["optimizer"] for c in configs] == [{"lr": 0.01, "momentum": 0.5}, {"lr": 0.1, "momentum": 0.5}]
    assert [c["output_name"] for c in configs] == ["adapter-1", "adapter-2"]
    bad = refused(
        lambda: sweeps.expand(s.model_copy(update={"parameters": {"optimizer.lr": sweeps.ParameterSpec(values=[3.0])}}))
    )
    assert bad.param == "parameters.optimizer.lr"
    wrong = refused(
        lambda: sweeps.expand(s.model_copy(update={"parameters": {"optimizer.lr.x": sweeps.ParameterSpec(values=[1])}}))
    )
    assert wrong.param == "parameters.optimizer.lr.x"


def test_yaml_errors_say_where() -> None:
    err = refused(lambda: sweeps.spec_from_yaml("name: x\nparameters: [1, 2\n", source="s.yaml"))
    assert "s.yaml is not valid YAML" in str(err) and "line" in str(err)
    assert refused(lambda: sweeps.spec_from_yaml("- just a list")).param == "sweep"


def test_the_shipped_example_expands_to_four_lora_jobs() -> None:
    example = sweeps.load_spec(sweeps.EXAMPLE_SWEEP)
    configs = sweeps.expand(example)
    assert [(c["learning_rate"], c["lora_r"]) for c in configs] == [(1e-4, 4), (1e-4, 16), (4e-4, 4), (4e-4, 16)]
    assert all(c["method"] == "lora" and c["dataset"] == "whetstone-assistant" for c in configs)


# --- submitting -------------------------------------------------------------------------------------------------


def test_submit_queues_one_named_job_per_trial_in_trial_order(db: Database) -> None:
    sweep = sweeps.submit_sweep(db, None, spec(parameters={"steps": [3, 1, 2]}))
    jobs = queue.list_jobs(db)
    assert sorted(j.name for j in jobs) == ["st-1", "st-2", "st-3"]
    assert {j.sweep_id for j in jobs} == {sweep.id} and {j.state for j in jobs} == {"queued"}
    claimed = queue.claim_next(db, "w:1")
    assert claimed is not None and claimed.name == "st-1" and claimed.config["steps"] == 3
    view = sweeps.sweep_status(db, sweep.id)
    assert view.state == "running" and [r.params for r in view.runs] == [{"steps": 3}, {"steps": 1}, {"steps": 2}]
    assert sweeps.get_sweep(db, "st").id == sweep.id and sweeps.get_sweep(db, sweep.id[:6]).id == sweep.id


def _refuse_big(config: Any, _settings: Any, _db: Any) -> Any:
    if config.steps > 5:
        raise ValidationError(f"steps: {config.steps} is too many for this studio", param="steps")
    return config


def test_submit_is_all_or_nothing_when_a_trial_is_refused_by_the_kinds_prepare_hook(
    db: Database, settings: Settings
) -> None:
    from studio.jobs.builtin_kinds import SelftestConfig, run_selftest

    register_kind(JobKind("unit-prepared", SelftestConfig, run_selftest, "selftest with a prepare hook", _refuse_big))
    s = sweeps.parse_spec({"name": "pp", "base": {"kind": "unit-prepared"}, "parameters": {"steps": [1, 2, 9]}})
    err = refused(lambda: sweeps.submit_sweep(db, settings, s))
    assert err.param == "parameters.steps" and "trial 3 (pp-3)" in str(err) and "too many" in str(err)
    with db.session() as session:
        assert session.exec(select(Job)).all() == [] and session.exec(select(Sweep)).all() == []
    jobs = sweeps.plan_sweep(
        db, settings, s.model_copy(update={"parameters": {"steps": sweeps.ParameterSpec(values=[1, 2])}})
    )[1]
    assert [j.name for j in jobs] == ["pp-1", "pp-2"] and queue.list_jobs(db) == []  # a dry run stores nothing


def test_the_queued_jobs_quota_must_hold_the_whole_sweep(tmp_path: Path, db: Database, settings: Settings) -> None:
    users = UserService(settings, db)
    bob = Principal(
        "bob", "session", role="member", user_id=users.add("bob", role="member", password="bob-password").id
    )
    cy = Principal("cy", "session", role="member", user_id=users.add("cy", role="member", password="cy-password").id)
    users.set_quotas("bob", {"queued_jobs": 3})
    with acting_as(bob):
        with pytest.raises(RateLimitError) as over:
            sweeps.submit_sweep(db, None, spec(parameters={"steps": [1, 2, 3, 4]}))
        assert "queued_jobs" in str(over.value) and "adds 4" in str(over.value)
        assert queue.list_jobs(db) == []
        sweep = sweeps.submit_sweep(db, None, spec(parameters={"steps": [1, 2, 3]}))
        assert {j.owner_id for j in queue.list_jobs(db)} == {bob.user_id} and sweep.owner_id == bob.user_id
    with acting_as(cy), pytest.raises(ForbiddenError):
        sweeps.cancel_sweep(db, sweep.id)


# --- running: continue_on_error, budget, ranking ----------------------------------------------------------------


class ThreadWorker:
    """A ``Worker`` looping in a thread of the test process; each job still runs in its own process."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.worker = Worker(settings, db, options=FAST)
        self.thread = threading.Thread(target=self.worker.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


@pytest.fixture
def worker(settings: Settings, db: Database) -> Iterator[Callable[[], ThreadWorker]]:
    started: list[ThreadWorker] = []

    def start() -> ThreadWorker:
        started.append(ThreadWorker(settings, db))
        return started[-1]

    yield start
    for w in started:
        w.stop()


def wait_for_sweep(db: Database, sweep_id: str, timeout: float = 60.0) -> sweeps.SweepView:
    deadline = time.monotonic() + timeout
    while True:
        view = sweeps.sweep_status(db, sweep_id)
        if view.state not in ("queued", "running"):
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"sweep still {view.state}: {view.describe()}")
        time.sleep(0.1)


def three_tiny_jobs_first_failing(continue_on_error: bool) -> sweeps.SweepSpec:
    # steps 4 reaches fail_at_step 4 and fails; steps 2 and 3 finish (train_loss 1/step: 0.5 and 0.333)
    return spec(
        base={"kind": "selftest", "sleep_s": 0.01, "fail_at_step": 4},
        parameters={"steps": [4, 2, 3]},
        continue_on_error=continue_on_error,
    )


def test_a_sweep_of_3_tiny_jobs_with_one_failing_completes_the_other_two(
    db: Database, worker: Callable[[], ThreadWorker]
) -> None:
    sweep = sweeps.submit_sweep(db, None, three_tiny_jobs_first_failing(continue_on_error=True))
    worker()
    view = wait_for_sweep(db, sweep.id)
    assert view.state == "done" and view.counts == {"succeeded": 2, "failed": 1} and view.sweep.message == ""
    assert [(r.rank, r.job.name, r.job.state) for r in view.runs] == [
        (1, "st-3", "succeeded"),  # train_loss 1/3, lowest
        (2, "st-2", "succeeded"),  # 1/2
        (None, "st-1", "failed"),  # a failed run is listed, never ranked
    ]
    assert view.runs[0].value == pytest.approx(1 / 3) and view.runs[1].value == pytest.approx(0.5)
    assert "fail_at_step" in view.runs[2].job.message
    assert [len(view.curves[r.job.id]) for r in view.runs] == [3, 2, 3]  # the failed one's curve up to its failure
    headers, rows = view.table()
    assert headers == ["rank", "trial", "job", "state", "train_loss", "steps", "hours", "message", "job id"]
    assert [row[:3] for row in rows] == [[1, 3, "st-3"], [2, 2, "st-2"], ["", 1, "st-1"]]
    assert [row[5] for row in rows] == [3, 2, 4] and [row[8] for row in rows] == [r.job.id for r in view.runs]
    figure = view.figure()
    assert len(figure.data) == 3 and figure.data[0].name.startswith("st-1")


def test_with_continue_on_error_false_the_first_failure_cancels_the_queued_rest(
    db: Database, worker: Callable[[], ThreadWorker]
) -> None:
    sweep = sweeps.submit_sweep(db, None, three_tiny_jobs_first_failing(continue_on_error=False))
    worker()
    view = wait_for_sweep(db, sweep.id)
    assert view.state == "stopped" and view.counts == {"failed": 1, "cancelled": 2}
    assert "job st-1 failed and continue_on_error is false" in view.sweep.message
    for run in view.runs[1:]:
        assert run.job.state == "cancelled" and run.job.started_at is None
        assert "sweep 'st' stopped because job st-1 failed" in run.job.message


def test_over_max_hours_the_queued_rest_is_cancelled_with_the_reason(db: Database) -> None:
    sweep = sweeps.submit_sweep(db, None, spec(parameters={"steps": [1, 2, 3]}, max_hours=0.5))
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    first = run_in_process(db, "succeeded", {"train_loss": 0.2}, started_at=an_hour_ago)
    assert first.state == "succeeded"
    view = sweeps.sweep_status(db, sweep.id)
    assert view.state == "stopped" and view.counts == {"succeeded": 1, "cancelled": 2}
    assert "over the max_hours budget of 0.5 h" in view.sweep.message and view.hours == pytest.approx(1.0, abs=0.01)
    assert all("max_hours budget" in r.job.message for r in view.runs if r.job.state == "cancelled")
    assert queue.claim_next(db, "w:2") is None  # nothing left to run


def test_within_budget_and_with_continue_on_error_nothing_is_cancelled(db: Database) -> None:
    sweep = sweeps.submit_sweep(db, None, spec(parameters={"steps": [1, 2, 3]}, max_hours=2.0))
    run_in_process(db, "failed")
    assert sweeps.enforce(db, sweep.id) == []
    assert sweeps.sweep_status(db, sweep.id).counts == {"failed": 1, "queued": 2}


def test_a_budget_passed_by_the_last_job_leaves_the_sweep_done(db: Database) -> None:
    sweep = sweeps.submit_sweep(db, None, spec(parameters={"steps": [1]}, max_hours=0.5))
    run_in_process(db, "succeeded", {"train_loss": 0.1}, started_at=datetime.now(UTC) - timedelta(hours=1))
    view = sweeps.sweep_status(db, sweep.id)
    assert view.state == "done" and view.sweep.message == ""  # nothing was cut short


def test_ranking_by_another_metric_or_mode_and_from_the_curve_when_the_result_lacks_it(db: Database) -> None:
    sweep = sweeps.submit_sweep(db, None, spec(parameters={"steps": [1, 2, 3]}, metric="accuracy", mode="max"))
    a = run_in_process(db, "succeeded", {"accuracy": 0.7, "eval_loss": 0.9})
    b = run_in_process(db, "succeeded", {"accuracy": 0.9, "eval_loss": 1.2})
    c = queue.claim_next(db, "w:3")
    assert c is not None
    queue.add_metric(db, Lease.of(c), 1, None, {"accuracy": 0.5})
    queue.add_metric(db, Lease.of(c), 2, None, {"accuracy": 0.8})
    queue.finish(db, Lease.of(c), "succeeded", result={})
    view = sweeps.sweep_status(db, sweep.id)
    assert [(r.rank, r.job.id, r.value) for r in view.runs] == [(1, b.id, 0.9), (2, c.id, 0.8), (3, a.id, 0.7)]
    assert view.curve_metric == "accuracy" and list(view.curves) == [c.id]
    by_loss = sweeps.sweep_status(db, sweep.id, metric="eval_loss", mode="min")
    assert [r.job.id for r in by_loss.runs] == [a.id, b.id, c.id] and by_loss.runs[2].rank is None  # c has none
    assert refused(lambda: sweeps.sweep_status(db, sweep.id, mode="best")).param == "mode"
    listed = sweeps.list_sweeps(db)
    assert [v.sweep.id for v in listed] == [sweep.id] and listed[0].best is not None and listed[0].best.job.id == b.id


def test_cancel_sweep_cancels_the_queued_and_stops_the_running(db: Database) -> None:
    sweep = sweeps.submit_sweep(db, None, spec(parameters={"steps": [1, 2, 3]}))
    running = queue.claim_next(db, "w:1")
    assert running is not None
    view = sweeps.cancel_sweep(db, "st")
    assert view.state == "running" and view.sweep.cancelled  # its running job stops at its next step
    assert queue.get_job(db, running.id).cancel_requested
    assert sorted(r.job.state for r in view.runs) == ["cancelled", "cancelled", "running"]
    queue.finish(db, Lease.of(running), "cancelled", message="cancelled at step 1")
    ended = sweeps.sweep_status(db, sweep.id)
    assert ended.state == "cancelled" and "cancelled by the user: 2 queued job(s) cancelled" in ended.sweep.message
    with pytest.raises(ConflictError, match="has ended"):
        sweeps.cancel_sweep(db, sweep.id)


# --- the command line ---------------------------------------------------------------------------------------------


def test_cli_submit_list_show_and_cancel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from studio.cli import main

    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "cli-home"))
    monkeypatch.delenv("STUDIO_DATABASE_URL", raising=False)
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "name: cli\nbase: {kind: selftest, steps: 2}\nparameters: {sleep_s: [0.0, 0.5]}\nmetric: train_loss\n",
        encoding="utf-8",
    )
    assert main(["sweep", "submit", str(path), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "cli-2  0.5" in dry and "nothing was queued" in dry
    assert main(["sweep", "list"]) == 0 and capsys.readouterr().out.strip() == "No sweeps."
    assert main(["sweep", "submit", str(path)]) == 0
    sweep_id = capsys.readouterr().out.splitlines()[0]
    assert main(["sweep", "show", "cli", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (
        shown["id"] == sweep_id
        and shown["state"] == "queued"
        and [r["name"] for r in shown["runs"]] == ["cli-1", "cli-2"]
    )
    assert main(["sweep", "cancel", sweep_id[:8]]) == 0
    assert "2 queued job(s) cancelled" in capsys.readouterr().out
    assert main(["sweep", "list"]) == 0 and f"{sweep_id}  cli   grid    cancelled" in capsys.readouterr().out
    assert main(["sweep", "cancel", "cli"]) == 2 and "has ended" in capsys.readouterr().err
    path.write_text("name: cli\nbase: {kind: selftest}\nparameters: {steps: [0]}\n", encoding="utf-8")
    assert main(["sweep", "submit", str(path)]) == 2 and "parameters.steps" in capsys.readouterr().err


# --- the database ------------------------------------------------------------------------------------------------


def test_migration_adds_the_sweep_table_and_job_sweep_id_to_an_older_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    first = Database(url)
    with first.engine.begin() as conn:  # back to version 10: no sweep table, no job.sweep_id
        conn.execute(text("DROP INDEX ix_job_sweep_id"))
        conn.execute(text("ALTER TABLE job DROP COLUMN sweep_id"))
        conn.execute(text("DROP TABLE sweep"))
        conn.execute(text("DELETE FROM schema_version WHERE version = 11"))
        conn.execute(
            text(
                "INSERT INTO job (id, kind, name, state, priority, device, config, created_at, updated_at, "
                "attempts, cancel_requested, progress, step, message, result, tags, favourite, archived, "
                "private) VALUES ('old', 'selftest', 'kept', 'succeeded', 0, 'cpu', '{}', '2026-01-01', "
                "'2026-01-01', 0, 0, 1.0, 1, '', '{}', '[]', 0, 0, 0)"
            )
        )
    first.dispose()
    upgraded = Database(url)
    try:
        found = inspect(upgraded.engine)
        assert "sweep" in found.get_table_names()
        assert "sweep_id" in {c["name"] for c in found.get_columns("job")}
        assert "ix_job_sweep_id" in {i["name"] for i in found.get_indexes("job")}
        assert queue.get_job(upgraded, "old").sweep_id is None and queue.get_job(upgraded, "old").name == "kept"
        sweeps.submit_sweep(upgraded, None, spec(parameters={"steps": [1]}))
    finally:
        upgraded.dispose()


def test_a_sweep_on_postgresql_is_queued_whole_and_stopped_by_its_first_failure(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        sweep = sweeps.submit_sweep(db, None, spec(parameters={"steps": [1, 2, 3]}, continue_on_error=False))
        assert sorted(j.name for j in queue.list_jobs(db)) == ["st-1", "st-2", "st-3"]
        assert run_in_process(db, "failed").name == "st-1"
        view = sweeps.sweep_status(db, sweep.id)
        assert view.state == "stopped" and view.counts == {"failed": 1, "cancelled": 2}
    finally:
        db.dispose()
