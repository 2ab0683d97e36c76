"""Cost arithmetic (issue 20, point 4): the user's price table (validated, saved atomically), a device's hourly
price, a job's actual cost from its measured running time, the wizard's estimate, and totals per day, per user
and per experiment -- on real job rows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from studio.auth import Principal
from studio.db import Database
from studio.db.tables import Job
from studio.errors import ValidationError
from studio.jobs import queue
from studio.jobs.queue import JOB
from studio.monitoring.costs import (
    SHIPPED,
    cost_totals,
    costs_path,
    estimated_cost,
    job_cost,
    load_costs,
    parse_costs,
    price_for,
    save_costs,
)
from studio.settings import Settings
from studio.users.acting import acting_as

TABLE = """
currency: EUR
source: our own figures, 2026-12
cpu_core_per_hour: 0.05
gpu_per_hour: {default: 2.0, NVIDIA L4: 0.8}
"""


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Settings, Database]]:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    yield settings, db
    db.dispose()


def test_the_shipped_table_is_valid_and_labelled_as_examples(env) -> None:  # type: ignore[no-untyped-def]
    settings, _db = env
    table, text = load_costs(settings)
    assert text == SHIPPED.read_text() and table.currency == "USD" and "example" in table.source
    assert table.gpu_per_hour["default"] > 0 and table.cpu_core_per_hour > 0


def test_a_bad_table_names_the_field_and_writes_nothing(env) -> None:  # type: ignore[no-untyped-def]
    settings, _db = env
    with pytest.raises(ValidationError, match="cpu_core_per_hour"):
        save_costs(settings, TABLE.replace("0.05", "-1"))
    with pytest.raises(ValidationError, match="default"):
        parse_costs("currency: EUR\ncpu_core_per_hour: 1\ngpu_per_hour: {A100: 1}\n")
    with pytest.raises(ValidationError, match="colour"):
        parse_costs(TABLE + "colour: red\n")
    assert not costs_path(settings).exists()
    save_costs(settings, TABLE)
    assert load_costs(settings)[0].currency == "EUR"


def test_prices_and_costs_from_measured_time(env) -> None:  # type: ignore[no-untyped-def]
    _settings, db = env
    table = parse_costs(TABLE)
    cpu = price_for(table, "cpu", cores=4)
    assert cpu.per_hour == pytest.approx(0.2) and cpu.basis == "4 CPU cores x 0.05 EUR/h"
    assert price_for(table, "cuda:0", gpu="NVIDIA L4").per_hour == 0.8
    assert price_for(table, "cuda:1", gpu="Some Other GPU").per_hour == 2.0
    assert estimated_cost(table, 1800, "cuda:0", gpu="NVIDIA L4").amount == pytest.approx(0.4)
    job_id = queue.submit(db, "selftest", {"steps": 1}).id
    start = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    with db.engine.begin() as conn:
        conn.execute(
            update(JOB)
            .where(JOB.c.id == job_id)
            .values(state="succeeded", started_at=start, finished_at=start + timedelta(minutes=45))
        )
    with db.session() as s:
        job = s.get(Job, job_id)
    assert job is not None
    cost = job_cost(table, job, cores=2)
    assert cost.hours == pytest.approx(0.75) and cost.amount == pytest.approx(0.75 * 2 * 0.05)
    assert "EUR" in cost.text()


def test_totals_per_day_user_and_experiment(env) -> None:  # type: ignore[no-untyped-def]
    _settings, db = env
    table = parse_costs(TABLE)
    for who, name, day, minutes in (("u1", "sft-a", 1, 60), ("u2", "sft-b", 1, 30), ("u1", "sft-a", 2, 120)):
        with acting_as(Principal(who, "session", role="member", user_id=who)):
            job_id = queue.submit(db, "selftest", {"steps": 1}, name=name).id
        start = datetime(2026, 12, day, 9, 0, tzinfo=UTC)
        with db.engine.begin() as conn:
            conn.execute(
                update(JOB)
                .where(JOB.c.id == job_id)
                .values(state="succeeded", started_at=start, finished_at=start + timedelta(minutes=minutes))
            )
    queue.submit(db, "selftest", {"steps": 1})  # never started: no cost
    cores = os.cpu_count() or 1
    per_hour = cores * 0.05
    days = {t.key: t for t in cost_totals(db, table, "day")}
    assert days["2026-12-01"].jobs == 2 and days["2026-12-01"].hours == pytest.approx(1.5)
    assert days["2026-12-02"].amount == pytest.approx(2 * per_hour)
    users = {t.key: t for t in cost_totals(db, table, "user", owners={"u1": "ada", "u2": "bob"})}
    assert users["ada"].hours == pytest.approx(3.0) and users["bob"].amount == pytest.approx(0.5 * per_hour)
    experiments = {t.key: t for t in cost_totals(db, table, "experiment")}
    assert experiments["selftest: sft-a"].jobs == 2
    with pytest.raises(ValidationError, match="day, user or experiment"):
        cost_totals(db, table, "month")


def test_the_job_page_shows_its_cost_from_measured_time(env) -> None:  # type: ignore[no-untyped-def]
    """The Fine-Tune job monitor's view: the job's cost from its running time; "so far" while it runs."""
    from components.finetune.render import job_header_html
    from studio.training.service import job_view

    settings, db = env
    save_costs(settings, TABLE)
    job_id = queue.submit(db, "selftest", {"steps": 1}).id
    assert job_view(settings, db, job_id).cost == ""  # not started: no cost
    start = datetime.now(UTC) - timedelta(minutes=30)
    with db.engine.begin() as conn:
        conn.execute(update(JOB).where(JOB.c.id == job_id).values(state="running", started_at=start))
    running = job_view(settings, db, job_id)
    assert running.cost.endswith("so far") and "EUR" in running.cost
    with db.engine.begin() as conn:
        conn.execute(
            update(JOB).where(JOB.c.id == job_id).values(state="succeeded", finished_at=start + timedelta(minutes=30))
        )
    view = job_view(settings, db, job_id)
    cores = os.cpu_count() or 1
    assert view.cost.startswith(f"{0.5 * cores * 0.05:.4f} EUR (30.0 min at {cores} CPU cores")
    assert view.to_dict()["cost"] == view.cost and "Cost: " in job_header_html(view)
