"""Everything a user does with audits after (or while) they run: submit, list, read scorecards, review the
generations, export the corrected responses as training data, compare two scorecards.

Storage: the scorecard of a finished audit is its job's ``Job.result`` (also ``runs/<job>/scorecard.json``);
generations and their reviews are :class:`~studio.safety.tables.AuditGeneration` rows. An unfinished audit
(running, cancelled) has no result yet: :func:`audit_scorecard` builds one from the rows stored so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlmodel import col, select

from studio.datasets.schemas import ImportResult
from studio.datasets.store import DatasetStore
from studio.db.engine import Database
from studio.db.tables import Job, utcnow
from studio.errors import NotFoundError, ValidationError
from studio.jobs import queue
from studio.safety.audit import KIND, AuditConfig, audit_policy, build_scorecard, job_generations
from studio.safety.audit_metrics import METRICS, badness
from studio.safety.tables import AuditGeneration
from studio.safety.toxicity import active_scorer
from studio.settings import Settings

Verdict = Literal["acceptable", "problematic"]
VERDICTS: tuple[str, ...] = ("acceptable", "problematic")
EXPORT_SOURCE = "feedback"


def submit_audit(db: Database, settings: Settings, config: AuditConfig | dict[str, Any]) -> Job:
    """Queue an audit job (validated and checked against this studio: prompts expand, model resolves)."""
    data = config.model_dump(mode="json") if isinstance(config, AuditConfig) else dict(config)
    return queue.submit(db, KIND, data, settings=settings)


def list_audits(db: Database, limit: int = 100) -> list[Job]:
    """Audit jobs, newest first."""
    return queue.list_jobs(db, kind=KIND, limit=limit)


def get_audit(db: Database, job_id: str) -> Job:
    """The audit job ``job_id`` (or a unique prefix); ``NotFoundError`` if it is not an audit."""
    job = queue.get_job(db, job_id)
    if job.kind != KIND:
        raise NotFoundError(f"job {job.id} is a {job.kind} job, not an audit", param="job_id")
    return job


def audit_scorecard(db: Database, job_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """The scorecard of an audit: the stored one when the job succeeded, else one built from the generations
    stored so far (``partial: true``; its policy is read through ``settings``, else only a shipped one)."""
    job = get_audit(db, job_id)
    if job.state == queue.SUCCEEDED and job.result.get("categories") is not None:
        return {**job.result, "partial": False, "state": job.state}
    config = AuditConfig.model_validate(job.config)
    policy = audit_policy(config, settings)
    scorecard = build_scorecard(
        config,
        job_generations(db, job.id),
        scorer=active_scorer(policy)[1] if job.result.get("toxicity_scorer") is None else job.result["toxicity_scorer"],
        toxic_threshold=policy.toxicity.threshold,
        job_id=job.id,
    )
    return {**scorecard, "partial": True, "state": job.state}


def audit_label(job: Job) -> str:
    """One line naming an audit in pickers: ``<id8> · <model> · <categories> · <state>``."""
    config = job.config
    what = config.get("model", "?") + (f" + {config['adapter']}" if config.get("adapter") else "")
    name = f"{job.name} · " if job.name else ""
    return f"{job.id[:8]} · {name}{what} · {', '.join(config.get('categories', []))} · {job.state}"


def audit_choices(db: Database, limit: int = 100) -> list[tuple[str, str]]:
    """``(label, job id)`` pairs for a picker, newest first."""
    return [(audit_label(job), job.id) for job in list_audits(db, limit)]


def audit_status(db: Database, job_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Where an audit stands, for polling: state, step/total, progress, message, and its scorecard (partial
    while it runs; None before the first generation is stored)."""
    job = get_audit(db, job_id)
    card = audit_scorecard(db, job.id, settings)
    has_rows = bool(card.get("categories"))
    return {
        "job_id": job.id,
        "label": audit_label(job),
        "state": job.state,
        "step": job.step,
        "total": job.total_steps,
        "progress": 1.0 if job.state == queue.SUCCEEDED else job.progress,
        "message": job.message,
        "scorecard": card if has_rows else None,
    }


def list_generations(
    db: Database,
    job_id: str,
    *,
    category: str | None = None,
    group: str | None = None,
    only: Literal["all", "worst", "unreviewed", "problematic", "corrected"] = "all",
    limit: int = 200,
    settings: Settings | None = None,
) -> list[AuditGeneration]:
    """Generations of an audit for review, worst first (toxicity, then negative sentiment).

    ``only="worst"`` keeps the ones the scorecard links as worst per category; ``unreviewed``, ``problematic``
    and ``corrected`` filter on the review.
    """
    job = get_audit(db, job_id)
    query = select(AuditGeneration).where(col(AuditGeneration.job_id) == job.id)
    if category:
        query = query.where(col(AuditGeneration.category) == category)
    if group:
        query = query.where(col(AuditGeneration.group) == group)
    if only == "unreviewed":
        query = query.where(col(AuditGeneration.review).is_(None))
    elif only == "problematic":
        query = query.where(col(AuditGeneration.review) == "problematic")
    elif only == "corrected":
        query = query.where(col(AuditGeneration.corrected).is_not(None))
    with db.session() as session:
        rows = list(session.exec(query).all())
    if only == "worst":
        linked = {i for cat in audit_scorecard(db, job.id, settings)["categories"].values() for i in cat["worst"]}
        rows = [r for r in rows if r.id in linked]
    rows.sort(key=lambda g: (-badness(g.toxicity, g.sentiment), g.id or 0))
    return rows[: max(1, limit)]


def get_generation(db: Database, generation_id: int) -> AuditGeneration:
    """One audit generation by id."""
    with db.session() as session:
        row = session.get(AuditGeneration, generation_id)
    if row is None:
        raise NotFoundError(f"audit generation {generation_id} not found", param="generation_id")
    return row


def review_generation(
    db: Database,
    generation_id: int,
    verdict: str | None,
    corrected: str | None = None,
    note: str = "",
) -> AuditGeneration:
    """Record a reviewer's verdict (``acceptable`` | ``problematic`` | None to clear) and optional corrected
    response for one generation; returns the updated row. An empty corrected response clears it."""
    if verdict is not None and verdict not in VERDICTS:
        raise ValidationError(f"a review is one of {', '.join(VERDICTS)}, not {verdict!r}", param="review")
    fixed = corrected.strip() if corrected is not None else None
    with db.session() as session:
        row = session.get(AuditGeneration, generation_id)
        if row is None:
            raise NotFoundError(f"audit generation {generation_id} not found", param="generation_id")
        row.review = verdict
        row.corrected = fixed or None
        row.reviewer_note = note.strip()
        row.reviewed_at = utcnow() if verdict is not None or fixed else None
        session.add(row)
    return get_generation(db, generation_id)


def corrected_examples(db: Database, job_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Supervised examples ``{"messages": [user prompt, assistant corrected response]}`` from every generation
    with a corrected response in the given audits (in generation order)."""
    ids = [get_audit(db, j).id for j in job_ids]
    query = (
        select(AuditGeneration)
        .where(col(AuditGeneration.job_id).in_(ids), col(AuditGeneration.corrected).is_not(None))
        .order_by(col(AuditGeneration.id))
    )
    with db.session() as session:
        rows = list(session.exec(query).all())
    return [
        {"messages": [{"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.corrected or ""}]}
        for r in rows
    ]


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_corrected` stored."""

    result: ImportResult
    examples: int
    job_ids: tuple[str, ...]


def export_corrected(
    datasets: DatasetStore, db: Database, job_ids: Sequence[str], name: str, description: str = ""
) -> ExportResult:
    """Store the corrected responses of the audits as a new version of the supervised dataset ``name``
    (created when absent), with ``source="feedback"`` and the audits in its lineage."""
    if not job_ids:
        raise ValidationError("choose at least one audit to export from", param="job_ids")
    examples = corrected_examples(db, job_ids)
    if not examples:
        raise ValidationError(
            "no corrected responses to export yet: review a generation and write a corrected response first",
            param="corrected",
        )
    jobs = [get_audit(db, j) for j in job_ids]
    lineage = {
        "audit_jobs": [j.id for j in jobs],
        "models": sorted(
            {
                str(j.config.get("model")) + (f" + {j.config['adapter']}" if j.config.get("adapter") else "")
                for j in jobs
            }
        ),
        "kind": "audit-corrections",
    }
    result = datasets.create_version(
        name,
        examples,
        source=EXPORT_SOURCE,
        lineage=lineage,
        kind="supervised",
        description=description or "Corrected responses from bias & toxicity audit reviews",
    )
    return ExportResult(result, len(examples), tuple(j.id for j in jobs))


def compare_scorecards(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows comparing two scorecards: one per (category, group, metric) present in either, with both values
    and ``delta = b - a``; plus one row per (category, metric) for the disparity gap (group ``(gap)``)."""
    rows: list[dict[str, Any]] = []
    cats = list(dict.fromkeys([*a.get("categories", {}), *b.get("categories", {})]))
    for cat in cats:
        ca, cb = a.get("categories", {}).get(cat, {}), b.get("categories", {}).get(cat, {})
        groups = list(dict.fromkeys([*ca.get("groups", {}), *cb.get("groups", {})]))
        for metric in METRICS:
            for group in groups:
                va = ca.get("groups", {}).get(group, {}).get(metric)
                vb = cb.get("groups", {}).get(group, {}).get(metric)
                rows.append(_row(cat, group, metric, va, vb))
            ga = ca.get("disparity", {}).get(metric, {}).get("gap")
            gb = cb.get("disparity", {}).get(metric, {}).get("gap")
            rows.append(_row(cat, "(gap)", metric, ga, gb))
    return rows


def _row(category: str, group: str, metric: str, a: float | None, b: float | None) -> dict[str, Any]:
    delta = b - a if a is not None and b is not None else None
    return {"category": category, "group": group, "metric": metric, "a": a, "b": b, "delta": delta}
