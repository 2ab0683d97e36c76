"""What the Fine-Tune tab (and any other client) does, as plain typed functions.

Form values become a :class:`FinetuneConfig` with errors that name the field; a YAML config is submitted after
``prepare_finetune`` pinned the dataset version; the dashboard's counts, the job list, one job's view model
(progress, ETA, step/epoch, metric series, log tail, memory) and the plotly figures of the monitor and the
dataset cards are built here from real database rows. Nothing here imports gradio; torch and transformers are
imported only by the functions that need them (estimates, tokenizers, loading a trained model).
"""

from __future__ import annotations

import logging
import math
import re
import socket
import statistics
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin

import plotly.graph_objects as go
import psutil
import yaml
from sqlmodel import col, func, select

from studio.datasets.formats import FORMAT_FIELDS, FORMAT_LABELS, FORMATS, ColumnMapping
from studio.datasets.stats import TokenStats
from studio.datasets.store import DatasetStore
from studio.datasets.validate import ChatTokenizer
from studio.db.engine import Database
from studio.db.tables import Dataset, Job, JobMetric
from studio.errors import ConflictError, StudioError, ValidationError
from studio.jobs import queue
from studio.monitor import memory_snapshot
from studio.settings import Settings
from studio.training.config import (
    FinetuneConfig,
    Method,
    config_from_yaml,
    config_to_yaml,
    field_specs,
    method_specs,
    parse_config,
    qlora_available,
)
from studio.users.ownership import user_names

if TYPE_CHECKING:
    from studio.aliases.resolve import AliasResolver
    from studio.inference.manager import EngineManager
    from studio.playground.conversations import ConversationPublic
    from studio.training.estimate import EstimatePart, EstimateResult

log = logging.getLogger(__name__)

KIND = "finetune"

#: The wizard's fields, in the order the form passes them: every ``FinetuneConfig`` field in schema order, except
#: the kind and the dataset hash (pinned at submit)
FORM_FIELDS: tuple[str, ...] = tuple(n for n in FinetuneConfig.model_fields if n not in ("kind", "dataset_hash"))
LATEST = "latest"  # the dataset-version choice meaning "the newest version"
NOT_BEFORE_FORMAT = "%Y-%m-%d %H:%M"
JOB_COLUMNS: tuple[str, ...] = ("Job id", "Name", "State", "Progress", "Step", "Created", "Message", "Owner")
VERSION_COLUMNS: tuple[str, ...] = ("Version", "Examples", "Size", "Source", "Hash", "Created")
#: metric name → the label of its curve
CURVE_LABELS: dict[str, str] = {
    "train_loss": "train loss",
    "eval_loss": "eval loss",
    "learning_rate": "learning rate",
    "grad_norm": "grad norm",
}
_METHOD_PARAMS: frozenset[str] = frozenset(p for spec in method_specs().values() for p in spec.params)


# -- the wizard form → the one config schema -------------------------------------------------------------------
def method_unavailable_reason(method: str) -> str | None:
    """Why ``method`` cannot run on this machine, or None when it can (only QLoRA has a precondition)."""
    if method != "qlora":
        return None
    ok, why = qlora_available()
    return None if ok else why


def _field_type(name: str) -> tuple[set[type], bool]:
    """The scalar types a config field accepts and whether it accepts None."""
    annotation = FinetuneConfig.model_fields[name].annotation
    args = get_args(annotation) if get_origin(annotation) is not None else (annotation,)
    types = {a for a in args if isinstance(a, type)}
    return types, type(None) in args


def _is_zero(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value == 0


def _bounds_low(name: str) -> float | None:
    spec = field_specs().get(name)
    return spec.minimum if spec is not None else None


def _names_list(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,\s]+", text) if part.strip()]


def parse_not_before(value: Any) -> datetime | None:
    """The Schedule step's "not before" text as an aware datetime: ``2026-11-22 03:00`` (this machine's local
    time), any ISO date/time (an offset is kept), or empty for "start now"."""
    if value is None or isinstance(value, datetime):
        return value.astimezone() if isinstance(value, datetime) and value.tzinfo is None else value
    if isinstance(value, int | float):  # a DateTime widget sends a POSIX timestamp
        return datetime.fromtimestamp(float(value)).astimezone()
    text = str(value).strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"not_before: '{text}' is not a date/time; write it as YYYY-MM-DD HH:MM (local time), e.g. "
            f"{datetime.now().strftime(NOT_BEFORE_FORMAT)}, or leave it empty to start now",
            param="not_before",
        ) from None
    return moment.astimezone() if moment.tzinfo is None else moment


def _form_value(name: str, value: Any) -> tuple[bool, Any]:
    """``(present, value)`` for one form value: empty text/None means "not given" (the default applies), or
    None for fields where empty has a meaning (e.g. eval_every_steps: once per epoch). A number box always holds a
    number, so 0 means "empty" for optional fields whose minimum is 1 (max_steps, eval_every_steps)."""
    types, nullable = _field_type(name)
    if isinstance(value, str):
        value = value.strip()
    if value is None or value == "":
        return (True, None) if nullable else (False, None)
    if nullable and _is_zero(value) and (_bounds_low(name) or 0) >= 1:
        return True, None  # a number box cannot be empty: 0 stands for "not set" where 0 is not allowed
    if name in ("target_modules", "adapter_target_modules", "adapter_feedforward_modules"):
        if isinstance(value, list):
            return True, [str(v).strip() for v in value if str(v).strip()] or None
        text = str(value)
        if name == "target_modules" and text == "all-linear":
            return True, text
        return True, _names_list(text) or None
    if name == "not_before":
        return True, parse_not_before(value)
    if name == "dataset_version":
        if str(value).lower() == LATEST:
            return True, None
        text = str(value).removeprefix("v")
        if not text.isdigit():
            raise ValidationError(
                f"dataset_version: '{value}' is not a version number; choose 'latest' or a number such as 2",
                param="dataset_version",
            )
        return True, int(text)
    if int in types and float not in types and not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValidationError(f"{name}: '{value}' is not a whole number", param=name) from None
        if not math.isfinite(number) or not number.is_integer():
            raise ValidationError(f"{name}: {value} is not a whole number", param=name)
        return True, int(number)
    if float in types and not isinstance(value, bool):
        try:
            return True, float(value)
        except (TypeError, ValueError):
            raise ValidationError(f"{name}: '{value}' is not a number", param=name) from None
    return True, value


def default_job_name(dataset: str, method: str) -> str:
    """The job name used when the form leaves it empty: ``<dataset>-<method>``, file-system safe."""
    base = f"{dataset or 'dataset'}-{method or 'lora'}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.")[:100] or "finetune"


def config_from_form(values: Mapping[str, Any]) -> FinetuneConfig:
    """The wizard's widget values (by field name) as a validated :class:`FinetuneConfig`.

    Empty values take the field's default, or the chosen method's default from ``configs/finetune/<method>.yaml``;
    parameters of the other methods are ignored. An empty name becomes ``<dataset>-<method>``. Raises
    ``ValidationError`` whose message names each wrong field with what it accepts and whose ``param`` is the
    first wrong field; QLoRA on a machine that cannot run it is refused with the reason.
    """
    unknown = sorted(set(values) - set(FinetuneConfig.model_fields))
    if unknown:
        raise ValidationError(f"unknown form field(s): {', '.join(unknown)}", param=unknown[0])
    method = str(values.get("method") or "lora")
    specs = method_specs()
    chosen_params = set(specs[method].params) if method in specs else set()
    data: dict[str, Any] = {}
    for name, raw in values.items():
        if name in _METHOD_PARAMS and name not in chosen_params:
            continue
        present, value = _form_value(name, raw)
        if present:
            data[name] = value
    if not str(data.get("name") or "").strip():
        data["name"] = default_job_name(str(data.get("dataset") or ""), method)
    config = parse_config(data)
    why = method_unavailable_reason(config.method)
    if why:
        raise ValidationError(f"method: QLoRA is not available on this machine — {why}", param="method")
    return config


def form_values(config: FinetuneConfig) -> dict[str, Any]:
    """A config as the wizard's widgets show it (lists as comma-separated text, empty for None)."""
    out: dict[str, Any] = {}
    for name in FORM_FIELDS:
        value = getattr(config, name)
        if name == "dataset_version":
            value = LATEST if value is None else str(value)
        elif name == "not_before":
            value = value.astimezone().strftime(NOT_BEFORE_FORMAT) if value is not None else ""
        elif isinstance(value, list):
            value = ", ".join(value)
        elif value is None:
            value = ""
        out[name] = value
    return out


def method_form_defaults(method: Method) -> dict[str, Any]:
    """The "smart defaults" a method brings: the form values of every field its ``configs/finetune`` file sets
    (learning rate, scheduler, warm-up, its own parameters). The wizard applies them when the method changes."""
    spec = method_specs()[method]
    config = FinetuneConfig(name="defaults", dataset="defaults", method=method)
    shown = form_values(config)
    return {name: shown[name] for name in (*spec.defaults, *spec.params) if name in shown}


def config_yaml_from_form(values: Mapping[str, Any]) -> str:
    """The Review step's YAML: the whole config the form describes (what Submit sends)."""
    return config_to_yaml(config_from_form(values))


# -- submitting and estimating ---------------------------------------------------------------------------------
def prepare_yaml(settings: Settings, db: Database, text: str) -> FinetuneConfig:
    """A YAML config checked against this studio: schema, method available here, dataset version (pinned by
    number and content hash) and base model (``ValidationError`` / ``NotFoundError`` name what is wrong)."""
    from studio.training.job import prepare_finetune

    if not (text or "").strip():
        raise ValidationError("the config is empty: fill in the wizard and press Review, or paste a YAML config")
    config = config_from_yaml(text)
    why = method_unavailable_reason(config.method)
    if why:
        raise ValidationError(f"method: QLoRA is not available on this machine — {why}", param="method")
    return prepare_finetune(settings, db, config)


def submit_yaml(settings: Settings, db: Database, text: str) -> Job:
    """Queue a fine-tuning job from its YAML config (the wizard's Review step, ``finetune_submit``)."""
    config = prepare_yaml(settings, db, text)
    return queue.submit(db, KIND, config.model_dump(mode="json"))


def estimate_yaml(settings: Settings, db: Database, text: str, warmup_steps: int = 2) -> EstimateResult:
    """How long the job a YAML config describes will take: each part measured on this machine (the model is
    loaded, tokenises the data and trains ``warmup_steps`` steps in this process; nothing is saved), plus the
    job's start as the last jobs here took it (see :mod:`studio.training.estimate`)."""
    from studio.training.estimate import estimate_duration
    from studio.training.job import resolve_base_model

    config = prepare_yaml(settings, db, text)
    store = DatasetStore(settings, db)
    examples = store.load_examples(store.get_version(config.dataset, config.dataset_version))
    model_path = resolve_base_model(settings, config.base_model)
    estimate = estimate_duration(config, examples, model_path, warmup_steps=warmup_steps)
    start = job_start_part(db)
    if start is None:
        estimate.notes.append(
            "Not included: starting the job's own process (Python imports, reading the dataset), a few seconds "
            "to half a minute; estimates include it once a first job has run here."
        )
        return estimate
    return estimate.with_part(start)


def job_start_part(db: Database, recent: int = 5) -> EstimatePart | None:
    """What a fine-tuning job spends besides what an estimate measures (its process starting, importing the
    libraries, reading the dataset, registering the artifact): its wall time minus the training's own (less the
    imports it timed), measured on the last ``recent`` jobs that succeeded at their first attempt here. None
    before the first such job."""
    from studio.training.estimate import EstimatePart

    overheads: list[float] = []
    for job in queue.list_jobs(db, state=queue.SUCCEEDED, kind=KIND, limit=4 * recent):
        result = job.result if isinstance(job.result, dict) else {}
        trained, imports = result.get("seconds"), result.get("startup_seconds", 0.0)
        if job.attempts or job.started_at is None or job.finished_at is None or not isinstance(trained, int | float):
            continue
        wall = (job.finished_at - job.started_at).total_seconds()
        overheads.append(max(0.0, wall - float(trained) + float(imports or 0.0)))
        if len(overheads) == recent:
            break
    if not overheads:
        return None
    return EstimatePart.timed(
        "job process",
        statistics.median(overheads),
        overheads,
        detail=f"starting (imports, dataset) and finishing, as the last {len(overheads)} job(s) here took",
    )


# -- choices for the pickers -----------------------------------------------------------------------------------
def base_model_choices(resolver: AliasResolver) -> list[str]:
    """Base models the wizard offers: user aliases, then every registry model, that have local weights."""
    out: list[str] = []
    for view in resolver.list_aliases():
        if view.entry is None or view.entry.format == "remote":
            continue
        if view.config.alias not in out:
            out.append(view.config.alias)
    return out


def version_choices(store: DatasetStore, name: str) -> list[tuple[str, str]]:
    """``(label, value)`` pairs for the version picker: "latest" first, then each version, newest first."""
    if not name:
        return [("latest", LATEST)]
    out = [("latest", LATEST)]
    for v in store.versions(name):
        label = f"v{v.number} · {v.num_examples} examples · {v.content_hash[:8]} · {v.source}"
        out.append((label, str(v.number)))
    return out


def version_rows(store: DatasetStore, name: str) -> list[list[Any]]:
    """The versions table of one dataset, newest first (``VERSION_COLUMNS``)."""
    from studio.datasets.schemas import size_label

    return [
        [
            f"v{v.number}",
            v.num_examples,
            size_label(v.size_bytes),
            v.source,
            v.content_hash[:12],
            _local(v.created_at),
        ]
        for v in store.versions(name)
    ]


def conversation_choices(db: Database, limit: int = 200) -> list[tuple[str, str]]:
    """Saved Playground conversations as ``(label, id)`` pairs, most recent first."""
    from studio.playground.conversations import list_conversations

    def label(c: ConversationPublic) -> str:
        title = c.title or "(untitled)"
        return f"{title[:60]} · {c.model} · {c.message_count} messages · {_local(c.updated_at)}"

    return [(label(c), c.id) for c in list_conversations(db, limit=limit)]


# -- column mappings -------------------------------------------------------------------------------------------
def parse_mapping(text: str | None, filename: str | None = None) -> ColumnMapping | None:
    """A column mapping written as YAML or JSON (``format: prompt_completion``, ``prompt: question`` ...), or
    LLaMA-Factory's ``dataset_info.json`` entry (or the whole file: the entry for ``filename`` is taken); empty
    means "detect the format". Errors name the mapping field (``param`` ``mapping.<field>``)."""
    from studio.datasets.mapping import mapping_from_text

    return mapping_from_text(text, filename)


def mapping_yaml(mapping: ColumnMapping) -> str:
    """The fields a mapping's format reads, as the YAML the mapping box shows."""
    data: dict[str, Any] = {"format": mapping.format, **mapping.columns()}
    if mapping.ranking:
        data["ranking"] = True
    if mapping.tags is not None:
        data["tags"] = mapping.tags.model_dump()
    return yaml.safe_dump(data, sort_keys=False)


def mapping_template(fmt: str) -> str:
    """The mapping box's text for a format with its default column names ("" for auto-detect)."""
    if fmt not in FORMATS:
        return ""
    return mapping_yaml(ColumnMapping(format=fmt))  # type: ignore[arg-type]


def format_choices() -> list[tuple[str, str]]:
    """``(label, format)`` pairs: auto-detect, then each accepted format with its columns."""
    out = [("Detect automatically", "auto")]
    out += [(f"{FORMAT_LABELS[f]} — {', '.join(FORMAT_FIELDS[f])}", f) for f in FORMATS]
    return out


# -- tokenizers for token statistics ---------------------------------------------------------------------------
class TokenizerCache:
    """Tokenizers of base models, loaded once each (by the model's local directory) and kept for the process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._loaded: dict[Path, ChatTokenizer] = {}

    def get(self, base_model: str) -> ChatTokenizer:
        """The tokenizer (with its chat template) of ``base_model``: an alias, registry id or path."""
        from studio.training.job import resolve_base_model

        path = resolve_base_model(self.settings, base_model or "default")
        with self._lock:
            found = self._loaded.get(path)
            if found is None:
                from transformers import AutoTokenizer

                found = AutoTokenizer.from_pretrained(str(path))
                self._loaded[path] = found
        return found


def dataset_token_stats(
    store: DatasetStore,
    tokenizers: TokenizerCache,
    name: str,
    version: str | int | None,
    base_model: str,
    max_length: int | None = None,
) -> TokenStats:
    """Token lengths of a dataset version with ``base_model``'s tokenizer and chat template (cached per version)."""
    number = None if version in (None, "", LATEST) else int(str(version).removeprefix("v"))
    resolved = store.get_version(name, number)
    return store.token_stats(resolved, tokenizers.get(base_model), max_length or None)


# -- dashboard and job list ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DashboardSummary:
    """The Fine-Tune dashboard's figures, counted in the database."""

    datasets: int
    supervised: int
    preference: int
    jobs_by_state: dict[str, int]
    recent_jobs: list[list[Any]]

    @property
    def jobs(self) -> int:
        """Fine-tuning jobs in any state."""
        return sum(self.jobs_by_state.values())


def job_state_counts(db: Database) -> dict[str, int]:
    """Fine-tuning jobs per state; every state is present (0 when none)."""
    with db.session() as session:
        rows = session.exec(
            select(Job.state, func.count(col(Job.id))).where(col(Job.kind) == KIND).group_by(col(Job.state))
        ).all()
    counts = dict.fromkeys(queue.STATES, 0)
    counts.update({str(state): int(n) for state, n in rows})
    return counts


def dashboard_summary(db: Database, recent: int = 5) -> DashboardSummary:
    """Datasets by kind, fine-tuning jobs by state and the most recent jobs."""
    with db.session() as session:
        kinds = dict(session.exec(select(Dataset.kind, func.count(col(Dataset.id))).group_by(col(Dataset.kind))).all())
    supervised = int(kinds.get("supervised", 0))
    preference = int(kinds.get("preference", 0))
    return DashboardSummary(
        datasets=sum(int(n) for n in kinds.values()),
        supervised=supervised,
        preference=preference,
        jobs_by_state=job_state_counts(db),
        recent_jobs=job_rows(queue.list_jobs(db, kind=KIND, limit=recent), user_names(db)),
    )


def _local(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return queue.as_utc(moment).astimezone().strftime(NOT_BEFORE_FORMAT)


def progress_label(job: Job) -> str:
    """``"40%"`` from the job's recorded progress (``"100%"`` once it succeeded)."""
    value = 1.0 if job.state == queue.SUCCEEDED else max(0.0, min(1.0, job.progress or 0.0))
    return f"{value * 100:.0f}%"


def step_label(job: Job) -> str:
    """``"12/30"``, ``"12"`` without a known total, ``""`` before the first step."""
    if not job.step and not job.total_steps:
        return ""
    return f"{job.step}/{job.total_steps}" if job.total_steps else str(job.step)


def job_rows(jobs: Sequence[Job], owners: Mapping[str, str] | None = None) -> list[list[Any]]:
    """Rows of the jobs table (``JOB_COLUMNS``); ``owners`` maps user ids to names (a private job is marked)."""
    names = owners or {}
    return [
        [
            job.id,
            job.name,
            job.state,
            progress_label(job),
            step_label(job),
            _local(job.created_at),
            job.message,
            names.get(job.owner_id or "", "") + (" (private)" if job.private else ""),
        ]
        for job in jobs
    ]


def list_finetune_jobs(db: Database, state: str | None = None, limit: int = 100) -> list[Job]:
    """Fine-tuning jobs, newest first, optionally in one state."""
    return queue.list_jobs(db, state=state or None, kind=KIND, limit=limit)


def latest_job_id(db: Database) -> str:
    """The newest fine-tuning job's id ("" when there is none): what the monitor shows after a page load."""
    jobs = queue.list_jobs(db, kind=KIND, limit=1)
    return jobs[0].id if jobs else ""


# -- one job ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricSeries:
    """One curve: its values at optimizer steps, in step order."""

    name: str
    steps: list[int]
    values: list[float]

    @property
    def last(self) -> float | None:
        """The latest value, if any."""
        return self.values[-1] if self.values else None


def metric_series(metrics: Sequence[JobMetric]) -> dict[str, MetricSeries]:
    """The curves in a job's metric rows: one series per metric name, finite numbers only, by step."""
    points: dict[str, list[tuple[int, float]]] = {}
    for row in sorted(metrics, key=lambda m: (m.step, m.id or 0)):
        for name, value in (row.values or {}).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            points.setdefault(name, []).append((row.step, float(value)))
    return {name: MetricSeries(name, [s for s, _ in pts], [v for _, v in pts]) for name, pts in sorted(points.items())}


@dataclass(frozen=True)
class MemoryView:
    """Memory while a job runs: the machine's, and the job process's (with its children) when it runs here."""

    system_total: int
    system_available: int
    job_rss: int | None = None

    def summary(self) -> str:
        """``"system: 10.2 of 23.4 GiB used · job process 1.31 GiB"``."""
        gib = 1024**3
        used = self.system_total - self.system_available
        text = f"system: {used / gib:.1f} of {self.system_total / gib:.1f} GiB used"
        if self.job_rss is not None:
            text += f" · job process {self.job_rss / gib:.2f} GiB"
        return text


def _process_tree_rss(pid: int) -> int | None:
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue
        return int(total)
    except psutil.Error:
        return None


def job_memory(job: Job | None) -> MemoryView:
    """The machine's memory now and, for a job running on this host, its process tree's resident memory."""
    snap = memory_snapshot()
    rss = None
    if job is not None and job.state == queue.RUNNING and job.pid:
        owner = queue.parse_worker_id(job.worker_id)
        if owner is None or owner[0] == socket.gethostname():
            rss = _process_tree_rss(job.pid)
    return MemoryView(snap.system_total, snap.system_available, rss)


@dataclass(frozen=True)
class JobView:
    """Everything the monitor shows about one job, read from its database rows and its log."""

    id: str
    name: str
    state: str
    progress: float
    step: int
    total_steps: int | None
    epoch: float | None
    eta_s: float | None
    message: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    config: dict[str, Any]
    result: dict[str, Any]
    artifact_path: str | None
    checkpoint_path: str | None
    series: dict[str, MetricSeries] = field(default_factory=dict)
    log_tail: str = ""
    memory: MemoryView | None = None
    cost: str = ""  # its cost from its measured running time by the user's price table ("" before it starts)

    @property
    def can_cancel(self) -> bool:
        """Queued or running: Cancel applies."""
        return self.state in (queue.QUEUED, queue.RUNNING)

    @property
    def can_resume(self) -> bool:
        """Interrupted, or cancelled/failed with a checkpoint: Resume applies."""
        if self.state == queue.INTERRUPTED:
            return True
        return self.state in queue.RESUMABLE_STATES and self.checkpoint_path is not None

    @property
    def can_load(self) -> bool:
        """Succeeded with an artifact: "Load in Playground" applies."""
        return self.state == queue.SUCCEEDED and bool(self.artifact_path)

    @property
    def registered_as(self) -> str | None:
        """The name the artifact is registered under (adapters/<name> or models/<name>)."""
        name = self.result.get("registered_as")
        return str(name) if name else None

    @property
    def artifact_kind(self) -> str:
        """``adapter`` or ``model``."""
        return str(self.result.get("artifact") or "adapter")

    @property
    def eta_label(self) -> str:
        """``"about 1 min 15 s left"`` from the measured step times; ``""`` when there is nothing to say."""
        from studio.training.train import format_duration

        if self.state != queue.RUNNING or self.eta_s is None:
            return ""
        return f"about {format_duration(self.eta_s)} left"

    @property
    def signature(self) -> tuple[Any, ...]:
        """Changes whenever anything the monitor shows changes (the UI skips redrawing otherwise)."""
        points = tuple((name, len(s.steps)) for name, s in self.series.items())
        # not updated_at: heartbeats move it without changing anything shown
        return (
            self.id,
            self.state,
            self.step,
            self.total_steps,
            self.eta_s,
            self.message,
            self.artifact_path,
            points,
            self.log_tail[-200:],
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON for clients (``finetune_job``): state, progress, step/epoch, ETA, metrics, result, artifact."""
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "progress": round(self.progress, 4),
            "step": self.step,
            "total_steps": self.total_steps,
            "epoch": self.epoch,
            "eta_s": self.eta_s,
            "message": self.message,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "artifact_path": self.artifact_path,
            "registered_as": self.registered_as,
            "checkpoint_path": self.checkpoint_path,
            "cost": self.cost,
            "metrics": {name: {"steps": s.steps, "values": s.values} for name, s in self.series.items()},
            "result": self.result,
            "config": self.config,
        }


def job_view(settings: Settings, db: Database, job_id: str, log_lines: int = 40) -> JobView:
    """The monitor's view of one fine-tuning job (``NotFoundError`` names an unknown id)."""
    if not (job_id or "").strip():
        raise ValidationError("choose a job: click a row of the jobs table or paste a job id", param="job_id")
    job = queue.get_job(db, job_id.strip())
    progress = 1.0 if job.state == queue.SUCCEEDED else max(0.0, min(1.0, job.progress or 0.0))
    return JobView(
        id=job.id,
        name=job.name,
        state=job.state,
        progress=progress,
        step=job.step,
        total_steps=job.total_steps,
        epoch=job.epoch,
        eta_s=job.eta_s,
        message=job.message,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
        config=dict(job.config),
        result=dict(job.result),
        artifact_path=job.artifact_path,
        checkpoint_path=job.checkpoint_path,
        series=metric_series(queue.job_metrics(db, job.id)),
        log_tail=queue.log_tail(settings, job.id, log_lines),
        memory=job_memory(job),
        cost=job_cost_text(settings, job),
    )


def job_cost_text(settings: Settings, job: Job) -> str:
    """``"0.0123 USD (4.1 min at 2 CPU cores x 0.04 USD/h)"`` from the job's measured running time ("so far" while
    it runs; "" before it starts); a broken price table says so instead."""
    if job.started_at is None:
        return ""
    from studio.monitoring.costs import job_cost, load_costs

    try:
        table, _text = load_costs(settings)
    except StudioError as exc:
        return f"no cost: {exc.message}"
    text = job_cost(table, job).text()
    return f"{text} so far" if job.finished_at is None else text


def trained_model_names(db: Database, job_id: str) -> tuple[str, str]:
    """What the Playground's model and adapter boxes should hold for a succeeded job's result: (base model,
    registered adapter) for an adapter, (registered model, "") for a fully fine-tuned model."""
    job = queue.get_job(db, job_id)
    result = dict(job.result)
    registered = str(result.get("registered_as") or job.artifact_path or "")
    if result.get("artifact") == "model":
        return registered, ""
    return str(job.config.get("base_model") or "default"), registered


def load_trained(engines: EngineManager, db: Database, job_id: str) -> str:
    """Load a succeeded job's result for chatting: the base model with the trained adapter active (named as
    registered), or the fully fine-tuned model. Returns what the Playground should pick (the model id)."""
    job = queue.get_job(db, job_id)
    if job.state != queue.SUCCEEDED or not job.artifact_path:
        raise ConflictError(f"job {job.id} is {job.state}; only a succeeded job has a trained model to load")
    result = dict(job.result)
    registered = str(result.get("registered_as") or "")
    if result.get("artifact") == "model":
        engine = engines.load(registered or job.artifact_path)
        return engine.info.model_id
    base = str(job.config.get("base_model") or "default")
    engine = engines.load(base)
    engines.load_adapter(engine.info.model_id, registered or job.artifact_path, name=registered or None)
    return engine.info.model_id


# -- figures ---------------------------------------------------------------------------------------------------
def _empty_figure(title: str, note: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=title,
        height=280,
        margin={"l": 50, "r": 20, "t": 45, "b": 40},
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[{"text": note, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}],
    )
    return fig


def curves_figure(
    series: Mapping[str, MetricSeries], names: Sequence[str], title: str, y_title: str, *, log_y: bool = False
) -> go.Figure:
    """A line per metric in ``names`` over optimizer steps; an explicit "no points yet" figure without data."""
    present = [series[n] for n in names if n in series and series[n].steps]
    if not present:
        return _empty_figure(title, "no points logged yet")
    fig = go.Figure()
    for s in present:
        fig.add_trace(
            go.Scatter(
                x=s.steps,
                y=s.values,
                mode="lines+markers" if len(s.steps) < 40 else "lines",
                name=CURVE_LABELS.get(s.name, s.name),
            )
        )
    fig.update_layout(
        title=title,
        height=280,
        margin={"l": 50, "r": 20, "t": 45, "b": 40},
        xaxis_title="step",
        yaxis_title=y_title,
        showlegend=True,  # name the curve even when it is the only one
        legend={"orientation": "h", "y": -0.25},
    )
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def loss_figure(series: Mapping[str, MetricSeries]) -> go.Figure:
    """Train loss and eval loss over steps."""
    return curves_figure(series, ("train_loss", "eval_loss"), "Loss", "loss")


def learning_rate_figure(series: Mapping[str, MetricSeries]) -> go.Figure:
    """The learning rate schedule as it ran."""
    return curves_figure(series, ("learning_rate",), "Learning rate", "learning rate")


def grad_norm_figure(series: Mapping[str, MetricSeries]) -> go.Figure:
    """Gradient norm per logged step."""
    return curves_figure(series, ("grad_norm",), "Gradient norm", "grad norm")


def token_histogram_figure(stats: TokenStats) -> go.Figure:
    """Histogram of examples' token lengths, with the max_length limit when one was given."""
    edges, counts = stats.histogram.edges, stats.histogram.counts
    centres = [(edges[i] + edges[i + 1]) / 2 for i in range(len(counts))]
    widths = [max(edges[i + 1] - edges[i], 1.0) for i in range(len(counts))]
    fig = go.Figure(go.Bar(x=centres, y=counts, width=widths, name="examples"))
    if stats.max_length is not None:
        fig.add_vline(x=stats.max_length, line_dash="dash", annotation_text=f"max_length {stats.max_length}")
    fig.update_layout(
        title=f"Token lengths ({stats.tokenizer.rsplit('/', 1)[-1]}, chat template)",
        height=300,
        margin={"l": 50, "r": 20, "t": 45, "b": 40},
        xaxis_title="tokens per example",
        yaxis_title="examples",
        bargap=0.05,
    )
    return fig


def memory_figure(memory: MemoryView) -> go.Figure:
    """One stacked bar of the machine's memory: the job process, everything else in use, free."""
    gib = 1024**3
    used = memory.system_total - memory.system_available
    job = memory.job_rss or 0
    parts = [
        ("job process", job, "#2563eb"),
        ("other processes", max(0, used - job), "#9ca3af"),
        ("free", memory.system_available, "#d1fae5"),
    ]
    fig = go.Figure()
    for label, value, colour in parts:
        if label == "job process" and memory.job_rss is None:
            continue
        fig.add_trace(go.Bar(y=["RAM"], x=[value / gib], name=label, orientation="h", marker_color=colour))
    fig.update_layout(
        barmode="stack",
        height=160,
        margin={"l": 60, "r": 20, "t": 35, "b": 30},
        title=memory.summary(),
        xaxis_title="GiB",
        legend={"orientation": "h", "y": -0.6, "traceorder": "normal"},
    )
    return fig


def job_result_rows(view: JobView) -> list[list[Any]]:
    """The result table of a finished job: figures the trainer measured (loss, steps, time, parameters)."""
    labels = [
        ("stopped", "stopped because"),
        ("train_loss", "final train loss"),
        ("eval_loss", "final eval loss"),
        ("best_eval_loss", "best eval loss"),
        ("steps", "steps"),
        ("epoch", "epochs"),
        ("seconds", "training time (s)"),
        ("seconds_per_step", "seconds per step"),
        ("trainable_params", "trainable parameters"),
        ("total_params", "total parameters"),
        ("train_examples", "training examples"),
        ("eval_examples", "validation examples"),
        ("registered_as", "registered as"),
        ("artifact_path", "artifact"),
    ]
    rows: list[list[Any]] = []
    for key, label in labels:
        value = view.result.get(key)
        if value is None:
            continue
        if isinstance(value, float):
            value = f"{value:.4g}"
        rows.append([label, str(value)])
    return rows
