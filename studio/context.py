"""``AppContext``: the one object that carries the studio's state into the UI, the REST API and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from studio.datasets.store import DatasetStore
from studio.db import Database, RequestLog
from studio.inference.manager import EngineManager, FinishedGeneration
from studio.models.registry import ModelRegistry
from studio.monitoring.metrics import StudioMetrics
from studio.settings import Settings
from studio.users import UserService

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    settings: Settings
    db: Database
    registry: ModelRegistry
    engines: EngineManager
    datasets: DatasetStore
    users: UserService
    metrics: StudioMetrics | None = None  # GET /metrics (issue 20); set by create()

    @classmethod
    def create(cls, settings: Settings | None = None) -> AppContext:
        """Build everything from settings: folders, database (migrated), registry, engine manager."""
        settings = settings or Settings()
        settings.ensure_dirs()
        db = Database(settings.db_url)
        registry = ModelRegistry(settings)
        ctx = cls(
            settings=settings,
            db=db,
            registry=registry,
            engines=EngineManager(settings, registry),
            datasets=DatasetStore(settings, db),
            users=UserService(settings, db),
        )
        ctx.users.ensure_first_admin()
        try:
            from studio.datasets.builtin import ensure_builtin_datasets

            ensure_builtin_datasets(ctx.datasets)  # the shipped example datasets, imported once per home
        except Exception:  # a broken shipped file must not keep the studio from starting
            log.exception("could not import the built-in datasets")
        ctx.metrics = StudioMetrics(ctx)
        ctx.engines.on_finish = ctx.record_generation
        ctx.engines.user_gate = ctx.users.acquire_generation
        return ctx

    def record_generation(self, done: FinishedGeneration) -> None:
        """Write one ``RequestLog`` row for a finished (or failed, or cancelled) generation, and count it for
        ``GET /metrics``."""
        if self.metrics is not None:
            try:
                self.metrics.observe(done)
            except Exception:  # metrics must never cost a request its log row
                log.exception("could not count generation %s for /metrics", done.request_id)
        stats = done.result.stats
        row = RequestLog(
            request_id=done.request_id,
            model=done.model_id,
            alias=done.alias,
            endpoint=done.endpoint,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            ttft_ms=stats.ttft_s * 1000 if stats.ttft_s is not None else None,
            tokens_per_s=stats.tokens_per_s,
            total_ms=stats.total_s * 1000,
            finish_reason=stats.finish_reason if done.error is None else "error",
            error=done.error,
            safety=done.result.safety,
            user_id=done.user_id,
        )
        with self.db.session() as session:
            session.add(row)

    def close(self, drain_timeout_s: float = 0.0) -> None:
        """Shut down in order: refuse new generations, let running ones finish for up to ``drain_timeout_s``
        seconds (``studio serve`` passes ``STUDIO_DRAIN_TIMEOUT_S``), cancel the rest, wait until every
        generation has written its request_log row, unload the models, then close the database."""
        self.engines.close(drain_timeout_s)
        self.db.dispose()
