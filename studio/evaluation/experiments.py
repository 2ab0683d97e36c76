"""Experiments: every fine-tuning job and every eval run, with its full config, compared side by side.

A comparison of any set of runs gives overlaid loss curves (train and eval loss per step), perplexity trends
(``exp(eval_loss)`` at each evaluation step of a training run — its checkpoints — and the perplexity eval runs
measured), one metric table (final losses of training runs, each model's figures of eval runs) and a config
diff (the keys whose values differ). Runs are tagged, favourited and archived through the ``job`` row's own
columns; the list filters by tag and hides archived runs unless asked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from sqlalchemy import update
from sqlmodel import col, select

from studio.db.engine import Database
from studio.db.tables import Job, JobMetric
from studio.errors import ValidationError
from studio.jobs import queue
from studio.settings import Settings
from studio.users.ownership import check_owner

EXPERIMENT_KINDS: tuple[str, ...] = ("finetune", "eval")
EXPERIMENT_COLUMNS = ("id", "kind", "name", "state", "tags", "favourite", "archived", "created")
MAX_TAGS = 16
_TAG = re.compile(r"^[\w.:+-]{1,40}$", re.UNICODE)


@dataclass
class Experiment:
    """One run as an experiment: its row and its config."""

    job: Job

    @property
    def label(self) -> str:
        """Short name for legends and columns: 'name (id8)'."""
        return f"{self.job.name or self.job.kind} ({self.job.id[:8]})"


def list_experiments(
    db: Database,
    tag: str | None = None,
    include_archived: bool = False,
    favourites_only: bool = False,
    kinds: Sequence[str] = EXPERIMENT_KINDS,
    limit: int = 200,
) -> list[Job]:
    """Training jobs and eval runs, newest first; filtered by ``tag``, archived runs hidden unless asked."""
    query = select(Job).where(col(Job.kind).in_(list(kinds)))
    if not include_archived:
        query = query.where(col(Job.archived).is_(False))
    if favourites_only:
        query = query.where(col(Job.favourite).is_(True))
    query = query.order_by(col(Job.created_at).desc(), col(Job.id).desc())
    with db.session() as session:
        jobs = list(session.exec(query).all())
    wanted = (tag or "").strip()
    if wanted:  # tags are a JSON list: filtered here so SQLite and PostgreSQL behave alike
        jobs = [j for j in jobs if wanted in (j.tags or [])]
    return [queue.get_job(db, j.id) for j in jobs[:limit]]


def experiment_rows(jobs: Sequence[Job]) -> list[list[Any]]:
    """Experiments as table rows (``EXPERIMENT_COLUMNS``)."""
    return [
        [
            j.id,
            j.kind,
            j.name,
            j.state,
            ", ".join(j.tags or []),
            "yes" if j.favourite else "",
            "yes" if j.archived else "",
            j.created_at.astimezone().strftime("%Y-%m-%d %H:%M"),
        ]
        for j in jobs
    ]


def all_tags(db: Database) -> list[str]:
    """Every tag used on an experiment, sorted."""
    with db.session() as session:
        lists = session.exec(select(Job.tags).where(col(Job.kind).in_(list(EXPERIMENT_KINDS)))).all()
    return sorted({t for tags in lists for t in (tags or [])})


def parse_tags(text: str | Sequence[str]) -> list[str]:
    """Tags from 'a, b c' or a list; each 1-40 letters, digits or ``_ . : + -``; at most 16."""
    raw = re.split(r"[,\s]+", text) if isinstance(text, str) else list(text)
    tags = list(dict.fromkeys(t.strip() for t in raw if t and t.strip()))
    for t in tags:
        if not _TAG.match(t):
            raise ValidationError(f"tag {t!r}: use 1-40 letters, digits or _ . : + -", param="tags")
    if len(tags) > MAX_TAGS:
        raise ValidationError(f"at most {MAX_TAGS} tags per run; got {len(tags)}", param="tags")
    return tags


def _update(db: Database, job_id: str, **values: Any) -> Job:
    job = queue.get_job(db, job_id)
    if job.kind not in EXPERIMENT_KINDS:
        raise ValidationError(f"job {job.id} is a {job.kind} job, not an experiment", param="id")
    check_owner(f"run {job.id}", job.owner_id, db)
    with db.engine.begin() as conn:
        conn.execute(update(Job.__table__).where(Job.__table__.c.id == job.id).values(**values))  # type: ignore[attr-defined]
    return queue.get_job(db, job.id)


def set_tags(db: Database, job_id: str, tags: str | Sequence[str]) -> Job:
    """Replace the run's tags."""
    return _update(db, job_id, tags=parse_tags(tags))


def set_favourite(db: Database, job_id: str, favourite: bool) -> Job:
    """Mark or unmark the run as a favourite."""
    return _update(db, job_id, favourite=bool(favourite))


def set_archived(db: Database, job_id: str, archived: bool) -> Job:
    """Archive (hide from the default list) or restore the run."""
    return _update(db, job_id, archived=bool(archived))


# --- comparison -------------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """A set of runs compared: figures, a metric table and a config diff."""

    experiments: list[Experiment]
    loss: go.Figure
    perplexity: go.Figure
    metric_headers: list[str]
    metric_rows: list[list[Any]]
    diff_headers: list[str]
    diff_rows: list[list[Any]]
    series: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)

    def configs(self) -> dict[str, Any]:
        """Each run's full config and runtime facts (device, state, attempts, duration), by label."""
        return {e.label: {"config": e.job.config, "runtime": runtime_facts(e.job)} for e in self.experiments}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (figures left out; series and full configs included)."""
        return {
            "runs": [{"id": e.job.id, "kind": e.job.kind, "name": e.job.name} for e in self.experiments],
            "configs": self.configs(),
            "metrics": {"headers": self.metric_headers, "rows": self.metric_rows},
            "config_diff": {"headers": self.diff_headers, "rows": self.diff_rows},
            "series": {k: {m: [list(p) for p in pts] for m, pts in v.items()} for k, v in self.series.items()},
        }


def runtime_facts(job: Job) -> dict[str, Any]:
    """Where and how a run ran: device, state, attempts, worker and wall-clock duration in seconds."""
    duration = None
    if job.started_at is not None and job.finished_at is not None:
        duration = round((job.finished_at - job.started_at).total_seconds(), 1)
    return {
        "device": job.device,
        "state": job.state,
        "attempts": job.attempts,
        "worker": job.worker_id,
        "duration_s": duration,
        "tags": list(job.tags or []),
    }


def parse_ids(text: str | Sequence[str]) -> list[str]:
    """Job ids from 'id1, id2' or a list (order kept, duplicates dropped)."""
    raw = re.split(r"[,\s]+", text) if isinstance(text, str) else list(text)
    return list(dict.fromkeys(r.strip() for r in raw if r and r.strip()))


def _series(metrics: Sequence[JobMetric]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for point in metrics:
        for key, value in point.values.items():
            if isinstance(value, int | float) and math.isfinite(float(value)):
                out.setdefault(key, []).append((point.step, float(value)))
    return out


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config → ``{"a.b": value}`` (lists of scalars kept as lists; lists of mappings indexed)."""
    out: dict[str, Any] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(data, list) and any(isinstance(v, Mapping) for v in data):
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = data
    return out


def config_diff(configs: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Rows ``[key, value of run 1, value of run 2, ...]`` for every key whose values differ."""
    flat = [flatten(dict(c)) for c in configs]
    keys = sorted({k for f in flat for k in f})
    rows = []
    for key in keys:
        values = [f.get(key) for f in flat]
        if any(v != values[0] for v in values[1:]):
            rows.append([key, *[_show(v) for v in values]])
    return rows


def _show(value: Any) -> Any:
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value


def _perplexity(loss: float) -> float | None:
    return math.exp(loss) if loss < 50 else None


def compare(db: Database, ids: str | Sequence[str]) -> Comparison:
    """Compare runs (training jobs and/or eval runs): overlaid loss curves, perplexity trends, metric table and
    config diff. Needs at least one id; every id must be an experiment."""
    job_ids = parse_ids(ids)
    if not job_ids:
        raise ValidationError("pick at least one run to compare", param="ids")
    experiments = []
    for job_id in job_ids:
        job = queue.get_job(db, job_id)
        if job.kind not in EXPERIMENT_KINDS:
            raise ValidationError(f"job {job.id} is a {job.kind} job; only training and eval runs compare", param="ids")
        experiments.append(Experiment(job))
    series = {e.job.id: _series(queue.job_metrics(db, e.job.id)) for e in experiments}

    loss = go.Figure()
    ppl = go.Figure()
    for e in experiments:
        s = series[e.job.id]
        for key, dash in (("train_loss", "solid"), ("eval_loss", "dash")):
            if s.get(key):
                steps, values = zip(*s[key], strict=True)
                loss.add_trace(
                    go.Scatter(x=steps, y=values, mode="lines+markers", name=f"{e.label} {key}", line={"dash": dash})
                )
        if s.get("eval_loss"):
            pts = [(st, p) for st, v in s["eval_loss"] if (p := _perplexity(v)) is not None]
            if pts:
                steps, values = zip(*pts, strict=True)
                ppl.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers", name=f"{e.label} exp(eval_loss)"))
        if e.job.kind == "eval":
            models = (e.job.result or {}).get("models") or {}
            points = [(lbl, f["perplexity"]) for lbl, f in models.items() if f.get("perplexity") is not None]
            if points:
                steps_or_labels = [_checkpoint_step(lbl) for lbl, _ in points]
                if all(s is not None for s in steps_or_labels):  # an eval over checkpoints: a trend over steps
                    ordered = sorted(zip(steps_or_labels, [v for _, v in points], strict=True))
                    ppl.add_trace(
                        go.Scatter(
                            x=[s for s, _ in ordered],
                            y=[v for _, v in ordered],
                            mode="lines+markers",
                            name=f"{e.label} perplexity",
                        )
                    )
                else:
                    ppl.add_trace(go.Bar(x=[lbl for lbl, _ in points], y=[v for _, v in points], name=e.label))
    loss.update_layout(title="Loss curves", xaxis_title="step", yaxis_title="loss", height=340)
    ppl.update_layout(title="Perplexity", xaxis_title="step / model", yaxis_title="perplexity", height=340)
    if not loss.data:
        loss.update_layout(title="Loss curves (no training metrics among these runs)")
    if not ppl.data:
        ppl.update_layout(title="Perplexity (no eval loss or perplexity among these runs)")

    headers, rows = _metric_table(experiments, series)
    diff = config_diff([e.job.config for e in experiments])
    return Comparison(
        experiments=experiments,
        loss=loss,
        perplexity=ppl,
        metric_headers=headers,
        metric_rows=rows,
        diff_headers=["config key", *[e.label for e in experiments]],
        diff_rows=diff,
        series=series,
    )


def _checkpoint_step(label: str) -> int | None:
    match = re.search(r"checkpoint-(\d+)", label)
    return int(match.group(1)) if match else None


def _metric_table(
    experiments: Sequence[Experiment], series: Mapping[str, Mapping[str, list[tuple[int, float]]]]
) -> tuple[list[str], list[list[Any]]]:
    columns: list[str] = []
    values: list[dict[str, Any]] = []
    figures: dict[str, Any]
    for e in experiments:
        if e.job.kind == "eval":
            models = (e.job.result or {}).get("models") or {}
            for label, figures in models.items():
                columns.append(f"{e.label} · {label}")
                kept = {k: v for k, v in figures.items() if k != "perplexity_tokens"}
                values.append({**kept, "duration_s": runtime_facts(e.job)["duration_s"]})
        else:
            s = series.get(e.job.id, {})
            figures = {}
            for key in ("train_loss", "eval_loss", "grad_norm", "learning_rate"):
                if s.get(key):
                    figures[f"final {key}"] = s[key][-1][1]
            if s.get("eval_loss"):
                figures["best eval_loss"] = min(v for _, v in s["eval_loss"])
                figures["final perplexity"] = _perplexity(s["eval_loss"][-1][1])
            figures["steps"] = e.job.step
            result = e.job.result or {}
            for key in ("train_runtime", "train_loss"):
                if isinstance(result.get(key), int | float):
                    figures[f"result {key}"] = result[key]
            figures["duration_s"] = runtime_facts(e.job)["duration_s"]
            columns.append(e.label)
            values.append(figures)
    keys: list[str] = []
    for v in values:
        keys += [k for k in v if k not in keys]
    rows = [[k, *[_num(v.get(k)) for v in values]] for k in keys]
    return ["metric", *columns], rows


def _num(value: Any) -> Any:
    return round(float(value), 4) if isinstance(value, int | float) and not isinstance(value, bool) else value


def checkpoints_of(settings: Settings, db: Database, job_id: str) -> list[Path]:
    """A training job's saved checkpoints (``runs/<job>/checkpoints/checkpoint-N``), in step order."""
    job = queue.get_job(db, job_id)
    folder = queue.run_dir(settings, job.id) / "checkpoints"
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def checkpoint_eval_config(
    settings: Settings, db: Database, job_id: str, *, text_file: str | None = None, dataset: str | None = None
) -> dict[str, Any]:
    """An eval config measuring perplexity at each checkpoint of a LoRA/adapter training job (one model entry
    per checkpoint, labelled ``checkpoint-N``): submit it, then compare it to see the trend across checkpoints."""
    job = queue.get_job(db, job_id)
    if job.kind != "finetune":
        raise ValidationError(f"job {job.id} is not a training job", param="id")
    checkpoints = [c for c in checkpoints_of(settings, db, job.id) if (c / "adapter_config.json").is_file()]
    if not checkpoints:
        raise ValidationError(f"job {job.id} has no adapter checkpoints to evaluate", param="id")
    base = str(job.config.get("base_model"))
    data: dict[str, Any] = {
        "name": f"perplexity across checkpoints of {job.name or job.id[:8]}",
        "models": [{"model": base, "adapter": str(c), "label": c.name} for c in checkpoints],
        "metrics": ["perplexity"],
    }
    if text_file:
        data["text_file"] = text_file
    else:
        data["dataset"] = dataset or job.config.get("dataset")
    return data
