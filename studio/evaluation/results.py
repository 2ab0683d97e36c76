"""Reading an eval run back: the metric × model table, the per-example drill-down (worst first), the bar chart,
and submitting a run from the UI form or a YAML file. Plain functions over the database; no gradio here."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from studio.db.engine import Database
from studio.db.tables import Job
from studio.errors import ValidationError
from studio.evaluation.config import EvalConfig, eval_config_from_yaml, parse_eval_config
from studio.evaluation.job import KIND, stored_samples
from studio.jobs import queue
from studio.settings import Settings

SUMMARY_HIDDEN = ("examples", "perplexity_tokens")
EXAMPLE_COLUMNS = ("#", "model", "input", "reference", "output", "scores", "error")


@dataclass
class EvalResults:
    """One eval run as the Evaluate tab and ``studio eval show`` present it."""

    job: Job
    config: dict[str, Any]
    models: dict[str, dict[str, float | None]] = field(default_factory=dict)
    keys: dict[str, list[str]] = field(default_factory=dict)
    higher_is_better: dict[str, bool | None] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    metric_errors: list[dict[str, Any]] = field(default_factory=list)
    model_errors: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """The model labels in config order."""
        configured = [m.get("label") or _display(m) for m in self.config.get("models", [])]
        return configured or list(self.models)

    def metric_keys(self) -> list[str]:
        """Every summary key in metric order (hidden bookkeeping keys left out)."""
        ordered: list[str] = []
        for keys in self.keys.values():
            ordered += [k for k in keys if k not in ordered and k not in SUMMARY_HIDDEN]
        for figures in self.models.values():
            ordered += [k for k in figures if k not in ordered and k not in SUMMARY_HIDDEN]
        return ordered

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """(headers, rows): one row per metric key, one column per model."""
        headers = ["metric", *self.labels]
        rows = []
        for key in self.metric_keys():
            rows.append([key, *[_round(self.models.get(label, {}).get(key)) for label in self.labels]])
        rows.append(["examples", *[_round(self.models.get(label, {}).get("examples")) for label in self.labels]])
        return headers, rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the job, its config and the results (``studio eval show --json``)."""
        return {
            "id": self.job.id,
            "name": self.job.name,
            "state": self.job.state,
            "progress": self.job.progress,
            "message": self.job.message,
            "created_at": self.job.created_at.isoformat(),
            "finished_at": self.job.finished_at.isoformat() if self.job.finished_at else None,
            "tags": list(self.job.tags),
            "config": self.config,
            "models": self.models,
            "unavailable": self.unavailable,
            "metric_errors": self.metric_errors,
            "model_errors": self.model_errors,
        }


def _display(model: Mapping[str, Any]) -> str:
    from pathlib import Path

    if model.get("adapter"):
        return f"{model['model']}+{Path(str(model['adapter'])).name}"
    return str(model.get("model", ""))


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def get_results(db: Database, job_id: str) -> EvalResults:
    """The results of eval run ``job_id`` (a prefix works): the summary while running is built from the rows
    stored so far."""
    job = queue.get_job(db, (job_id or "").strip())
    if job.kind != KIND:
        raise ValidationError(f"job {job.id} is a {job.kind} job, not an eval run", param="id")
    result = job.result or {}
    res = EvalResults(
        job=job,
        config=dict(job.config),
        models=dict(result.get("models") or {}),
        keys=dict(result.get("keys") or {}),
        higher_is_better=dict(result.get("higher_is_better") or {}),
        unavailable=dict(result.get("unavailable") or {}),
        metric_errors=list(result.get("metric_errors") or []),
        model_errors=dict(result.get("model_errors") or {}),
    )
    if not res.models:  # still running (or stopped before the summary): show means of what is stored
        res.models = _partial_summary(db, job.id)
    return res


def _partial_summary(db: Database, job_id: str) -> dict[str, dict[str, float | None]]:
    from studio.evaluation.metrics import mean_scores

    by_model: dict[str, list[dict[str, float | None]]] = {}
    for row in stored_samples(db, job_id):
        by_model.setdefault(row.model, []).append(dict(row.scores))
    out: dict[str, dict[str, float | None]] = {}
    for model, rows in by_model.items():
        out[model] = {**mean_scores(rows), "examples": float(len(rows))}
    return out


def sort_key_choices(results: EvalResults) -> list[str]:
    """Keys the drill-down can sort by."""
    return results.metric_keys()


def _direction(results: EvalResults, key: str) -> bool | None:
    for metric, keys in results.keys.items():
        if key in keys:
            return results.higher_is_better.get(metric, True)
    return True


def default_sort_key(results: EvalResults) -> str | None:
    """The first key with a better/worse direction (the drill-down's default order)."""
    for metric, keys in results.keys.items():
        if results.higher_is_better.get(metric) is not None and keys:
            return keys[0]
    keys_all = results.metric_keys()
    return keys_all[0] if keys_all else None


def example_rows(
    db: Database,
    job_id: str,
    model: str | None = None,
    sort_by: str | None = None,
    limit: int = 200,
) -> list[list[Any]]:
    """Per-example rows (``EXAMPLE_COLUMNS``), worst first by ``sort_by`` (default: the first metric with a
    direction); rows without that score come last. Errors come first: they are the worst of all."""
    results = get_results(db, job_id)
    key = sort_by or default_sort_key(results)
    higher = _direction(results, key) if key else None
    rows = stored_samples(db, results.job.id, model or None)

    def order(row: Any) -> tuple[int, float]:
        if row.error:
            return (0, 0.0)
        value = row.scores.get(key) if key else None
        if value is None or higher is None:
            return (2, float(row.example_index))
        return (1, float(value) if higher else -float(value))

    rows.sort(key=order)
    return [
        [
            r.example_index + 1,
            r.model,
            r.input,
            r.reference or "",
            r.output,
            json.dumps({k: _round(v) for k, v in r.scores.items()}, ensure_ascii=False),
            r.error or "",
        ]
        for r in rows[: max(1, limit)]
    ]


def bar_figure(results: EvalResults, keys: Sequence[str] | None = None) -> go.Figure | None:
    """Grouped bars comparing the models, one panel per metric key (each on its own scale); None while nothing
    is scored (an empty figure draws bare axes, which read as a broken chart)."""
    shown = [k for k in (keys or results.metric_keys()) if k not in SUMMARY_HIDDEN][:8]
    if not shown or not results.models:
        return None
    fig = make_subplots(rows=1, cols=len(shown), subplot_titles=shown)
    for col, key in enumerate(shown, start=1):
        for i, label in enumerate(results.labels):
            value = results.models.get(label, {}).get(key)
            fig.add_trace(
                go.Bar(
                    x=[label],
                    y=[value if value is not None else 0.0],
                    name=label,
                    legendgroup=label,
                    showlegend=col == 1,
                    marker_color=_COLOURS[i % len(_COLOURS)],
                    text=[f"{value:.3g}" if value is not None else "n/a"],
                    textposition="auto",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(showticklabels=False, row=1, col=col)
    fig.update_layout(
        title=f"{results.job.name or results.job.id} — models compared",
        height=340,
        margin={"l": 40, "r": 20, "t": 70, "b": 30},
        barmode="group",
    )
    return fig


_COLOURS = ("#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777")


# --- submitting -------------------------------------------------------------------------------------------------


def submit_eval(settings: Settings, db: Database, config: EvalConfig | Mapping[str, Any], name: str = "") -> Job:
    """Queue an eval run (checked and pinned by the kind's ``prepare``); returns the job row."""
    data = config.model_dump(mode="json") if isinstance(config, EvalConfig) else dict(config)
    data.pop("kind", None)
    return queue.submit(db, KIND, data, name=name, priority=data.get("priority"), settings=settings)


def submit_eval_yaml(settings: Settings, db: Database, text: str) -> Job:
    """Queue the eval run an eval YAML text describes."""
    return submit_eval(settings, db, eval_config_from_yaml(text))


def config_from_form(
    models: Sequence[str],
    adapter: str | None,
    source: str,
    dataset: str | None,
    dataset_version: int | str | None,
    text_file: str | None,
    metrics: Sequence[str],
    temperature: float,
    max_tokens: int,
    limit: int | None,
    judge_model: str | None = None,
    name: str = "",
) -> EvalConfig:
    """The Evaluate tab's form as an :class:`EvalConfig`; one ``adapter`` applies to every chosen model (a
    second entry without it is added when the base model should be compared too: pick it twice)."""
    version = int(dataset_version) if dataset_version not in (None, "", "latest") else None
    chosen = [m for m in models if m]
    data: dict[str, Any] = {
        "name": name,
        "models": [{"model": m, "adapter": adapter} if adapter else {"model": m} for m in chosen],
        "metrics": list(metrics),
        "generation": {"temperature": temperature, "max_tokens": int(max_tokens)},
        "limit": int(limit) if limit else None,
    }
    if source == "text":
        data["text_file"] = text_file
    else:
        data["dataset"] = dataset
        data["dataset_version"] = version
    if judge_model:
        data["judge"] = {"model": judge_model}
    return parse_eval_config(data)


def run_progress(job: Job) -> float:
    """How far a run is, 0 to 1: a finished run is complete whatever its last progress report said."""
    return 1.0 if job.state == queue.SUCCEEDED else max(0.0, min(1.0, float(job.progress or 0.0)))


def list_eval_runs(db: Database, limit: int = 100) -> list[Job]:
    """Eval runs, newest first."""
    return queue.list_jobs(db, kind=KIND, limit=limit)


def run_rows(jobs: Sequence[Job]) -> list[list[Any]]:
    """Eval runs as table rows: id, name, state, progress, created, message."""
    return [
        [
            j.id,
            j.name,
            j.state,
            f"{run_progress(j) * 100:.0f}%",
            j.created_at.astimezone().strftime("%Y-%m-%d %H:%M"),
            j.message,
        ]
        for j in jobs
    ]


# --- what the Evaluate tab shows ---------------------------------------------------------------------------------


@dataclass
class ResultsView:
    """Everything the results view shows for one run."""

    results: EvalResults
    headers: list[str]
    rows: list[list[Any]]
    figure: go.Figure | None
    examples: list[list[Any]]
    notes: str
    sort_by: str | None

    @property
    def signature(self) -> tuple[Any, ...]:
        """Changes whenever what is shown would change (the timer redraws only then)."""
        job = self.results.job
        return (job.id, job.state, job.step, job.message)


def results_notes(results: EvalResults) -> str:
    """Markdown: state and progress, unavailable metrics, metric errors (with tracebacks), model errors."""
    job = results.job
    lines = [
        f"**{job.name or job.id}** · `{job.id}` · **{job.state}** · {run_progress(job) * 100:.0f}% · {job.message}"
    ]
    if not results.models and job.state in (queue.QUEUED, queue.RUNNING):
        lines.append("- Scores and the chart appear as soon as the first example is scored.")
    for metric, reason in results.unavailable.items():
        lines.append(f"- Warning: metric **{metric}** unavailable: {reason}")
    for label, reason in results.model_errors.items():
        lines.append(f"- Error: model **{label}** could not run: {reason}")
    for err in results.metric_errors:
        trace = str(err.get("traceback", "")).replace("```", "'''")
        lines.append(
            f"- Error: metric **{err['metric']}** raised on {err['count']} example(s) (first: model {err['model']}, "
            f"example {int(err['example']) + 1}); the rest of the run completed.\n\n```text\n{trace}\n```"
        )
    return "\n".join(lines)


def results_view(
    db: Database, job_id: str, model: str | None = None, sort_by: str | None = None, limit: int = 200
) -> ResultsView:
    """The metric × model table, the bar chart, the worst-first examples and the notes of one run."""
    results = get_results(db, job_id)
    key = sort_by if sort_by in results.metric_keys() else default_sort_key(results)
    headers, rows = results.table()
    return ResultsView(
        results=results,
        headers=headers,
        rows=rows,
        figure=bar_figure(results),
        examples=example_rows(db, results.job.id, model or None, key, limit),
        notes=results_notes(results),
        sort_by=key,
    )


def latest_run_id(db: Database) -> str:
    """The newest eval run's id ("" when there is none)."""
    runs = list_eval_runs(db, limit=1)
    return runs[0].id if runs else ""


def model_choices(resolver: Any) -> list[str]:
    """Models the form offers: user aliases, then every model the registry finds (remote ones included)."""
    return list(dict.fromkeys(view.config.alias for view in resolver.list_aliases()))


def adapter_choices(settings: Settings) -> list[str]:
    """Adapter names under ``STUDIO_HOME/adapters`` (folders with an ``adapter_config.json``)."""
    folder = settings.home / "adapters"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "adapter_config.json").is_file())


def version_choices(store: Any, name: str | None) -> list[tuple[str, str]]:
    """``(label, value)`` pairs for the version picker: "latest" first, then each version."""
    out = [("latest", "latest")]
    if name:
        try:
            versions = store.versions(name)
        except Exception:  # a dataset deleted meanwhile: only "latest" to offer
            versions = []
        out += [(f"v{v.number} · {v.num_examples} examples · {v.content_hash[:8]}", str(v.number)) for v in versions]
    return out
