"""The Fine-Tune tab's core (no model, no gradio): form values → config with errors naming the field, method
defaults, column mappings, dashboard counts, job views and the plotly figures built from real metric rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.datasets.stats import compute_token_stats
from studio.datasets.store import DatasetStore
from studio.db import Database
from studio.db.tables import JobMetric
from studio.errors import ConflictError, NotFoundError, ValidationError
from studio.jobs import queue
from studio.settings import Settings
from studio.training import service
from studio.training.config import config_from_yaml
from studio.training.service import (
    FORM_FIELDS,
    MemoryView,
    config_from_form,
    config_yaml_from_form,
    dashboard_summary,
    form_values,
    job_rows,
    job_view,
    learning_rate_figure,
    load_trained,
    loss_figure,
    mapping_template,
    mapping_yaml,
    memory_figure,
    method_form_defaults,
    metric_series,
    parse_mapping,
    parse_not_before,
    submit_yaml,
    token_histogram_figure,
)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'studio.db'}")
    yield database
    database.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(home=tmp_path / "home")
    s.ensure_dirs()
    return s


def _supervised(n: int) -> list[dict[str, object]]:
    return [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(n)
    ]


def _submit(db: Database, name: str = "job") -> str:
    return queue.submit(db, "finetune", {"name": name, "dataset": "d", "max_steps": 2}).id


# -- form → config ---------------------------------------------------------------------------------------------
def test_form_values_become_a_config_with_method_defaults() -> None:
    config = config_from_form(
        {
            "name": "",
            "dataset": "whetstone-assistant",
            "dataset_version": "latest",
            "method": "prefix",
            "lora_r": 0,  # another method's parameter: ignored, so its bad value does not matter
            "num_virtual_tokens": 12.0,
            "max_steps": 2.0,
            "batch_size": "2",
            "eval_every_steps": "",
            "learning_rate": None,
            "not_before": "",
        }
    )
    assert config.name == "whetstone-assistant-prefix"
    assert config.dataset_version is None
    assert config.num_virtual_tokens == 12 and isinstance(config.num_virtual_tokens, int)
    assert config.max_steps == 2 and config.batch_size == 2
    assert config.eval_every_steps is None  # empty means "once per epoch", not the default 10
    assert config.learning_rate == pytest.approx(1e-2)  # prefix tuning's smart default from configs/finetune
    assert config.lora_r == 8  # untouched default


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        ({"lora_r": 0}, "lora_r", "allowed range: 1 to 512"),
        ({"batch_size": 2.5}, "batch_size", "not a whole number"),
        ({"learning_rate": "fast"}, "learning_rate", "not a number"),
        ({"validation_split": 0.9}, "validation_split", "allowed range: 0 to 0.5"),
        ({"not_before": "tomorrow morning"}, "not_before", "YYYY-MM-DD HH:MM"),
        ({"dataset_version": "newest"}, "dataset_version", "not a version number"),
        ({"method": "magic"}, "method", "method"),
        ({"output_name": "bad name!"}, "output_name", "output_name"),
        ({"dataset": ""}, "dataset", "dataset"),
    ],
)
def test_form_errors_name_the_field(values: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        config_from_form({"dataset": "d", "method": "lora", **values})
    assert err.value.param == field
    assert words in str(err.value)


def test_zero_in_a_number_box_means_empty_where_zero_is_not_allowed() -> None:
    config = config_from_form({"dataset": "d", "max_steps": 0, "eval_every_steps": 0.0, "early_stopping_patience": 0})
    assert config.max_steps is None and config.eval_every_steps is None  # run the epochs, eval once per epoch
    assert config.early_stopping_patience == 0  # 0 is a real value here (disabled)


def test_unknown_form_field_is_refused() -> None:
    with pytest.raises(ValidationError) as err:
        config_from_form({"dataset": "d", "lora_rank": 8})
    assert err.value.param == "lora_rank"


def test_qlora_on_a_machine_without_it_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "qlora_available", lambda: (False, "bitsandbytes is not installed"))
    with pytest.raises(ValidationError) as err:
        config_from_form({"dataset": "d", "method": "qlora"})
    assert err.value.param == "method" and "bitsandbytes is not installed" in str(err.value)
    assert service.method_unavailable_reason("lora") is None


def test_module_lists_and_all_linear() -> None:
    lora = config_from_form({"dataset": "d", "target_modules": "q_proj, v_proj k_proj"})
    assert lora.target_modules == ["q_proj", "v_proj", "k_proj"]
    assert config_from_form({"dataset": "d", "target_modules": "all-linear"}).target_modules == "all-linear"
    ia3 = config_from_form(
        {
            "dataset": "d",
            "method": "adapter",
            "adapter_target_modules": "k_proj,down_proj",
            "adapter_feedforward_modules": "down_proj",
        }
    )
    assert ia3.adapter_target_modules == ["k_proj", "down_proj"] and ia3.adapter_feedforward_modules == ["down_proj"]


def test_review_yaml_is_the_same_config_and_the_form_shows_it_back() -> None:
    values = {"dataset": "d", "method": "lora", "max_steps": 2, "batch_size": 2, "validation_split": 0.0}
    text = config_yaml_from_form(values)
    config = config_from_yaml(text)
    assert config == config_from_form(values)
    shown = form_values(config)
    assert list(shown) == list(FORM_FIELDS)
    assert config_from_form(shown) == config  # the form round-trips


def test_method_defaults_are_the_methods_files() -> None:
    prefix = method_form_defaults("prefix")
    assert prefix["learning_rate"] == pytest.approx(1e-2) and prefix["num_virtual_tokens"] == 20
    assert method_form_defaults("qlora")["target_modules"] == "all-linear"
    assert method_form_defaults("full")["learning_rate"] < method_form_defaults("lora")["learning_rate"]


def test_not_before_is_local_time_unless_an_offset_is_given() -> None:
    moment = parse_not_before("2030-01-02 03:04")
    assert moment is not None and moment.tzinfo is not None and (moment.hour, moment.minute) == (3, 4)
    explicit = parse_not_before("2030-01-02T03:04+02:00")
    assert explicit is not None and explicit.utcoffset() is not None and explicit.utcoffset().total_seconds() == 7200
    assert parse_not_before("  ") is None


# -- mappings --------------------------------------------------------------------------------------------------
def test_mapping_text_round_trips_and_errors_name_the_mapping_field() -> None:
    mapping = parse_mapping("format: prompt_completion\nprompt: question\ncompletion: answer\n")
    assert mapping is not None and mapping.prompt == "question" and mapping.completion == "answer"
    assert parse_mapping(mapping_yaml(mapping)) == mapping
    assert parse_mapping("") is None and parse_mapping('{"format": "alpaca"}') is not None
    assert "instruction: instruction" in mapping_template("alpaca") and mapping_template("auto") == ""
    with pytest.raises(ValidationError) as err:
        parse_mapping("format: csv-ish")
    assert err.value.param == "mapping.format"
    with pytest.raises(ValidationError) as err:
        parse_mapping("format: messages\nquestion: q")
    assert err.value.param == "mapping.question" and "unknown mapping field" in str(err.value)
    with pytest.raises(ValidationError) as err:
        parse_mapping("prompt: question")
    assert err.value.param == "mapping.format"


# -- dashboard and jobs ----------------------------------------------------------------------------------------
def test_dashboard_counts_datasets_by_kind_and_jobs_by_state(db: Database, settings: Settings) -> None:
    store = DatasetStore(settings, db)
    store.create_version("support", _supervised(12))
    store.create_version("faq", _supervised(10))
    store.create_version(
        "prefs", [{"prompt": [{"role": "user", "content": "hi"}], "chosen": "hello", "rejected": "go away"}]
    )
    first, second, third = _submit(db, "one"), _submit(db, "two"), _submit(db, "three")
    queue.request_cancel(db, first)
    claimed = queue.claim_next(db, "host:1")
    assert claimed is not None and claimed.id == second  # oldest queued first
    queue.submit(db, "selftest", {"steps": 1})  # other kinds are not fine-tuning jobs

    summary = dashboard_summary(db)
    assert (summary.datasets, summary.supervised, summary.preference) == (3, 2, 1)
    assert summary.jobs_by_state == {
        "queued": 1,
        "running": 1,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 1,
        "interrupted": 0,
    }
    assert summary.jobs == 3
    assert [row[0] for row in summary.recent_jobs] == [third, second, first]
    assert summary.recent_jobs[2][2] == "cancelled"


def test_job_rows_show_progress_and_steps(db: Database) -> None:
    job_id = _submit(db)
    claimed = queue.claim_next(db, "host:1")
    assert claimed is not None
    lease = queue.Lease.of(claimed)
    queue.record_progress(db, lease, step=3, total_steps=12, progress=0.25)
    [row] = job_rows(queue.list_jobs(db))
    assert row[0] == job_id and row[2] == "running" and row[3] == "25%" and row[4] == "3/12"


def _job_with_metrics(db: Database) -> str:
    job_id = _submit(db)
    claimed = queue.claim_next(db, "host:1")
    assert claimed is not None
    lease = queue.Lease.of(claimed)
    for step, loss, lr, grad in [(1, 4.5, 1e-4, 2.0), (2, 3.1, 2e-4, 1.5), (3, 2.2, 1.5e-4, 1.1)]:
        queue.add_metric(db, lease, step, step / 3, {"train_loss": loss, "learning_rate": lr, "grad_norm": grad})
    queue.add_metric(db, lease, 3, 1.0, {"eval_loss": 2.6})
    queue.record_progress(db, lease, step=3, total_steps=6, progress=0.5, epoch=1.0, eta_s=75.0)
    return job_id


def test_metric_series_and_figures_come_from_the_job_rows(db: Database, settings: Settings) -> None:
    job_id = _job_with_metrics(db)
    series = metric_series(queue.job_metrics(db, job_id))
    assert series["train_loss"].steps == [1, 2, 3] and series["train_loss"].values == [4.5, 3.1, 2.2]
    assert series["eval_loss"].steps == [3] and series["eval_loss"].last == 2.6

    loss = loss_figure(series)
    assert [t.name for t in loss.data] == ["train loss", "eval loss"]
    assert list(loss.data[0].x) == [1, 2, 3] and list(loss.data[0].y) == [4.5, 3.1, 2.2]
    lr = learning_rate_figure(series)
    assert len(lr.data) == 1 and list(lr.data[0].y) == [1e-4, 2e-4, 1.5e-4]

    view = job_view(settings, db, job_id)
    assert view.state == "running" and view.step == 3 and view.total_steps == 6 and view.epoch == 1.0
    assert view.eta_label == "about 1 min 15 s left" and view.can_cancel and not view.can_load
    data = view.to_dict()
    assert view.signature == job_view(settings, db, job_id).signature  # nothing changed: the UI skips redrawing
    queue.heartbeat(db, queue.Lease.of(queue.get_job(db, job_id)))
    assert view.signature == job_view(settings, db, job_id).signature  # a heartbeat alone shows nothing new
    queue.add_metric(db, queue.Lease.of(queue.get_job(db, job_id)), 4, 1.3, {"train_loss": 1.9})
    assert view.signature != job_view(settings, db, job_id).signature
    assert data["progress"] == 0.5 and data["metrics"]["grad_norm"]["values"] == [2.0, 1.5, 1.1]


def test_figures_without_points_say_so_instead_of_drawing_nothing() -> None:
    empty = loss_figure({})
    assert len(empty.data) == 0
    assert "no points logged yet" in empty.layout.annotations[0].text


def test_metric_rows_with_non_numbers_are_left_out() -> None:
    rows = [
        JobMetric(id=1, job_id="j", step=1, values={"train_loss": 1.0, "note": "x", "flag": True}),
        JobMetric(id=2, job_id="j", step=2, values={"train_loss": float("nan")}),
    ]
    series = metric_series(rows)
    assert list(series) == ["train_loss"] and series["train_loss"].values == [1.0]


def test_token_histogram_and_memory_figures() -> None:
    stats = compute_token_stats([10, 12, 12, 40, 80], "tok", max_length=64)
    fig = token_histogram_figure(stats)
    assert sum(fig.data[0].y) == 5
    assert any("max_length 64" in (a.text or "") for a in fig.layout.annotations)
    gib = 1024**3
    memory = memory_figure(MemoryView(system_total=16 * gib, system_available=6 * gib, job_rss=2 * gib))
    assert [t.name for t in memory.data] == ["job process", "other processes", "free"]
    assert [t.x[0] for t in memory.data] == [2.0, 8.0, 6.0]
    no_job = memory_figure(MemoryView(system_total=16 * gib, system_available=6 * gib))
    assert [t.name for t in no_job.data] == ["other processes", "free"]


# -- submit and load -------------------------------------------------------------------------------------------
def test_submit_checks_the_dataset_before_queueing(db: Database, settings: Settings) -> None:
    text = config_yaml_from_form({"dataset": "nope", "max_steps": 2})
    with pytest.raises(NotFoundError) as err:
        submit_yaml(settings, db, text)
    assert "dataset 'nope' not found" in str(err.value)
    with pytest.raises(ValidationError) as bad:
        submit_yaml(settings, db, "name: x\ndataset: d\nlora_rank: 3\n")
    assert bad.value.param == "lora_rank" and "did you mean 'lora_r'" in str(bad.value)
    with pytest.raises(ValidationError):
        submit_yaml(settings, db, "   ")
    assert queue.list_jobs(db) == []  # nothing was queued


def test_only_a_succeeded_job_loads_in_the_playground(db: Database) -> None:
    job_id = _submit(db)
    with pytest.raises(ConflictError) as err:
        load_trained(None, db, job_id)  # type: ignore[arg-type]  # refused before any engine is touched
    assert "queued" in str(err.value)


def test_the_estimate_adds_the_job_process_time_the_last_jobs_took(db: Database) -> None:
    """Issue 15, point 13: a job's wall time beyond its training (process start, imports, dataset, registering
    the artifact) comes from the jobs that ran here; none before the first job."""
    from datetime import timedelta

    from studio.db.tables import Job

    assert service.job_start_part(db) is None
    # (outside train(), the imports train() timed at its start): 12 + 0, 5 + 10, 30 + 0
    for outside, imports in ((12.0, 0.0), (5.0, 10.0), (30.0, 0.0)):
        job_id = _submit(db)
        claimed = queue.claim_next(db, "host:1")
        assert claimed is not None
        result = {"seconds": 40.0, "startup_seconds": imports}
        assert queue.finish(db, queue.Lease.of(claimed), queue.SUCCEEDED, message="ok", result=result)
        with db.session() as session:
            row = session.get(Job, job_id)
            assert row is not None and row.started_at is not None
            row.finished_at = row.started_at + timedelta(seconds=40.0 + outside)
            session.add(row)
            session.commit()
    part = service.job_start_part(db)
    assert part is not None and part.name == "job process" and part.measured
    assert part.seconds == pytest.approx(15.0) and part.low <= 12.0 and part.high >= 30.0
    assert "last 3 job(s)" in part.detail
