"""Job kinds: what a job of a given ``kind`` validates its config with and which function runs it.

A kind is registered by the module that implements it, at import time::

    register_kind(JobKind("finetune", FinetuneConfig, run_finetune, "Fine-tune a model with TRL/PEFT"))

The modules are listed once, in ``KIND_MODULES``, and imported lazily the first time one of their kinds is
asked for: submitting a job (in the CLI, the UI or the server) and running it (in the job's own process)
both go through ``get_kind``, so a kind works everywhere as soon as its module is listed here. A listed module
that cannot be imported (an optional dependency missing) only breaks its own kinds, with an error naming it.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from studio.errors import BackendUnavailableError, ValidationError

if TYPE_CHECKING:
    from studio.jobs.runtime import JobRuntime

#: kind name -> the module whose import registers it. The one place that says which kinds exist.
KIND_MODULES: dict[str, str] = {
    "audit": "studio.safety.audit",
    "augment": "studio.curation.augment",
    "eval": "studio.evaluation.job",
    "finetune": "studio.training.job",
    "dpo": "studio.training.preference",
    "download": "studio.models.download",
    "export": "studio.export.job",
    "push": "studio.export.push",
    "reward": "studio.training.preference",
    "selftest": "studio.jobs.builtin_kinds",
}


@dataclass(frozen=True)
class JobKind:
    """One kind of job.

    ``run(config, runtime)`` does the work in the job's own process. It reports through ``runtime`` (a
    ``JobReporter``), checks ``runtime.should_stop()`` between steps (saving a checkpoint and returning when it
    says so), resumes from ``runtime.resume_from`` when that is set, and returns a JSON-able result dict,
    stored as ``Job.result``; a ``"artifact_path"`` entry there also fills ``Job.artifact_path``.
    """

    name: str
    config_model: type[BaseModel]
    run: Callable[[Any, JobRuntime], dict[str, Any]]
    description: str = ""
    #: optional check at submit time against this studio (e.g. the dataset exists; pins its version):
    #: ``prepare(config, settings, db) -> config``; raises a ``UserError`` naming the field
    prepare: Callable[[Any, Any, Any], Any] | None = None


# A registry filled by imports, read-only afterwards: the one module-level table in studio.jobs, as
# ``KIND_MODULES`` is what decides its content (no state that differs between requests lives here).
_registry: dict[str, JobKind] = {}
_import_errors: dict[str, str] = {}
_lock = threading.Lock()


def register_kind(kind: JobKind) -> JobKind:
    """Make ``kind`` available under ``kind.name`` (registering the same name again replaces it)."""
    if not kind.name or len(kind.name) > 32:
        raise ValueError(f"a job kind name must have 1-32 characters; got {kind.name!r}")
    with _lock:
        _registry[kind.name] = kind
    return kind


def known_kinds() -> list[str]:
    """Every kind name that is registered or listed in ``KIND_MODULES``, sorted."""
    return sorted(set(_registry) | set(KIND_MODULES))


def get_kind(name: str) -> JobKind:
    """The kind called ``name``, importing its module on first use.

    Raises ``ValidationError`` for a name nobody registers (the message lists the known kinds) and
    ``BackendUnavailableError`` when the kind's module cannot be imported (the message names it and why).
    """
    with _lock:
        found = _registry.get(name)
    if found is not None:
        return found
    module = KIND_MODULES.get(name)
    if module is None:
        raise ValidationError(f"unknown job kind {name!r}; known kinds: {', '.join(known_kinds())}", param="kind")
    _import_kind_module(module)
    with _lock:
        found = _registry.get(name)
    if found is not None:
        return found
    reason = _import_errors.get(module)
    if reason is not None:
        raise BackendUnavailableError(
            f"job kind {name!r} is not available in this installation: importing {module} failed ({reason})",
            param="kind",
        )
    raise BackendUnavailableError(
        f"job kind {name!r} is not available: {module} was imported but did not register it", param="kind"
    )


def _import_kind_module(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # any import failure (missing optional package, syntax error) disables its kinds
        with _lock:
            _import_errors[module] = f"{type(exc).__name__}: {exc}"
    else:
        with _lock:
            _import_errors.pop(module, None)
