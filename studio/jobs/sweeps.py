"""Sweeps: a grid or random search over fields of a job config, run as N queued jobs grouped under one ``sweep``.

Lifecycle. :func:`submit_sweep` expands a :class:`SweepSpec` into trial configs (each validated by the job kind's
own config model and passed through the queue's checks: ownership, quotas, the kind's ``prepare`` hook) and stores
the ``sweep`` row and all its ``job`` rows (named ``<sweep>-<i>``, carrying ``sweep_id``) in one transaction: a
sweep is queued whole or not at all. Workers run the jobs like any other. Each time a job of a sweep ends, the
queue's job-end hook calls :func:`enforce`, in whichever process ended it (the job's own, or its worker's):

- ``continue_on_error: false`` and a job ``failed`` -> the sweep's still-queued jobs are cancelled;
- ``max_hours`` and the running time of the sweep's jobs (start to end, or to now) is over it -> likewise.

The cancellation is one guarded ``UPDATE ... WHERE sweep_id = :id AND state = 'queued'``, so a job a worker claims
in that instant runs on and is never half-cancelled; it bypasses the per-job end hooks (no notification per
cancelled trial). The reason goes into each cancelled job's message and the sweep's. :func:`cancel_sweep` does the
same for the user and asks the running jobs to stop at their next step.

A sweep's state is read from its jobs: ``queued`` (none started), ``running`` (some queued or running), then
``done``, ``stopped`` (the budget or a failure cancelled the rest) or ``cancelled`` (by the user).
:func:`sweep_status` ranks the runs that succeeded by the sweep's metric (or another one), best first, and carries
each run's curve for the overlay.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import update
from sqlmodel import col, select

from studio.db.engine import Database
from studio.db.tables import Job, JobMetric, Sweep, utcnow
from studio.errors import ConflictError, NotFoundError, RateLimitError, ValidationError
from studio.inference.params import validation_error_from_pydantic
from studio.jobs import queue
from studio.jobs.kinds import get_kind
from studio.settings import CONFIG_DIR, Settings
from studio.users.acting import current_principal, current_user_id
from studio.users.ownership import can_see, check_owner, quota, visible

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)

DEFAULT_KIND = "finetune"
#: the example sweep (a LoRA grid over learning rate and rank); the Sweeps panel's editor starts from it
EXAMPLE_SWEEP = CONFIG_DIR / "sweeps" / "lora-lr-rank.yaml"
DEFAULT_TRIALS = 10
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_Row = TypeVar("_Row", Job, Sweep)
_SET_BY_SWEEP = frozenset({"name", "kind"})  # every trial's name is <sweep>-<i>; the kind is the base's


class ParameterSpec(BaseModel):
    """The values one field takes: a grid's list (``[1e-4, 3e-4]`` is short for ``{values: [...]}``), a random
    search's ``{choices: [...]}``, or its range ``{low, high, log, integer}``."""

    model_config = ConfigDict(extra="forbid")

    values: list[Any] | None = Field(
        None, min_length=1, max_length=1000, description="The values to try, in order (1-1000; grid or random)."
    )
    choices: list[Any] | None = Field(
        None, min_length=1, max_length=1000, description="Random: values drawn with equal chance (1-1000)."
    )
    low: float | None = Field(None, description="Random: the smallest value of the range (with high).")
    high: float | None = Field(None, description="Random: the largest value of the range (with low).")
    log: bool = Field(False, description="Random: draw evenly on a log scale (learning rates); low must be above 0.")
    integer: bool = Field(False, description="Random: whole numbers only (ranks, epochs, steps).")

    @model_validator(mode="before")
    @classmethod
    def _list_is_values(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"values": data}
        if not isinstance(data, Mapping):
            raise ValueError("give a list of values, {choices: [...]} or a range {low: ..., high: ...}")
        return data

    @property
    def options(self) -> list[Any] | None:
        """The listed values (``values`` or ``choices``), or None for a range."""
        return self.values if self.values is not None else self.choices

    @property
    def is_range(self) -> bool:
        """Whether this is a ``{low, high}`` range."""
        return self.low is not None or self.high is not None


class SweepSpec(BaseModel):
    """A sweep: a base job config, the fields to vary and how, a budget, and the metric that ranks the runs."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=80,
        pattern=_NAME_PATTERN,
        title="Sweep name",
        description="The sweep's name (1-80 letters, digits, '_', '.', '-'); its jobs are named <name>-1, <name>-2...",
    )
    base: dict[str, Any] = Field(
        description="The job config every trial starts from (the YAML of `studio jobs submit`), with its kind: "
        "(default finetune); its name is replaced by each trial's."
    )
    method: Literal["grid", "random"] = Field(
        "grid", description="grid: every combination of the listed values; random: draws from ranges or choices."
    )
    parameters: dict[str, ParameterSpec] = Field(
        min_length=1,
        max_length=16,
        description="The fields to vary (1-16), by name (dotted for a nested field: section.field): a list of values, "
        "{choices: [...]}, or (random) a range {low, high, log, integer}.",
    )
    trials: int | None = Field(
        None,
        ge=1,
        le=1000,
        description=f"Random: how many trials to draw (1-1000, at most max_jobs); default {DEFAULT_TRIALS} "
        "(or max_jobs if lower).",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Random: the seed of the draws (0-4294967295).")
    max_jobs: int = Field(20, ge=1, le=1000, description="The most jobs the sweep may queue (1-1000).")
    truncate: bool = Field(
        False, description="Grid larger than max_jobs: run its first max_jobs combinations instead of refusing."
    )
    max_hours: float | None = Field(
        None,
        gt=0.0,
        le=10_000.0,
        description="Budget: once the sweep's jobs have run this many hours in total (more than 0, up to 10,000), "
        "its queued jobs are cancelled; empty = no limit.",
    )
    continue_on_error: bool = Field(
        True, description="Keep running the other trials when one fails; false: the first failure cancels the rest."
    )
    metric: str = Field(
        "eval_loss",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_./-]+$",
        description="The metric that ranks the runs: a number of the job's result (eval_loss, train_loss, "
        "best_eval_loss...) or the last value of a curve it records.",
    )
    mode: Literal["min", "max"] = Field("min", description="min: the lowest metric ranks first; max: the highest.")
    device: str = Field("cpu", min_length=1, max_length=32, description="The device slot the jobs run on.")
    private: bool = Field(False, description="Only its owner (and admins) see the sweep and its jobs.")

    @model_validator(mode="after")
    def _check_method(self) -> SweepSpec:
        for name, param in self.parameters.items():
            where = f"parameters.{name}"
            if not name or any(not part for part in name.split(".")):
                raise _error(where, f"{name!r} is not a field name (dotted names need a name on each side of '.')")
            if name in _SET_BY_SWEEP:
                raise _error(where, f"'{name}' is set by the sweep itself and cannot be varied")
            kinds = sum(1 for x in (param.values, param.choices) if x is not None) + (1 if param.is_range else 0)
            if kinds != 1:
                raise _error(where, "give exactly one of: a list of values, choices, or a range {low, high}")
            if param.is_range:
                _check_range(where, param, self.method)
            elif param.log or param.integer:
                raise _error(where, "log and integer apply to a range {low, high}, not to listed values")
        if self.method == "grid" and self.trials is not None:
            raise _error("trials", "trials applies to method random; a grid runs every combination of its values")
        if self.method == "random" and self.trials is not None and self.trials > self.max_jobs:
            raise _error(
                "trials",
                f"trials ({self.trials}) is more than max_jobs ({self.max_jobs}): raise max_jobs or draw fewer",
            )
        return self


def _error(param: str, message: str) -> PydanticCustomError:
    """A validator error whose ``param`` is the full field path (``validation_error_from_pydantic`` reads it)."""
    return PydanticCustomError("value_error", "{param}: " + message, {"param": param})


def _check_range(where: str, param: ParameterSpec, method: str) -> None:
    if method == "grid":
        raise _error(where, "a grid needs a list of values; a range {low, high} is for method random")
    if param.low is None or param.high is None:
        raise _error(f"{where}.{'high' if param.low is not None else 'low'}", "a range needs both low and high")
    if not (math.isfinite(param.low) and math.isfinite(param.high)):
        raise _error(f"{where}.low", "low and high must be finite numbers")
    if param.low > param.high:
        raise _error(f"{where}.low", f"low ({param.low:g}) must not be more than high ({param.high:g})")
    if param.log and param.low <= 0:
        raise _error(f"{where}.low", f"a log range needs low above 0 (got {param.low:g})")
    if param.integer and math.ceil(param.low) > math.floor(param.high):
        raise _error(where, f"no whole number lies between low ({param.low:g}) and high ({param.high:g})")


# --- reading a spec ---------------------------------------------------------------------------------------------


def parse_spec(data: Any) -> SweepSpec:
    """Validate a mapping into a :class:`SweepSpec`; a ``ValidationError`` names the field (``parameters.x.low``)."""
    if not isinstance(data, Mapping):
        raise ValidationError(
            "a sweep must be a mapping of fields (name, base, method, parameters, ...)", param="sweep"
        )
    try:
        return SweepSpec.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        raise _spec_error(exc) from None


def _spec_error(exc: pydantic.ValidationError) -> ValidationError:
    """The first error of a spec, naming its full field path (``parameters.learning_rate.low``)."""
    err = exc.errors()[0]
    ctx = err.get("ctx") or {}
    if "param" in ctx:  # our own validators: the message already starts with the path
        message = str(err["msg"])
        return ValidationError(message, param=str(ctx["param"]), user_message=message)
    loc = [str(p) for p in err.get("loc", ())]
    if len(loc) <= 1:  # a top-level field: the schema's own wording, with its range
        return validation_error_from_pydantic(exc, model=SweepSpec)
    where = ".".join(loc)
    if err.get("type") == "extra_forbidden":
        known = ", ".join(ParameterSpec.model_fields)
        message = f"{where}: unknown key '{loc[-1]}'; a parameter has: {known}"
    else:
        message = f"{where}: {str(err['msg']).removeprefix('Value error, ')} (got {err.get('input')!r})"
    return ValidationError(message, param=where, user_message=message)


def spec_from_yaml(text: str, source: str = "sweep") -> SweepSpec:
    """Parse a sweep from YAML text (a sweep file, or the Sweeps panel's editor); ``source`` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ValidationError(f"{source} is not valid YAML{where}: {exc}", param="sweep") from None
    return parse_spec(data)


def load_spec(path: Path) -> SweepSpec:
    """Read and validate a sweep file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read the sweep file {path}: {exc}", param="sweep") from None
    return spec_from_yaml(text, source=str(path))


# --- expanding a spec into trials -------------------------------------------------------------------------------


def base_kind(spec: SweepSpec) -> tuple[str, dict[str, Any]]:
    """``(kind, config)`` of the spec's base: its ``kind:`` (default finetune) and the rest of it."""
    config = dict(spec.base)
    kind = config.pop("kind", DEFAULT_KIND)
    if not isinstance(kind, str):
        raise ValidationError(f"base.kind must be a job kind name; got {kind!r}", param="base.kind")
    try:
        get_kind(kind)
    except ValidationError as exc:
        raise ValidationError(f"base.kind: {exc.message}", param="base.kind") from None
    return kind, config


def grid_size(spec: SweepSpec) -> int:
    """How many combinations the spec's grid has (the product of its value counts)."""
    return math.prod(len(p.options or ()) for p in spec.parameters.values())


def assignments(spec: SweepSpec) -> list[dict[str, Any]]:
    """The values of the varied fields for each trial, in trial order: the grid's combinations (the first
    parameter varies slowest), or ``trials`` seeded draws. A grid larger than ``max_jobs`` is refused unless
    ``truncate`` is set."""
    names = list(spec.parameters)
    if spec.method == "grid":
        size = grid_size(spec)
        if size > spec.max_jobs and not spec.truncate:
            shape = " x ".join(f"{len(p.options or ())} {n}" for n, p in spec.parameters.items())
            raise ValidationError(
                f"max_jobs: the grid has {size} combinations ({shape}) but max_jobs is {spec.max_jobs}: raise max_jobs "
                f"to {size}, list fewer values, or set truncate: true to run the first {spec.max_jobs}",
                param="max_jobs",
            )
        combos = itertools.islice(itertools.product(*(spec.parameters[n].options or () for n in names)), spec.max_jobs)
        return [dict(zip(names, combo, strict=True)) for combo in combos]
    rng = random.Random(spec.seed)
    trials = spec.trials if spec.trials is not None else min(DEFAULT_TRIALS, spec.max_jobs)
    return [{n: _draw(rng, spec.parameters[n]) for n in names} for _ in range(trials)]


def _draw(rng: random.Random, param: ParameterSpec) -> Any:
    if param.options is not None:
        return rng.choice(param.options)
    low, high = float(param.low or 0.0), float(param.high or 0.0)
    if param.integer and not param.log:
        return rng.randint(math.ceil(low), math.floor(high))
    value = math.exp(rng.uniform(math.log(low), math.log(high))) if param.log else rng.uniform(low, high)
    if param.integer:
        return min(max(round(value), math.ceil(low)), math.floor(high))
    return float(f"{value:.4g}")  # readable values (3.162e-04, not 0.00031622776601683794)


def get_path(config: Mapping[str, Any], name: str) -> Any:
    """The value at a dotted field name (``a.b``) of a config; None where it is missing."""
    node: Any = config
    for part in name.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def set_path(config: dict[str, Any], name: str, value: Any) -> None:
    """Set a dotted field name (``a.b``) in ``config``, copying the nested mappings it passes through."""
    parts = name.split(".")
    node = config
    for depth, part in enumerate(parts[:-1]):
        inner = node.get(part)
        if inner is None:
            inner = {}
        elif not isinstance(inner, Mapping):
            above = ".".join(parts[: depth + 1])
            raise ValidationError(
                f"parameters.{name}: base.{above} is not a section of fields, so {name} cannot be set",
                param=f"parameters.{name}",
            )
        node[part] = dict(inner)
        node = node[part]
    node[parts[-1]] = value


def expand(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every trial's job config (the base with its values set and the name ``<sweep>-<i>``), each validated by the
    kind's config model. A bad value is refused naming the parameter (``parameters.learning_rate``), a bad base
    field naming it under ``base.``; a random range is checked at both ends (``parameters.x.low`` / ``.high``)."""
    kind, base = base_kind(spec)
    model_fields = get_kind(kind).config_model.model_fields
    for name, param in spec.parameters.items():
        top = name.split(".")[0]
        if top not in model_fields:
            known = ", ".join(n for n in model_fields if n not in _SET_BY_SWEEP)
            raise ValidationError(
                f"parameters.{name}: '{top}' is not a field of a {kind} job config; fields: {known}",
                param=f"parameters.{name}",
            )
        if param.is_range:  # a draw may land anywhere in the range: both ends must be valid values
            for end in ("low", "high"):
                value = float(getattr(param, end))
                if param.integer:
                    value = math.ceil(value) if end == "low" else math.floor(value)
                _validate_trial(spec, kind, base, {name: value}, 0, f"parameters.{name}.{end}")
    trials = [_validate_trial(spec, kind, base, values, i, None) for i, values in enumerate(assignments(spec), start=1)]
    return trials


def _validate_trial(
    spec: SweepSpec, kind: str, base: dict[str, Any], values: dict[str, Any], index: int, blame: str | None
) -> dict[str, Any]:
    config = dict(base)
    for name, value in values.items():
        set_path(config, name, value)
    fields = get_kind(kind).config_model.model_fields
    trial = f"{spec.name}-{max(index, 1)}"
    if "name" in fields:
        config["name"] = trial
    if index and "output_name" in fields and config.get("output_name"):
        config["output_name"] = f"{config['output_name']}-{index}"  # each trial saves its own artifact
    try:
        return queue.validate_config(kind, config)
    except ValidationError as exc:
        param = blame or _blame(exc.param, list(values))
        shown = ", ".join(f"{n}={v!r}" for n, v in values.items())
        where = f"trial {index} ({shown})" if index else f"{shown} is refused"
        raise ValidationError(f"{param}: {where}: {exc.message}", param=param) from None


def _blame(bad: str | None, varied: Sequence[str]) -> str:
    """The sweep field behind a trial's bad config field ``bad``: the parameter that set it, else the base's."""
    bad = bad or ""
    if bad.startswith(("parameters.", "base")):
        return bad
    hit = next((n for n in varied if bad == n or bad.startswith(n + ".") or n.startswith(bad + ".")), None)
    if hit is not None:
        return f"parameters.{hit}"
    return f"base.{bad}" if bad and bad != "config" else "base"


# --- submitting -------------------------------------------------------------------------------------------------


def plan_sweep(db: Database, settings: Settings | None, spec: SweepSpec) -> tuple[Sweep, list[Job]]:
    """The sweep row and its jobs (one per trial, ``<name>-<i>``, ``sweep_id`` set), built and checked but not
    stored: what ``--dry-run`` shows and :func:`submit_sweep` stores.

    Each job goes through the queue's own checks (:func:`studio.jobs.queue.build_job`: its config, the signed-in
    user's quotas, and with ``settings`` the kind's ``prepare`` hook, e.g. the dataset version pinned); the user's
    ``queued_jobs`` quota must hold the whole sweep.
    """
    kind, _ = base_kind(spec)
    configs = expand(spec)
    _check_room_for(db, len(configs))
    sweep = Sweep(
        name=spec.name,
        kind=kind,
        method=spec.method,
        metric=spec.metric,
        mode=spec.mode,
        spec=spec.model_dump(mode="json"),
        owner_id=current_user_id(),
        private=spec.private,
    )
    start = utcnow()
    jobs: list[Job] = []
    for i, config in enumerate(configs, start=1):
        try:
            job = queue.build_job(
                db, kind, config, name=f"{spec.name}-{i}", device=spec.device, settings=settings, private=spec.private
            )
        except (ValidationError, NotFoundError) as exc:  # the kind's prepare hook: a dataset or model missing, ...
            error = ValidationError if isinstance(exc, ValidationError) else NotFoundError
            param = _blame(exc.param, list(spec.parameters))
            raise error(
                f"trial {i} ({spec.name}-{i}): {exc.message}",
                param=param,
                user_message=f"trial {i}: {exc.user_message}",
            ) from None
        job.sweep_id = sweep.id
        job.created_at = start + timedelta(microseconds=i)  # trial order is claim order (same priority)
        jobs.append(job)
    return sweep, jobs


def submit_sweep(db: Database, settings: Settings | None, spec: SweepSpec) -> Sweep:
    """Queue the sweep: its row and one job per trial (see :func:`plan_sweep`), all in one transaction; nothing is
    stored when any trial is refused."""
    sweep, jobs = plan_sweep(db, settings, spec)
    with db.session() as session:
        session.add(sweep)
        session.add_all(jobs)
    log.info("sweep %s (%s): queued %d %s job(s)", sweep.name, sweep.id, len(jobs), sweep.kind)
    return sweep


def _check_room_for(db: Database, count: int) -> None:
    """The signed-in user's ``queued_jobs`` quota must hold ``count`` more jobs (429 naming it when not)."""
    who = current_principal()
    if who is None or who.user_id is None:
        return
    limit = quota(db, who, "queued_jobs")
    if limit is None:
        return
    with db.session() as session:
        mine = session.exec(
            select(Job.id).where(col(Job.owner_id) == who.user_id, col(Job.state).in_((queue.QUEUED, queue.RUNNING)))
        ).all()
    if len(mine) + count > limit:
        raise RateLimitError(
            f"{who.name} has {len(mine)} job(s) queued or running and the sweep adds {count}: the queued_jobs quota "
            f"of a {who.role} is {int(limit)}. Lower max_jobs, wait for jobs to finish, or ask an admin to raise it",
            retry_after=60.0,
            param="queued_jobs",
        )


# --- reading ----------------------------------------------------------------------------------------------------


@dataclass
class SweepRun:
    """One trial of a sweep: its job, the values it tried, its metric and its rank (1 = best; None unranked)."""

    trial: int
    job: Job
    params: dict[str, Any]
    value: float | None
    rank: int | None
    hours: float


@dataclass
class SweepView:
    """A sweep with its runs ranked by ``metric`` (succeeded runs with a value, best first; then the others in
    trial order) and each run's curve of ``curve_metric`` (``metric`` when the jobs record it per step, else
    ``train_loss``)."""

    sweep: Sweep
    state: str
    metric: str
    mode: str
    runs: list[SweepRun]
    hours: float
    curve_metric: str = "train_loss"
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def parameters(self) -> list[str]:
        """The varied fields, in the spec's order."""
        return list((self.sweep.spec or {}).get("parameters") or {})

    @property
    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        return dict(Counter(r.job.state for r in self.runs))

    @property
    def best(self) -> SweepRun | None:
        """The best-ranked run, if any run is ranked."""
        return self.runs[0] if self.runs and self.runs[0].rank == 1 else None

    def describe(self) -> str:
        """One line: state, job counts, hours against the budget, the best run."""
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        budget = (self.sweep.spec or {}).get("max_hours")
        hours = f"{self.hours:.3g} h" + (f" of max {budget:g} h" if budget else "")
        best = self.best
        top = f"; best {self.metric} {best.value:.4g} ({best.job.name})" if best and best.value is not None else ""
        stop = f"; {self.sweep.message}" if self.sweep.message else ""
        return f"{self.state}: {len(self.runs)} jobs ({counts}); ran {hours}{top}{stop}"

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """The ranking as a table: rank, trial, job name, state, the metric, the varied fields, hours, message and
        job id."""
        headers = ["rank", "trial", "job", "state", self.metric, *self.parameters, "hours", "message", "job id"]
        rows = [
            [
                r.rank if r.rank is not None else "",
                r.trial,
                r.job.name,
                r.job.state,
                _shown(r.value),
                *(_shown(r.params.get(p)) for p in self.parameters),
                round(r.hours, 4),
                r.job.message[:120],
                r.job.id,
            ]
            for r in self.runs
        ]
        return headers, rows

    def figure(self) -> go.Figure:
        """Every run's curve of ``curve_metric`` overlaid (the best run drawn thicker)."""
        import plotly.graph_objects as go

        fig = go.Figure()
        for run in sorted(self.runs, key=lambda r: r.trial):
            points = self.curves.get(run.job.id) or []
            if not points:
                continue
            values = ", ".join(f"{p}={_shown(run.params.get(p))}" for p in self.parameters)
            rank = f"#{run.rank} " if run.rank is not None else ""
            fig.add_trace(
                go.Scatter(
                    x=[s for s, _ in points],
                    y=[v for _, v in points],
                    mode="lines+markers",
                    name=f"{rank}{run.job.name} ({values}) {run.job.state}",
                    line={"width": 4 if run.rank == 1 else 2, "dash": "solid" if run.rank is not None else "dot"},
                )
            )
        fig.update_layout(
            title=f"{self.sweep.name}: {self.curve_metric} per step",
            xaxis_title="step",
            yaxis_title=self.curve_metric,
            legend={"orientation": "h"},
            margin={"l": 40, "r": 10, "t": 40, "b": 40},
        )
        return fig

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what ``studio sweep show --json`` prints and the UI returns)."""
        return {
            "id": self.sweep.id,
            "name": self.sweep.name,
            "kind": self.sweep.kind,
            "method": self.sweep.method,
            "state": self.state,
            "message": self.sweep.message,
            "metric": self.metric,
            "mode": self.mode,
            "parameters": self.parameters,
            "counts": self.counts,
            "hours": self.hours,
            "max_hours": (self.sweep.spec or {}).get("max_hours"),
            "continue_on_error": (self.sweep.spec or {}).get("continue_on_error", True),
            "created_at": queue.as_utc(self.sweep.created_at).isoformat(timespec="seconds"),
            "best": self.best.job.id if self.best else None,
            "runs": [
                {
                    "rank": r.rank,
                    "trial": r.trial,
                    "job_id": r.job.id,
                    "name": r.job.name,
                    "state": r.job.state,
                    "step": r.job.step,
                    "value": r.value,
                    "params": r.params,
                    "hours": r.hours,
                    "message": r.job.message,
                }
                for r in self.runs
            ],
            "curve_metric": self.curve_metric,
            "curves": {k: {"steps": [s for s, _ in v], "values": [y for _, y in v]} for k, v in self.curves.items()},
            "spec": self.sweep.spec,
        }


def _shown(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if value is None or isinstance(value, int | str | bool):
        return value
    return str(value)


def get_sweep(db: Database, ref: str) -> Sweep:
    """The sweep with id ``ref``, a unique id prefix of 4+ characters, or the newest sweep named ``ref``."""
    ref = (ref or "").strip()
    if not ref:
        raise ValidationError("give a sweep id or name (studio sweep list shows them)", param="sweep_id")
    with db.session() as session:
        sweep = session.get(Sweep, ref)
        if sweep is None and len(ref) >= 4 and ref.isalnum():
            query = visible(select(Sweep), Sweep.owner_id, Sweep.private).where(col(Sweep.id).startswith(ref))
            found = session.exec(query.limit(2)).all()
            if len(found) > 1:
                raise ValidationError(
                    f"sweep id prefix {ref!r} matches several sweeps; give more of it", param="sweep_id"
                )
            sweep = found[0] if found else None
        if sweep is None:
            query = visible(select(Sweep), Sweep.owner_id, Sweep.private).where(col(Sweep.name) == ref)
            sweep = session.exec(query.order_by(col(Sweep.created_at).desc()).limit(1)).first()
    if sweep is None or not can_see(sweep.owner_id, sweep.private):
        raise NotFoundError(f"sweep {ref!r} not found (studio sweep list shows the sweeps)", param="sweep_id")
    return _aware(sweep)


def _jobs_of(db: Database, sweep_ids: Sequence[str]) -> dict[str, list[Job]]:
    """The jobs of each sweep in trial order."""
    if not sweep_ids:
        return {}
    query = select(Job).where(col(Job.sweep_id).in_(list(sweep_ids))).order_by(col(Job.created_at), col(Job.id))
    with db.session() as session:
        jobs = [_aware(j) for j in session.exec(query).all()]
    out: dict[str, list[Job]] = {sid: [] for sid in sweep_ids}
    for job in jobs:
        out[str(job.sweep_id)].append(job)
    return out


def _aware(row: _Row) -> _Row:
    """``row`` with its times as aware UTC datetimes (SQLite returns them naive)."""
    for name in ("created_at", "started_at", "finished_at", "stopped_at"):
        value = getattr(row, name, None)
        if value is not None:
            setattr(row, name, queue.as_utc(value))
    return row


def job_hours(job: Job, now: datetime | None = None) -> float:
    """Hours the job has run: from its start to its end, or to ``now`` while it runs (0 before it starts)."""
    if job.started_at is None:
        return 0.0
    end = job.finished_at if job.finished_at is not None else (now or datetime.now(UTC))
    return max(0.0, (queue.as_utc(end) - queue.as_utc(job.started_at)).total_seconds() / 3600)


def sweep_state(sweep: Sweep, jobs: Sequence[Job]) -> str:
    """``queued`` | ``running`` | ``done`` | ``stopped`` | ``cancelled`` (see the module docstring)."""
    states = Counter(j.state for j in jobs)
    if states[queue.QUEUED] + states[queue.RUNNING]:
        started = len(jobs) - states[queue.QUEUED]
        return "running" if started else "queued"
    if sweep.cancelled:
        return "cancelled"
    return "stopped" if sweep.stopped_at is not None else "done"


def _series(db: Database, job_ids: Sequence[str]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Every metric curve of the given jobs: job id -> metric name -> ``[(step, value)]`` in step order."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    if not job_ids:
        return out
    query = (
        select(JobMetric)
        .where(col(JobMetric.job_id).in_(list(job_ids)))
        .order_by(col(JobMetric.job_id), col(JobMetric.step), col(JobMetric.id))
    )
    with db.session() as session:
        for point in session.exec(query).all():
            for name, value in (point.values or {}).items():
                if _number(value) is not None:
                    out.setdefault(point.job_id, {}).setdefault(name, []).append((point.step, float(value)))
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _view(
    db: Database, sweep: Sweep, jobs: list[Job], metric: str | None, mode: str | None, with_curves: bool
) -> SweepView:
    metric = (metric or "").strip() or sweep.metric
    mode = (mode or "").strip() or sweep.mode
    if mode not in ("min", "max"):
        raise ValidationError(f"mode must be min or max; got {mode!r}", param="mode")
    from_result = {j.id: _number((j.result or {}).get(metric)) for j in jobs}
    need = [j.id for j in jobs] if with_curves else [j for j, v in from_result.items() if v is None]
    series = _series(db, need)
    now = datetime.now(UTC)
    names = list((sweep.spec or {}).get("parameters") or {})
    runs: list[SweepRun] = []
    for trial, job in enumerate(jobs, start=1):
        value = from_result[job.id]
        if value is None and series.get(job.id, {}).get(metric):
            value = series[job.id][metric][-1][1]  # the last value of the curve it records
        params = {n: get_path(job.config or {}, n) for n in names}
        runs.append(SweepRun(trial, job, params, value, None, job_hours(job, now)))
    ranked = [r for r in runs if r.job.state == queue.SUCCEEDED and r.value is not None]
    ranked.sort(key=lambda r: (r.value if mode == "min" else -(r.value or 0.0), r.trial))
    for rank, run in enumerate(ranked, start=1):
        run.rank = rank
    ordered = ranked + [r for r in runs if r.rank is None]
    curve_metric = metric if any(metric in s for s in series.values()) else "train_loss"
    curves = {j: s[curve_metric] for j, s in series.items() if curve_metric in s} if with_curves else {}
    state = sweep_state(sweep, jobs)
    return SweepView(sweep, state, metric, mode, ordered, sum(r.hours for r in runs), curve_metric, curves)


def sweep_status(db: Database, sweep_id: str, metric: str | None = None, mode: str | None = None) -> SweepView:
    """The sweep ``sweep_id`` (id, id prefix or name) with its runs ranked by ``metric`` in ``mode`` (default: the
    sweep's own) and their curves."""
    sweep = get_sweep(db, sweep_id)
    return _view(db, sweep, _jobs_of(db, [sweep.id])[sweep.id], metric, mode, with_curves=True)


def list_sweeps(db: Database, limit: int = 50) -> list[SweepView]:
    """Sweeps newest first (without curves), those the current user may see."""
    query = visible(select(Sweep), Sweep.owner_id, Sweep.private)
    query = query.order_by(col(Sweep.created_at).desc(), col(Sweep.id).desc()).limit(max(1, limit))
    with db.session() as session:
        sweeps = [_aware(s) for s in session.exec(query).all()]
    jobs = _jobs_of(db, [s.id for s in sweeps])
    return [_view(db, s, jobs[s.id], None, None, with_curves=False) for s in sweeps]


# --- stopping ---------------------------------------------------------------------------------------------------


def _cancel_queued(db: Database, sweep_id: str, message: str) -> list[str]:
    """Cancel the sweep's queued jobs in one guarded UPDATE (a job being claimed meanwhile runs on); their ids."""
    moment = utcnow()
    statement = (
        update(queue.JOB)
        .where(queue.JOB.c.sweep_id == sweep_id, queue.JOB.c.state == queue.QUEUED)
        .values(state=queue.CANCELLED, finished_at=moment, updated_at=moment, message=message)
        .returning(queue.JOB.c.id)
    )
    with db.engine.begin() as conn:
        return [str(row[0]) for row in conn.execute(statement).all()]


def _mark_stopped(db: Database, sweep_id: str, message: str, cancelled: bool = False) -> None:
    """Record why the sweep stopped (a user's cancel overrides an earlier stop; a stop never overrides either)."""
    table = Sweep.__table__  # type: ignore[attr-defined]
    statement = update(table).where(table.c.id == sweep_id)
    if not cancelled:
        statement = statement.where(table.c.stopped_at.is_(None))
    with db.engine.begin() as conn:
        conn.execute(statement.values(stopped_at=utcnow(), message=message, cancelled=cancelled))


def stop_reason(sweep: Sweep, jobs: Sequence[Job], now: datetime | None = None) -> str:
    """Why the sweep's queued jobs must not run ("" when they may): a failure with ``continue_on_error`` false, or
    ``max_hours`` exceeded by the running time of its jobs."""
    spec = sweep.spec or {}
    if spec.get("continue_on_error", True) is False:
        failed = next((j for j in jobs if j.state == queue.FAILED), None)
        if failed is not None:
            return f"job {failed.name or failed.id} failed and continue_on_error is false"
    budget = spec.get("max_hours")
    if budget is not None:
        hours = sum(job_hours(j, now) for j in jobs)
        if hours > float(budget):
            return f"its jobs ran {hours:.3g} h, over the max_hours budget of {float(budget):g} h"
    return ""


def enforce(db: Database, sweep_id: str) -> list[str]:
    """Apply the sweep's ``continue_on_error`` and ``max_hours``: when either says stop, cancel its queued jobs
    (each with the reason in its message) and record the reason on the sweep. Returns the cancelled job ids. The
    queue's job-end hook calls this whenever a job of a sweep ends."""
    with db.session() as session:
        sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        return []
    jobs = _jobs_of(db, [sweep_id])[sweep_id]
    reason = stop_reason(sweep, jobs)
    if not reason:
        return []
    cancelled = _cancel_queued(db, sweep_id, f"cancelled: sweep '{sweep.name}' stopped because {reason}")
    if cancelled:  # nothing left to cut short (its last job just ended): the sweep is simply done
        _mark_stopped(db, sweep_id, f"stopped because {reason}; {len(cancelled)} queued job(s) cancelled")
        log.warning("sweep '%s' stopped because %s: cancelled %d queued job(s)", sweep.name, reason, len(cancelled))
    return cancelled


def cancel_sweep(db: Database, sweep_id: str) -> SweepView:
    """Cancel a sweep: its queued jobs at once, its running ones at their next step (as ``studio jobs cancel``)."""
    sweep = get_sweep(db, sweep_id)
    check_owner(f"sweep {sweep.name}", sweep.owner_id, db)
    jobs = _jobs_of(db, [sweep.id])[sweep.id]
    if not any(j.state in (queue.QUEUED, queue.RUNNING) for j in jobs):
        state = sweep_state(sweep, jobs)
        raise ConflictError(f"sweep {sweep.name} has ended ({state}); there is nothing to cancel")
    cancelled = _cancel_queued(db, sweep.id, f"cancelled with its sweep '{sweep.name}'")
    asked = 0
    for job in jobs:
        if job.state == queue.RUNNING:
            try:
                queue.request_cancel(db, job.id)
                asked += 1
            except ConflictError:  # it ended meanwhile
                pass
    message = f"cancelled by the user: {len(cancelled)} queued job(s) cancelled, {asked} running job(s) asked to stop"
    _mark_stopped(db, sweep.id, message, cancelled=True)
    return sweep_status(db, sweep.id)


def on_job_end(db: Database, job: Job) -> None:
    """The job-end hook (registered in ``queue.JOB_END_HOOKS``): :func:`enforce` the sweep of a sweep's job."""
    if job.sweep_id is not None:
        enforce(db, job.sweep_id)


if on_job_end not in queue.JOB_END_HOOKS:
    queue.JOB_END_HOOKS.append(on_job_end)
