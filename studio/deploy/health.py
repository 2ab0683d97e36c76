"""Health checks and the requests-served counter, read over HTTP from the serving process itself.

- A studio serving process (``studio serve-model``) answers ``GET /health`` once its model is loaded and counts
  every finished generation in ``GET /metrics`` (Prometheus text: ``whetstone_deployment_requests_total``).
- vLLM's OpenAI server answers ``GET /health`` once its engine runs and counts finished requests in
  ``vllm:request_success_total`` (one series per finish reason: they are summed).
- A remote endpoint is healthy when ``GET {base_url}/models`` answers 200 with its key; it serves no counter.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import httpx

HEALTH_TIMEOUT_S = 2.0
REQUEST_COUNTERS = ("whetstone_deployment_requests_total", "vllm:request_success_total")
_SAMPLE_RE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str  # '' when ok; else what went wrong, e.g. 'HTTP 503' or 'connection refused'
    status_code: int | None = None
    body: object = None  # the JSON answer, when there was one


def check(url: str, headers: dict[str, str] | None = None, timeout_s: float = HEALTH_TIMEOUT_S) -> Health:
    """GET ``url``: ok on HTTP 200, else why not (never raises)."""
    try:
        resp = httpx.get(url, headers=headers or {}, timeout=timeout_s)
    except httpx.TimeoutException:
        return Health(False, f"no answer from {url} within {timeout_s:g} s")
    except httpx.HTTPError as exc:
        reason = "connection refused" if isinstance(exc, httpx.ConnectError) else type(exc).__name__
        return Health(False, f"{url}: {reason}")
    body: object = None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code == 200:
        return Health(True, "", 200, body)
    if resp.status_code in (401, 403):
        return Health(False, f"{url} refused the API key (HTTP {resp.status_code})", resp.status_code, body)
    return Health(False, f"{url} answered HTTP {resp.status_code}", resp.status_code, body)


def parse_request_count(text: str) -> int | None:
    """The number of requests served, summed over the known counters' series in Prometheus text (None when the
    text has none of them)."""
    total: float | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line.strip())
        if match is None or match.group(1) not in REQUEST_COUNTERS:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        if math.isfinite(value):
            total = (total or 0.0) + value
    return None if total is None else int(total)


def read_request_count(
    metrics_url: str, headers: dict[str, str] | None = None, timeout_s: float = HEALTH_TIMEOUT_S
) -> int | None:
    """Requests served so far by the process behind ``metrics_url`` (None when it does not say)."""
    try:
        resp = httpx.get(metrics_url, headers=headers or {}, timeout=timeout_s)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    return parse_request_count(resp.text)
