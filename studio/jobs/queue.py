"""The job queue: ``job`` rows in the database, claimed atomically by workers.

States: ``queued -> running -> succeeded | failed | cancelled | interrupted``; ``resume`` puts an
interrupted, cancelled or failed job back in ``queued`` (keeping its checkpoint). Every transition is one
guarded ``UPDATE ... WHERE state = <expected>``: of two writers racing for the same transition exactly one
changes a row, the other sees a row count of 0 and re-reads.

A running job belongs to one *lease*: the worker that claimed it and the attempt number. The job's process and
its worker write progress, heartbeats and the final state only while the row still carries their lease, so a
job that was declared interrupted (its worker looked dead) and resumed elsewhere is never overwritten by a
straggler.

**Claiming, and one job per device.** ``Job.device`` names a device slot ("cpu", "cuda:0", ...). At most one
job runs per slot among all workers sharing the database; a worker claims jobs of the slot it serves.

- SQLite: one statement, ``UPDATE job SET state='running' ... WHERE id = (<best queued job of the slot>) AND
  state = 'queued' AND NOT EXISTS (<a running job on the slot>) RETURNING id``. SQLite runs writers one at
  a time and a write statement reads the newest data after taking the write lock, so the choice of job and the
  per-slot check happen atomically: two workers can neither take the same job nor start two jobs on one slot.
- PostgreSQL: a transaction takes ``pg_advisory_xact_lock`` on the slot (claims for one slot queue up; other
  slots go on in parallel), checks that nothing runs on the slot, picks the best queued row with
  ``FOR UPDATE SKIP LOCKED`` and updates it. The lock is held until commit, so the next claimer of that slot
  sees the committed ``running`` row.

Several machines sharing one PostgreSQL queue therefore need distinct slot names for jobs that may run at the
same time (e.g. ``cuda:0`` on one host, ``hostb-cuda:0`` on another); two workers serving the same slot name
take turns.

SQLite returns naive datetimes: every stored time is UTC, and every ``Job`` this module returns carries
tz-aware UTC datetimes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pydantic
from sqlalchemy import Table, exists, or_, text, update
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from studio.db.engine import Database
from studio.db.tables import Job, JobMetric, utcnow
from studio.errors import ConflictError, NotFoundError, ValidationError
from studio.jobs.kinds import get_kind
from studio.settings import Settings
from studio.users.acting import current_user_id
from studio.users.ownership import can_see, check_job_quotas, check_owner, visible

log = logging.getLogger(__name__)

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
INTERRUPTED = "interrupted"
STATES: tuple[str, ...] = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
FINAL_STATES: frozenset[str] = frozenset({SUCCEEDED, FAILED, CANCELLED, INTERRUPTED})
RESUMABLE_STATES: frozenset[str] = frozenset({FAILED, CANCELLED, INTERRUPTED})

DEFAULT_STALE_AFTER_S = 60.0
_PG_LOCK_NAMESPACE = 0x57E7  # first key of the per-slot advisory lock ("whetstone jobs")

JOB: Table = Job.__table__  # type: ignore[attr-defined]
_DATETIME_FIELDS = ("not_before", "created_at", "updated_at", "started_at", "finished_at", "heartbeat_at")


@dataclass(frozen=True)
class Lease:
    """Who runs a ``running`` job: the claiming worker and the attempt (``Job.attempts`` when claimed)."""

    job_id: str
    worker_id: str
    attempt: int

    @classmethod
    def of(cls, job: Job) -> Lease:
        """The lease a running ``job`` row carries."""
        if job.state != RUNNING or job.worker_id is None:
            raise ValueError(f"job {job.id} is {job.state}, not running: it has no lease")
        return cls(job.id, job.worker_id, job.attempts)


LeaseStatus = Literal["ok", "cancel_requested", "lost"]


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (naive values, as SQLite returns them, are taken to be UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _normalised(job: Job) -> Job:
    for name in _DATETIME_FIELDS:
        value = getattr(job, name)
        if value is not None:
            setattr(job, name, as_utc(value))
    return job


def default_worker_id() -> str:
    """``<hostname>:<pid>``: what ``recover_orphans`` parses to tell a dead local worker from a live one."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_dir(settings: Settings, job_id: str) -> Path:
    """The job's folder: ``STUDIO_HOME/runs/<job_id>/`` (log, checkpoints, artifact)."""
    return settings.home / "runs" / job_id


def log_path(settings: Settings, job_id: str) -> Path:
    """The job's log file, ``runs/<job_id>/log.txt``: only the lines the job and its worker write (what the UI
    shows)."""
    return run_dir(settings, job_id) / "log.txt"


def output_path(settings: Settings, job_id: str) -> Path:
    """Everything the job's process printed, ``runs/<job_id>/output.txt``: the libraries' warnings and any
    progress bars, kept out of the log, and a traceback if the process died before it could log one."""
    return run_dir(settings, job_id) / "output.txt"


# --- submitting and reading -------------------------------------------------------------------------------


def validate_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` checked against the kind's model and returned as the JSON stored in ``Job.config``.

    Raises ``ValidationError`` naming each bad field (``param`` is the first one) or an unknown kind.
    """
    job_kind = get_kind(kind)
    try:
        model = job_kind.config_model.model_validate(config)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(config)"
            problems.append(f"{where}: {err['msg']}")
        first = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else None
        raise ValidationError(f"invalid {kind} job config: " + "; ".join(problems), param=first or "config") from None
    return model.model_dump(mode="json")


def submit(
    db: Database,
    kind: str,
    config: dict[str, Any],
    name: str = "",
    priority: int | None = None,
    not_before: datetime | None = None,
    device: str = "cpu",
    tags: Sequence[str] = (),
    settings: Settings | None = None,
    private: bool = False,
) -> Job:
    """Queue a new job after validating ``config`` with its kind's model; returns the stored row.

    The checks and the row are :func:`build_job`'s; this stores it.
    """
    job = build_job(db, kind, config, name, priority, not_before, device, tags, settings, private)
    with db.session() as session:
        session.add(job)
    return _normalised(job)


def build_job(
    db: Database,
    kind: str,
    config: dict[str, Any],
    name: str = "",
    priority: int | None = None,
    not_before: datetime | None = None,
    device: str = "cpu",
    tags: Sequence[str] = (),
    settings: Settings | None = None,
    private: bool = False,
) -> Job:
    """The ``queued`` row :func:`submit` stores, built and checked but not stored (a sweep stores all its jobs in
    one transaction).

    With ``settings``, the kind's ``prepare`` hook also checks the config against this studio (the dataset
    exists, the base model resolves) and pins what it refers to (the dataset version and its hash).

    ``name``, ``priority`` and ``not_before`` given here win; left out, they come from fields of the same
    name in the config when its kind has them (a fine-tuning config carries its schedule), else "", 0, None.
    When the config has such a field, it is set to the value used, so the stored config and the row agree.
    Higher ``priority`` runs first, ties in submission order; ``not_before`` (naive means this machine's local
    time) keeps the job queued until then. The signed-in user (if any) owns it; ``private`` hides it from the
    rest of the team.
    """
    fields = get_kind(kind).config_model.model_fields
    merged = dict(config)
    if name and "name" in fields:
        merged["name"] = name
    if priority is not None and "priority" in fields:
        merged["priority"] = priority
    if not_before is not None and "not_before" in fields:
        merged["not_before"] = not_before
    stored = validate_config(kind, merged)
    job_kind = get_kind(kind)
    if settings is not None and job_kind.prepare is not None:
        prepared = job_kind.prepare(job_kind.config_model.model_validate(stored), settings, db)
        stored = prepared.model_dump(mode="json")
    name = name or str(stored.get("name") or "")
    if priority is None:
        priority = int(stored.get("priority") or 0)
    if not_before is None and stored.get("not_before"):
        not_before = datetime.fromisoformat(str(stored["not_before"]))
    when = not_before.astimezone(UTC) if not_before is not None else None
    if not device or len(device) > 32:
        raise ValidationError(f"device must have 1-32 characters; got {device!r}", param="device")
    if len(name) > 200:
        raise ValidationError(f"a job name has at most 200 characters; got {len(name)}", param="name")
    check_job_quotas(db, device)  # the signed-in user's queued-jobs and GPU-hours quotas (429)
    job = Job(
        owner_id=current_user_id(),
        private=private,
        kind=kind,
        name=name,
        priority=priority,
        not_before=when,
        device=device,
        config=stored,
        tags=list(tags),
        message="queued" if when is None else f"queued; not before {when.isoformat(timespec='seconds')}",
    )
    return job


def get_job(db: Database, job_id: str) -> Job:
    """The job with id ``job_id`` (or a unique prefix of at least 4 characters of it)."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None and len(job_id) >= 4 and job_id.isalnum():
            matches = session.exec(select(Job).where(col(Job.id).startswith(job_id)).limit(2)).all()
            if len(matches) > 1:
                raise ValidationError(f"job id prefix {job_id!r} matches several jobs; give more of it", param="id")
            job = matches[0] if matches else None
    if job is not None and not can_see(job.owner_id, job.private):
        job = None  # another user's private job: as if there were none
    if job is None:
        raise NotFoundError(f"job {job_id!r} not found (studio jobs list shows the jobs)", param="id")
    return _normalised(job)


def list_jobs(db: Database, state: str | None = None, kind: str | None = None, limit: int = 100) -> list[Job]:
    """Jobs newest first, optionally only those in ``state`` and/or of ``kind``."""
    if state is not None and state not in STATES:
        raise ValidationError(f"unknown job state {state!r}; states: {', '.join(STATES)}", param="state")
    query = visible(select(Job), Job.owner_id, Job.private)
    if state is not None:
        query = query.where(col(Job.state) == state)
    if kind is not None:
        query = query.where(col(Job.kind) == kind)
    query = query.order_by(col(Job.created_at).desc(), col(Job.id).desc()).limit(max(1, limit))
    with db.session() as session:
        return [_normalised(job) for job in session.exec(query).all()]


def job_metrics(db: Database, job_id: str) -> list[JobMetric]:
    """Every metric point of a job in step order (the curves of the Fine-Tune monitor)."""
    query = select(JobMetric).where(col(JobMetric.job_id) == job_id).order_by(col(JobMetric.step), col(JobMetric.id))
    with db.session() as session:
        return list(session.exec(query).all())


def log_tail(settings: Settings, job_id: str, n: int = 50) -> str:
    """The last ``n`` lines of the job's log ("" while there is none). Reads only the end of big logs."""
    return tail_lines(log_path(settings, job_id), n)


def tail_lines(path: Path, n: int = 50) -> str:
    """The last ``n`` lines of a text file ("" when it does not exist), reading only its end."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            chunk = 8192
            data = b""
            while size > 0 and data.count(b"\n") <= n:
                step = min(chunk, size)
                size -= step
                fh.seek(size)
                data = fh.read(step) + data
                chunk *= 2
    except FileNotFoundError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-n:]) if n > 0 else ""


# --- claiming ---------------------------------------------------------------------------------------------


def claim_next(db: Database, worker_id: str, device: str = "cpu", now: datetime | None = None) -> Job | None:
    """Atomically take the best runnable queued job of slot ``device`` for ``worker_id``.

    Runnable: ``not_before`` unset or past, and no other job running on the slot. Best: highest priority,
    then oldest. Returns the job (now ``running``, ``started_at``/``heartbeat_at`` set) or None.
    """
    moment = as_utc(now) if now is not None else utcnow()
    values: dict[str, Any] = {
        "state": RUNNING,
        "worker_id": worker_id,
        "pid": None,
        "started_at": moment,
        "heartbeat_at": moment,
        "updated_at": moment,
        "finished_at": None,
        "cancel_requested": False,
        "message": f"started by worker {worker_id}",
    }
    ready = [
        JOB.c.state == QUEUED,
        JOB.c.device == device,
        or_(JOB.c.not_before.is_(None), JOB.c.not_before <= moment),
    ]
    order = (JOB.c.priority.desc(), JOB.c.created_at, JOB.c.id)
    if db.engine.dialect.name == "postgresql":
        with db.engine.begin() as conn:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:ns, hashtext(:slot))"),
                {"ns": _PG_LOCK_NAMESPACE, "slot": device},
            )
            busy = conn.execute(
                sa_select(JOB.c.id).where(JOB.c.state == RUNNING, JOB.c.device == device).limit(1)
            ).first()
            if busy is not None:
                return None
            row = conn.execute(
                sa_select(JOB.c.id).where(*ready).order_by(*order).limit(1).with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            job_id = str(row[0])
            taken = conn.execute(update(JOB).where(JOB.c.id == job_id, JOB.c.state == QUEUED).values(**values))
            if taken.rowcount != 1:  # cannot happen under the row lock; never hand out a job twice regardless
                return None
    else:
        # aliases keep the subqueries from being correlated with the row being updated
        pick = JOB.alias("pick")
        busy_job = JOB.alias("busy")
        best = (
            sa_select(pick.c.id)
            .where(
                pick.c.state == QUEUED,
                pick.c.device == device,
                or_(pick.c.not_before.is_(None), pick.c.not_before <= moment),
            )
            .order_by(pick.c.priority.desc(), pick.c.created_at, pick.c.id)
            .limit(1)
            .scalar_subquery()
        )
        running_on_slot = exists(
            sa_select(busy_job.c.id).where(busy_job.c.state == RUNNING, busy_job.c.device == device)
        )
        statement = (
            update(JOB)
            .where(JOB.c.id == best, JOB.c.state == QUEUED, ~running_on_slot)
            .values(**values)
            .returning(JOB.c.id)
        )
        with db.engine.begin() as conn:
            row = conn.execute(statement).first()
        if row is None:
            return None
        job_id = str(row[0])
    return get_job(db, job_id)


# --- transitions ------------------------------------------------------------------------------------------


#: Called once after a job reaches a final state (succeeded, failed, cancelled, interrupted), in the process that
#: ended it: ``hook(db, job)``. Notifications register here (studio.notifications); a failing hook is logged, never
#: raised into the job's own bookkeeping.
JOB_END_HOOKS: list[Callable[[Database, Job], None]] = []


def _transition(
    db: Database, job_id: str, from_states: Sequence[str], values: dict[str, Any], lease: Lease | None = None
) -> bool:
    """One guarded UPDATE; True if this call made the change (the row was in one of ``from_states``)."""
    conditions = [JOB.c.id == job_id, JOB.c.state.in_(list(from_states))]
    if lease is not None:
        conditions += [JOB.c.worker_id == lease.worker_id, JOB.c.attempts == lease.attempt]
    with db.engine.begin() as conn:
        result = conn.execute(update(JOB).where(*conditions).values(updated_at=utcnow(), **values))
    changed = bool(result.rowcount == 1)
    if changed and values.get("state") in FINAL_STATES:
        _job_ended(db, job_id)
    return changed


def _job_ended(db: Database, job_id: str) -> None:
    import studio.jobs.sweeps  # registers its hook: a sweep's budget and continue_on_error
    import studio.notifications.service  # noqa: F401  (registers its hook: a notification per ended job)

    try:
        with db.session() as session:
            job = session.get(Job, job_id)
        if job is None:
            return
        for hook in list(JOB_END_HOOKS):
            try:
                hook(db, _normalised(job))
            except Exception:
                log.exception("job-end hook %s failed for job %s", getattr(hook, "__name__", hook), job_id)
    except Exception:
        log.exception("could not run the job-end hooks of job %s", job_id)


def can_cancel(job: Job) -> bool:
    """Whether cancelling ``job`` would still stop something: it is queued, or running and not yet asked to stop.
    A UI offers its Cancel button only then."""
    return job.state == QUEUED or (job.state == RUNNING and not job.cancel_requested)


def request_cancel(db: Database, job_id: str) -> Job:
    """Cancel a job: a queued one at once; a running one is asked to stop (it saves a checkpoint at its next
    step, and its worker kills it if it does not stop within the grace period)."""
    check_owner(f"job {job_id}", get_job(db, job_id).owner_id, db)
    for _ in range(5):  # the state may change under us (claimed, finished): re-read and decide again
        job = get_job(db, job_id)
        if job.state == QUEUED:
            ended = {"state": CANCELLED, "finished_at": utcnow(), "message": "cancelled before it started"}
            if _transition(db, job.id, [QUEUED], ended):
                return get_job(db, job.id)
        elif job.state == RUNNING:
            if _transition(
                db,
                job.id,
                [RUNNING],
                {"cancel_requested": True, "message": "cancel requested; stopping at the next step"},
            ):
                return get_job(db, job.id)
        else:
            raise ConflictError(f"job {job.id} has already ended ({job.state}); there is nothing to cancel")
    raise ConflictError(f"job {job_id} kept changing state; try cancelling again")


def resume(db: Database, job_id: str) -> Job:
    """Queue an interrupted, cancelled or failed job again; it continues from its last checkpoint.

    A failed or cancelled job needs a checkpoint (otherwise submit its config again); an interrupted job
    without one starts over.
    """
    job = get_job(db, job_id)
    check_owner(f"job {job.id}", job.owner_id, db)
    if job.state not in RESUMABLE_STATES:
        raise ConflictError(f"job {job.id} is {job.state}; only interrupted, cancelled or failed jobs can be resumed")
    checkpoint = job.checkpoint_path
    if checkpoint is not None and not Path(checkpoint).exists():
        raise ConflictError(f"job {job.id} cannot resume: its checkpoint {checkpoint} no longer exists")
    if checkpoint is None and job.state != INTERRUPTED:
        raise ConflictError(
            f"job {job.id} ({job.state}) saved no checkpoint to resume from; submit its config again "
            f"(studio jobs show {job.id} --json prints it)"
        )
    message = f"queued to resume from {checkpoint}" if checkpoint else "queued again (no checkpoint: starts over)"
    changed = _transition(
        db,
        job.id,
        [job.state],
        {
            "state": QUEUED,
            "attempts": JOB.c.attempts + 1,
            "cancel_requested": False,
            "finished_at": None,
            "pid": None,
            "eta_s": None,
            "message": message,
        },
    )
    if not changed:
        raise ConflictError(f"job {job.id} changed state while resuming it; look at it again")
    return get_job(db, job.id)


def set_private(db: Database, job_id: str, private: bool) -> Job:
    """Hide a job from the rest of the team (only its owner and admins see it), or share it again."""
    job = get_job(db, job_id)
    check_owner(f"job {job.id}", job.owner_id, db)
    _transition(db, job.id, [job.state], {"private": bool(private)})
    return get_job(db, job.id)


def set_pid(db: Database, lease: Lease, pid: int) -> bool:
    """Record the process running the job (so it can be killed, and recognised after a worker crash)."""
    return _transition(db, lease.job_id, [RUNNING], {"pid": pid}, lease)


def heartbeat(db: Database, lease: Lease) -> bool:
    """Mark the lease alive; False if the job is no longer running under it."""
    return _transition(db, lease.job_id, [RUNNING], {"heartbeat_at": utcnow()}, lease)


def record_progress(db: Database, lease: Lease, **values: Any) -> bool:
    """Update progress columns (step, total_steps, progress, epoch, eta_s, message, checkpoint_path ...) and
    the heartbeat; False if the job is no longer running under ``lease``."""
    return _transition(db, lease.job_id, [RUNNING], {"heartbeat_at": utcnow(), **values}, lease)


def add_metric(db: Database, lease: Lease, step: int, epoch: float | None, values: dict[str, float]) -> None:
    """Store one metric point of the job. A name already recorded at ``step`` is replaced, not repeated: a job
    resumed from a checkpoint runs the steps after it again (the last attempt may have recorded them before it
    died), and each curve keeps one value per step."""
    with db.session() as session:
        earlier = session.exec(
            select(JobMetric).where(col(JobMetric.job_id) == lease.job_id, col(JobMetric.step) == step)
        ).all()
        for row in earlier:
            kept = {name: value for name, value in row.values.items() if name not in values}
            if not kept:
                session.delete(row)
            elif len(kept) < len(row.values):
                row.values = kept
                session.add(row)
        session.add(JobMetric(job_id=lease.job_id, step=step, epoch=epoch, values=dict(values)))


def check_lease(db: Database, lease: Lease) -> LeaseStatus:
    """``"ok"``, ``"cancel_requested"``, or ``"lost"`` when the job no longer runs under ``lease``."""
    with db.engine.connect() as conn:
        row = conn.execute(
            sa_select(JOB.c.state, JOB.c.worker_id, JOB.c.attempts, JOB.c.cancel_requested).where(
                JOB.c.id == lease.job_id
            )
        ).first()
    if row is None or row[0] != RUNNING or row[1] != lease.worker_id or row[2] != lease.attempt:
        return "lost"
    return "cancel_requested" if row[3] else "ok"


def finished_under(db: Database, lease: Lease) -> bool:
    """Whether the job reached a final state while running under ``lease`` (its own process wrote it)."""
    with db.engine.connect() as conn:
        row = conn.execute(
            sa_select(JOB.c.state, JOB.c.worker_id, JOB.c.attempts).where(JOB.c.id == lease.job_id)
        ).first()
    return row is not None and row[0] in FINAL_STATES and row[1] == lease.worker_id and row[2] == lease.attempt


def finish(
    db: Database,
    lease: Lease,
    state: str,
    message: str = "",
    result: dict[str, Any] | None = None,
    artifact_path: str | None = None,
) -> bool:
    """End a running job in a final ``state``; False (and nothing written) if it no longer runs under ``lease``."""
    if state not in FINAL_STATES:
        raise ValueError(f"finish() needs a final state ({', '.join(sorted(FINAL_STATES))}); got {state!r}")
    values: dict[str, Any] = {"state": state, "finished_at": utcnow(), "message": message, "pid": None}
    if state != SUCCEEDED:
        values["eta_s"] = None
    if result is not None:
        values["result"] = result
    if artifact_path is not None:
        values["artifact_path"] = artifact_path
    return _transition(db, lease.job_id, [RUNNING], values, lease)


# --- recovery ---------------------------------------------------------------------------------------------


def parse_worker_id(worker_id: str | None) -> tuple[str, int] | None:
    """``(host, pid)`` from a ``<host>:<pid>`` worker id, or None for ids of another shape."""
    if not worker_id or ":" not in worker_id:
        return None
    host, _, pid = worker_id.rpartition(":")
    return (host, int(pid)) if pid.isdigit() else None


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): os.kill said it exists
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill_job_process_group(job_id: str, pid: int) -> bool:
    """SIGKILL the process group of a job's process ``pid``, if ``pid`` still runs that job's code.

    The command line is checked first so that a recycled pid is never killed. True if a signal was sent.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if "studio.jobs.child" not in cmdline or job_id not in cmdline:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the job process leads its own group (start_new_session)
        return True
    return False


def recover_orphans(
    db: Database,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    host: str | None = None,
    now: datetime | None = None,
) -> list[Job]:
    """Mark ``interrupted`` every running job whose worker is gone (``cancelled`` if a cancel was pending).

    A worker is gone when its id says it ran on this host and its process no longer exists (a worker or server
    killed with ``kill -9``), or when the job's heartbeat is older than ``stale_after_s`` (any host). A job
    process left behind on this host is killed. The message says why; ``resume`` continues the job. Returns
    the jobs it ended.
    """
    this_host = host or socket.gethostname()
    moment = as_utc(now) if now is not None else utcnow()
    with db.session() as session:
        running = [_normalised(job) for job in session.exec(select(Job).where(col(Job.state) == RUNNING)).all()]
    recovered: list[Job] = []
    for job in running:
        owner = parse_worker_id(job.worker_id)
        beat = job.heartbeat_at or job.started_at or job.updated_at
        age = (moment - beat).total_seconds()
        if owner is not None and owner[0] == this_host and not pid_alive(owner[1]):
            reason = (
                f"interrupted: its worker {job.worker_id} stopped while the job was running "
                f"(process {owner[1]} is gone); resume it to continue from its last checkpoint"
            )
        elif age > stale_after_s:
            reason = (
                f"interrupted: no heartbeat from worker {job.worker_id} for {age:.0f} s; "
                "resume it to continue from its last checkpoint"
            )
        else:
            continue
        if job.pid is not None and owner is not None and owner[0] == this_host:
            kill_job_process_group(job.id, job.pid)
        state = INTERRUPTED
        if job.cancel_requested:  # it was being cancelled anyway: that is what the user asked for
            state = CANCELLED
            reason = "cancelled" + reason.removeprefix("interrupted").split("; resume")[0]
        lease = Lease(job.id, job.worker_id or "", job.attempts)
        ended = {"state": state, "finished_at": moment, "message": reason, "pid": None}
        if _transition(db, job.id, [RUNNING], ended, lease):
            recovered.append(get_job(db, job.id))
    return recovered
