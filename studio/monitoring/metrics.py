"""``GET /metrics``: the studio in Prometheus' text format (prometheus-client), for operators (issue 20, point 6).

Per finished generation (whatever door it came through): requests by model, engine, endpoint and outcome; tokens
generated; time to first token and decode speed as histograms. At scrape time: generations running and waiting per
model (the admission queue), loaded models, jobs by state, and per GPU the memory NVML reports (nothing without a
GPU). One registry per app, so several studios in one process (tests) do not collide.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from studio.context import AppContext
    from studio.inference.manager import FinishedGeneration

log = logging.getLogger(__name__)

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
TPS_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StudioMetrics:
    """The counters and histograms a studio updates, and the collector that reads its state when scraped."""

    def __init__(self, ctx: AppContext) -> None:
        self.registry = CollectorRegistry()
        labels = ("model", "engine", "endpoint")
        self.requests = Counter(
            "studio_generation_requests",
            "Finished generations, by model, engine, endpoint and outcome (ok | error | cancelled)",
            (*labels, "outcome"),
            registry=self.registry,
        )
        self.tokens = Counter(
            "studio_generated_tokens", "Tokens generated (completion tokens)", labels, registry=self.registry
        )
        self.prompt_tokens = Counter("studio_prompt_tokens", "Prompt tokens processed", labels, registry=self.registry)
        self.ttft = Histogram(
            "studio_time_to_first_token_seconds",
            "Prompt processing start to first generated token",
            labels,
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.tps = Histogram(
            "studio_decode_tokens_per_second",
            "Decode speed of one generation (tokens after the first per second)",
            labels,
            buckets=TPS_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(ctx))
        self._ctx = ctx

    def observe(self, done: FinishedGeneration) -> None:
        """Count one finished generation (``EngineManager.on_finish``)."""
        stats = done.result.stats
        labels = (done.model_id, self._engine_of(done.model_id), done.endpoint)
        outcome = "error" if done.error else ("cancelled" if stats.finish_reason == "cancelled" else "ok")
        self.requests.labels(*labels, outcome).inc()
        self.tokens.labels(*labels).inc(stats.completion_tokens)
        self.prompt_tokens.labels(*labels).inc(stats.prompt_tokens)
        if stats.ttft_s is not None:
            self.ttft.labels(*labels).observe(stats.ttft_s)
        if stats.tokens_per_s is not None:
            self.tps.labels(*labels).observe(stats.tokens_per_s)

    def _engine_of(self, model_id: str) -> str:
        for info in self._ctx.engines.loaded():
            if info.model_id == model_id:
                return info.backend
        return "unknown"

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """What is true at scrape time: the admission queue, loaded models, jobs by state, GPU memory."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Any]:
        running = GaugeMetricFamily("studio_generations_running", "Generations running per model", labels=["model"])
        waiting = GaugeMetricFamily(
            "studio_generations_waiting", "Generations waiting for a place per model (queue depth)", labels=["model"]
        )
        for key, (run, wait) in sorted(self.ctx.engines.admission.all_counts().items()):
            running.add_metric([key], run)
            waiting.add_metric([key], wait)
        yield running
        yield waiting
        loaded = GaugeMetricFamily(
            "studio_model_loaded_bytes", "Memory of each loaded model", labels=["model", "engine", "device"]
        )
        for info in self.ctx.engines.loaded():
            loaded.add_metric([info.model_id, info.backend, info.device], info.memory_bytes)
        yield loaded
        yield self._jobs()
        gpu = self._gpu()
        if gpu is not None:
            yield gpu

    def _jobs(self) -> GaugeMetricFamily:
        from sqlmodel import func, select

        from studio.db.tables import Job
        from studio.jobs.queue import STATES

        family = GaugeMetricFamily("studio_jobs", "Jobs in the queue by state and kind", labels=["state", "kind"])
        counts: dict[tuple[str, str], int] = {}
        try:
            with self.ctx.db.session() as s:
                for state, kind, n in s.exec(select(Job.state, Job.kind, func.count()).group_by(Job.state, Job.kind)):
                    counts[(str(state), str(kind))] = int(n)
        except Exception:  # a scrape must answer even when the database hiccups
            log.exception("could not count jobs for /metrics")
        for state in STATES:
            if not any(s == state for s, _k in counts):
                family.add_metric([state, ""], 0)
        for (state, kind), n in sorted(counts.items()):
            family.add_metric([state, kind], n)
        return family

    @staticmethod
    def _gpu() -> GaugeMetricFamily | None:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no NVML library or no GPU: no GPU metrics
            return None
        family = GaugeMetricFamily(
            "studio_gpu_memory_bytes", "GPU memory by GPU index and kind (used | total)", labels=["gpu", "kind"]
        )
        try:
            for i in range(pynvml.nvmlDeviceGetCount()):
                mem = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i))
                family.add_metric([str(i), "used"], int(mem.used))
                family.add_metric([str(i), "total"], int(mem.total))
        finally:
            pynvml.nvmlShutdown()
        return family
