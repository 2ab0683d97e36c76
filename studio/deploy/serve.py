"""``studio serve-model``: the studio's own OpenAI-compatible API serving one model, as a deployment's process.

It is the studio's REST app (:func:`studio.api.server.create_api`, behind the same
:class:`~studio.api.security.SecurityMiddleware`) with only ``/v1/*``, ``/health`` and the API docs kept, plus
``/metrics``; its :class:`~studio.context.AppContext` answers with a
:class:`~studio.deploy.targets.ServedResolver`, so the deployment serves exactly its model (under the deployment's
name, its target's name, the model id and ``default``) and a request for another one is a 404.

Order of work, so that a mistake is reported before anything slow: the bind rule (a non-loopback host needs
STUDIO_API_KEY), the port (in use: exit at once naming it), the target, then the model is loaded, and only then
does the port open -- ``/health`` answering means the model is ready. Every finished generation is written to the
studio's ``request_log`` as usual and counted in ``/metrics``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from studio.errors import ConflictError
from studio.settings import Settings

log = logging.getLogger(__name__)

KEPT_PATHS = ("/v1/", "/health", "/metrics", "/openapi.json", "/docs", "/redoc")
CHECK_PATHS = ("/health", "/metrics")  # polled by the studio: left out of the access log
REQUESTS_METRIC = "whetstone_deployment_requests_total"
ERRORS_METRIC = "whetstone_deployment_request_errors_total"
TOKENS_METRIC = "whetstone_deployment_completion_tokens_total"


class RequestCounter:
    """Generations this process finished: served (no error), failed, and tokens generated."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.served = 0
        self.errors = 0
        self.completion_tokens = 0

    def add(self, ok: bool, completion_tokens: int) -> None:
        with self._lock:
            if ok:
                self.served += 1
            else:
                self.errors += 1
            self.completion_tokens += completion_tokens

    def prometheus(self) -> str:
        """The counters in Prometheus' text format."""
        with self._lock:
            rows = [
                (REQUESTS_METRIC, "Requests this deployment answered without an error.", self.served),
                (ERRORS_METRIC, "Requests that ended with an error.", self.errors),
                (TOKENS_METRIC, "Tokens generated.", self.completion_tokens),
            ]
        out = []
        for name, help_text, value in rows:
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]
        return "\n".join(out) + "\n"


class QuietChecks(logging.Filter):
    """Keeps the studio's health checks (``/health``, ``/metrics``, every few seconds) out of the access log, so
    that the log's tail -- what a failed deployment reports -- shows the requests and errors that matter."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        path = args[2] if len(args) >= 3 and isinstance(args[2], str) else ""
        return path.split("?", 1)[0] not in CHECK_PATHS


def build_app(ctx: Any, counter: RequestCounter) -> Any:
    """The studio's REST app reduced to the OpenAI routes, ``/health`` and the docs, plus ``/metrics``."""
    from fastapi.responses import PlainTextResponse

    from studio.api.security import SecurityMiddleware
    from studio.api.server import create_api

    app = create_api(ctx)
    app.router.routes = [
        r
        for r in app.router.routes
        if str(getattr(r, "path", "")).startswith(KEPT_PATHS) and getattr(r, "path", "") != "/metrics"
    ]

    @app.get("/metrics", tags=["studio"], response_class=PlainTextResponse)
    def metrics() -> str:
        """Requests served (read by the studio for the deployment's table), then the studio's own metrics
        (generations, TTFT and tok/s histograms, queue depth; issue 20), in Prometheus text."""
        studio_metrics = ctx.metrics.render().decode() if getattr(ctx, "metrics", None) is not None else ""
        return counter.prometheus() + studio_metrics

    app.add_middleware(SecurityMiddleware, settings=ctx.settings)
    return app


def serve_model(
    settings: Settings,
    target: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    adapter: str | None = None,
    engine: str = "auto",
    served_name: str | None = None,
) -> int:
    """Load ``target`` (with ``adapter``) on ``engine`` and serve it on ``host``:``port`` until SIGTERM/Ctrl-C."""
    import uvicorn

    from studio.auth import check_bind
    from studio.context import AppContext
    from studio.deploy.process import port_holder, port_in_use
    from studio.deploy.service import choose_deploy_engine
    from studio.deploy.targets import ServedResolver, resolve_target

    settings = settings.model_copy(update={"host": host, "port": port})
    check_bind(settings, host)
    if port_in_use(host, port):
        raise ConflictError(f"port {port} on {host} is in use{port_holder(port)}; choose another --port", param="port")
    ctx = AppContext.create(settings)
    try:
        found = resolve_target(settings, ctx.engines.resolver, target, adapter, engine)
        chosen = choose_deploy_engine(found, engine)
        name = served_name or target
        resolver = ServedResolver(ctx.engines.resolver, found, name, chosen)
        ctx.engines.resolver = resolver
        t0 = time.perf_counter()
        ctx.engines.load_resolved(resolver.served, adapter=str(found.adapter) if found.adapter else None, engine=chosen)
        log.info(
            "loaded %s%s on %s in %.1f s",
            found.model_id,
            f" with adapter {found.adapter.name}" if found.adapter else "",
            chosen,
            time.perf_counter() - t0,
        )
        counter = RequestCounter()
        record = ctx.engines.on_finish

        def count_and_record(done: Any) -> None:
            counter.add(done.error is None, done.result.stats.completion_tokens)
            if record is not None:
                record(done)

        ctx.engines.on_finish = count_and_record
        app = build_app(ctx, counter)
        log.info("serving '%s' on http://%s:%d/v1 (health: /health, counters: /metrics)", name, host, port)
        config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
        logging.getLogger("uvicorn.access").addFilter(QuietChecks())  # after Config: it (re)configures logging
        server = uvicorn.Server(config)
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        server.run()
        if not server.started:
            raise ConflictError(f"could not listen on {host}:{port} (see the lines above)", param="port")
    finally:
        ctx.close(drain_timeout_s=5.0)
    return 0


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(0)
