"""Persistence on a real SQLite file: schema, migrations, sessions, and the request log AppContext writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlmodel import select

from studio.context import AppContext
from studio.db import Database, RequestLog, SchemaVersion
from studio.db.migrations import MIGRATIONS, current_version, migrate
from studio.errors import ValidationError
from studio.inference.base import GenerationEnd, GenerationStart, TokenEvent
from studio.inference.manager import FinishedGeneration
from studio.inference.stats import GenerationResult
from studio.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STUDIO_DATABASE_URL", "STUDIO_HOME", "STUDIO_MODEL_DIRS", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def db(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path}/studio.db")
    yield database
    database.dispose()


def _rows(db: Database) -> list[RequestLog]:
    with db.session() as s:
        rows = list(s.exec(select(RequestLog)).all())
        s.expunge_all()
    return rows


def test_database_file_and_tables_are_created(db: Database, tmp_path: Path) -> None:
    assert (tmp_path / "studio.db").is_file()
    tables = set(inspect(db.engine).get_table_names())
    assert {"request_log", "schema_version"} <= tables


def test_journal_mode_is_wal_and_foreign_keys_on(db: Database, tmp_path: Path) -> None:
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    # WAL is a property of the file: a plain sqlite3 connection sees it too
    import sqlite3

    raw = sqlite3.connect(tmp_path / "studio.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


def test_schema_version_equals_number_of_migrations(db: Database) -> None:
    assert current_version(db.engine) == len(MIGRATIONS)
    with db.session() as s:
        versions = sorted(s.exec(select(SchemaVersion.version)).all())
    assert versions == [m.version for m in MIGRATIONS]


def test_migrate_twice_is_idempotent(db: Database, tmp_path: Path) -> None:
    assert migrate(db.engine) == len(MIGRATIONS)
    assert migrate(db.engine) == len(MIGRATIONS)
    with db.session() as s:
        assert len(s.exec(select(SchemaVersion)).all()) == len(MIGRATIONS)
    # reopening the same file (a second process start) does not re-apply anything either
    again = Database(f"sqlite:///{tmp_path}/studio.db")
    try:
        with again.session() as s:
            assert len(s.exec(select(SchemaVersion)).all()) == len(MIGRATIONS)
    finally:
        again.dispose()


def test_reopening_keeps_rows(db: Database, tmp_path: Path) -> None:
    with db.session() as s:
        s.add(RequestLog(request_id="keep", model="m", endpoint="chat"))
    db.dispose()
    again = Database(f"sqlite:///{tmp_path}/studio.db")
    try:
        assert [r.request_id for r in _rows(again)] == ["keep"]
    finally:
        again.dispose()


def test_request_log_round_trips(db: Database) -> None:
    with db.session() as s:
        s.add(
            RequestLog(
                request_id="req-1",
                model="HuggingFaceTB/SmolLM2-135M-Instruct",
                alias="smol",
                endpoint="/v1/chat/completions",
                prompt_tokens=31,
                completion_tokens=8,
                ttft_ms=120.5,
                tokens_per_s=48.25,
                total_ms=300.0,
                finish_reason="stop",
            )
        )
    [row] = _rows(db)
    assert row.id is not None
    assert row.request_id == "req-1"
    assert row.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert row.alias == "smol"
    assert row.endpoint == "/v1/chat/completions"
    assert (row.prompt_tokens, row.completion_tokens) == (31, 8)
    assert row.ttft_ms == 120.5
    assert row.tokens_per_s == 48.25
    assert row.total_ms == 300.0
    assert row.finish_reason == "stop"
    assert row.error is None
    assert row.created_at is not None


def test_failing_session_rolls_back(db: Database) -> None:
    with pytest.raises(RuntimeError, match="handler failed"), db.session() as s:
        s.add(RequestLog(request_id="lost", model="m", endpoint="chat"))
        s.flush()  # the INSERT has been sent...
        raise RuntimeError("handler failed")
    assert _rows(db) == []  # ...and undone


def test_successful_session_commits(db: Database) -> None:
    with db.session() as s:
        s.add(RequestLog(request_id="a", model="m", endpoint="chat"))
        s.add(RequestLog(request_id="b", model="m", endpoint="chat"))
    assert sorted(r.request_id for r in _rows(db)) == ["a", "b"]


@pytest.mark.parametrize("url", ["not a url", "://nothing", ""])
def test_bad_url_is_a_validation_error_naming_database_url(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        Database(url)
    assert info.value.param == "database_url"
    assert "STUDIO_DATABASE_URL" in info.value.message
    assert info.value.status_code == 400


@pytest.mark.parametrize("url", ["postgres://studio@localhost/studio", "nosuchdb://x"])
def test_unknown_dialect_is_a_validation_error_naming_database_url(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        Database(url)
    assert info.value.param == "database_url"


# -- AppContext ----------------------------------------------------------------------------------------------
def test_app_context_creates_home_folders_and_db(tmp_path: Path) -> None:
    home = tmp_path / "fresh-home"
    ctx = AppContext.create(Settings(home=home, hf_cache=tmp_path / "hub"))
    try:
        for sub in ("models", "aliases", "adapters", "datasets", "runs", "exports", "plugins"):
            assert (home / sub).is_dir(), sub
        assert (home / "studio.db").is_file()
        assert current_version(ctx.db.engine) == len(MIGRATIONS)
        assert ctx.engines.on_finish == ctx.record_generation
        assert ctx.registry.settings is ctx.settings
    finally:
        ctx.close()


def _result(*, tail: str = "", finish: str = "stop") -> GenerationResult:
    result = GenerationResult()
    items = [
        GenerationStart(prompt_tokens=12, started=100.0),
        TokenEvent(token_id=1, token="Hel", text="Hel", logprob=-0.1, top_logprobs=(), time=100.25),
        TokenEvent(token_id=2, token="lo", text="lo", logprob=-0.2, top_logprobs=(), time=100.5),
        TokenEvent(token_id=3, token="!", text="", logprob=-0.3, top_logprobs=(), time=100.75),
        GenerationEnd(finish_reason=finish, tail_text=tail, time=101.0),  # type: ignore[arg-type]
    ]
    for item in items:
        result.add(item)
    return result


def test_record_generation_writes_a_request_log_row(tmp_path: Path) -> None:
    ctx = AppContext.create(Settings(home=tmp_path, hf_cache=tmp_path / "hub"))
    try:
        result = _result(tail="!")
        assert result.text == "Hello!"
        ctx.record_generation(FinishedGeneration("req-42", "acme/tiny", "/v1/chat/completions", result, None))
        [row] = _rows(ctx.db)
    finally:
        ctx.close()
    assert row.request_id == "req-42"
    assert row.model == "acme/tiny"
    assert row.endpoint == "/v1/chat/completions"
    assert row.prompt_tokens == 12
    assert row.completion_tokens == 3
    assert row.ttft_ms == pytest.approx(250.0)
    assert row.tokens_per_s == pytest.approx(4.0)  # 2 tokens after the first in 0.5 s
    assert row.total_ms == pytest.approx(1000.0)
    assert row.finish_reason == "stop"
    assert row.error is None


def test_record_generation_of_a_failed_generation(tmp_path: Path) -> None:
    ctx = AppContext.create(Settings(home=tmp_path, hf_cache=tmp_path / "hub"))
    try:
        result = GenerationResult()
        result.add(GenerationStart(prompt_tokens=5, started=10.0))
        ctx.record_generation(FinishedGeneration("req-err", "acme/tiny", "playground", result, "CUDA out of memory"))
        [row] = _rows(ctx.db)
    finally:
        ctx.close()
    assert row.finish_reason == "error"
    assert row.error == "CUDA out of memory"
    assert row.completion_tokens == 0
    assert row.ttft_ms is None
    assert row.tokens_per_s is None
    assert row.total_ms == 0.0


def test_record_generation_rows_survive_a_restart(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, hf_cache=tmp_path / "hub")
    ctx = AppContext.create(settings)
    ctx.record_generation(FinishedGeneration("r1", "m", "cli", _result(finish="length"), None))
    ctx.close()
    ctx2 = AppContext.create(settings)
    try:
        rows = _rows(ctx2.db)
    finally:
        ctx2.close()
    assert [(r.request_id, r.finish_reason) for r in rows] == [("r1", "length")]
