"""The safety layer at inference time: which policy applies to a generation, and the guard around its stream.

Policy resolution: an alias's ``safety_policy`` (a name under ``STUDIO_HOME/safety/``, or a path confined to that
folder and the shipped ``configs/safety/``: see :mod:`studio.safety.store`) if it has one, else the studio's policy
-- ``STUDIO_HOME/safety/policy.yaml`` when saved from the Safety tab, else ``configs/safety/default.yaml``. The
policy's word list and Detoxify checkpoint are checked against the allowed folders before a filter is built.

Whether a generation is filtered: the request's switch (Playground toggle, ``safety`` field of the REST/OpenAI
bodies) when given, else on for aliases that carry a policy and off otherwise (filtering holds back streamed text
until it has been checked, so it is opt-in).

A prompt that a block rule stops raises :class:`SafetyBlockedError` (HTTP 400) before anything is generated; a
reply that a block rule stops mid-stream ends with ``finish_reason="content_filter"`` (as OpenAI names it),
without the offending part. Every triggered check is returned with the generation (``GenerationResult.safety``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from studio.errors import UserError
from studio.inference.base import GenerationEnd, StreamItem, TokenEvent
from studio.safety.filter import OutputGuard, SafetyFilter
from studio.safety.findings import SafetyResult
from studio.safety.store import PolicyStore
from studio.settings import Settings

log = logging.getLogger(__name__)

STUDIO_POLICY_FILE = "policy.yaml"


class SafetyBlockedError(UserError):
    """A safety policy blocked the prompt (OpenAI error code ``content_filter``)."""

    def __init__(self, message: str, *, param: str | None = "messages") -> None:
        super().__init__(message, param=param, code="content_filter")


@dataclass
class SafetyReport:
    """What the safety layer did to one generation (``to_dict`` is what the API returns and the DB stores)."""

    policy: str
    input: SafetyResult | None = None
    output: SafetyResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def findings(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for part in (self.input, self.output):
            if part is not None:
                out.extend(f.to_dict() for f in part.findings)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "findings": self.findings,
            "input_blocked": bool(self.input and self.input.blocked),
            "output_blocked": bool(self.output and self.output.blocked),
            "reason": (self.output.reason if self.output and self.output.blocked else None)
            or (self.input.reason if self.input and self.input.blocked else None),
            "input_modified": bool(self.input and self.input.modified),
            "scorer": (self.output.scorer if self.output else None) or (self.input.scorer if self.input else None),
        }


class SafetyService:
    """Builds and caches one :class:`SafetyFilter` per policy file (rebuilt when the file changes)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policies = PolicyStore(settings)
        self._filters: dict[Path, tuple[float, SafetyFilter]] = {}
        self._lock = threading.Lock()

    @property
    def studio_policy_path(self) -> Path:
        """Where the Safety tab saves the studio's policy."""
        return self.policies.studio_policy_path

    def ensure_studio_policy(self) -> Path:
        """The studio's policy file, created from ``configs/safety/default.yaml`` when it does not exist yet."""
        return self.policies.ensure_studio_policy()

    def policy_path(self, name: str | None = None) -> Path:
        """The policy file for ``name`` (an alias's ``safety_policy``) or, with None, the studio's policy."""
        return self.policies.read_path(name)

    def filter_for(self, name: str | None = None) -> SafetyFilter:
        """The (cached) filter of a policy; a changed file is re-read."""
        path = self.policy_path(name)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = -1.0
        with self._lock:
            cached = self._filters.get(path)
            if cached is not None and cached[0] == mtime:
                return cached[1]
        _path, policy = self.policies.load(name)
        made = SafetyFilter(self.policies.resolved(policy))
        with self._lock:
            self._filters[path] = (mtime, made)
        return made


def check_prompt(safety: SafetyFilter, text: str) -> SafetyResult:
    """Check the latest user text before generating; raise SafetyBlockedError when a block rule fires."""
    result = safety.check_input(text)
    if result.blocked:
        raise SafetyBlockedError(
            f"blocked by the safety policy before generation: {result.reason or 'a block rule fired'}",
            param="messages",
        )
    return result


def guard_stream(
    items: Iterator[StreamItem], guard: OutputGuard, on_done: Callable[[SafetyResult], None]
) -> Iterator[StreamItem]:
    """Pass a generation's stream through ``guard``: each token's visible text becomes what the guard releases;
    when a block rule fires the stream ends at once with ``finish_reason="content_filter"`` (closing the engine's
    generator stops the generation). ``on_done`` gets the guard's final result before the last item is yielded,
    so whoever reads the end of the stream also finds the findings."""
    done = False
    try:
        for item in items:
            if isinstance(item, TokenEvent):
                decision = guard.feed(item.text)
                yield replace(item, text=decision.emit)
                if decision.stop:
                    done = True
                    on_done(guard.finish())
                    yield GenerationEnd(finish_reason="content_filter", tail_text="", time=item.time)
                    return
            elif isinstance(item, GenerationEnd):
                tail = guard.feed(item.tail_text, n_tokens=0) if item.tail_text else None
                flushed = guard.flush() if tail is None or not tail.stop else None
                text = (tail.emit if tail is not None else "") + (flushed.emit if flushed is not None else "")
                stopped = (tail is not None and tail.stop) or (flushed is not None and flushed.stop)
                done = True
                on_done(guard.finish())
                reason = "content_filter" if stopped else item.finish_reason
                yield replace(item, finish_reason=reason, tail_text=text)  # type: ignore[arg-type]
                return
            else:
                yield item
    finally:
        if not done:
            on_done(guard.finish())


def safety_summary(report: dict[str, Any] | None) -> str:
    """One line for people about what the safety layer did: 'Safety: EMAIL_ADDRESS masked in the prompt · reply
    stopped: offensive word' ('' when filtering was off)."""
    if not report:
        return ""
    parts = []
    for f in report.get("findings", []):
        where = "prompt" if f.get("where") == "input" else "reply"
        parts.append(f"{f.get('type')} {f.get('action')} in the {where} (score {float(f.get('score', 0)):.2f})")
    if report.get("output_blocked"):
        parts.append(f"reply stopped: {report.get('reason')}")
    return "Safety: " + ("; ".join(parts) if parts else "no findings")
