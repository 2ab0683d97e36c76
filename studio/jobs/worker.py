"""The worker: claims queued jobs of one device slot and runs each in its own process, watching over it.

Loop: mark orphaned jobs ``interrupted`` (``queue.recover_orphans``), claim the next job, start
``python -m studio.jobs.child`` for it in a new process group (its output -- library warnings, progress bars,
a crash's traceback -- goes to ``runs/<job>/output.txt``; ``log.txt`` holds only what the job and the worker
write, so the log a user reads is the job's own), and until it exits: renew the job's heartbeat, sample its
process tree into ``job_resource`` every ``resource_s`` (``studio.monitoring.jobs``),
notice a cancel request (the job stops by itself at its next step; if it has not within ``cancel_grace_s`` the
group gets SIGTERM, then SIGKILL ``kill_after_s`` later), notice that the job was taken away (kill at once).
After the exit the whole group is killed (nothing the job started survives it) and, if the job process wrote
no final state, the worker writes one naming the exit code or signal.

Stopping the worker (``stop()``, SIGTERM to ``studio worker``) asks the running job to stop at its next step
(it ends ``interrupted`` with a checkpoint, resumable) and kills it after ``cancel_grace_s``. A worker killed
outright takes its job process with it (parent-death signal); the next worker on the host sees the dead worker
pid (on another host: the stale heartbeat) and marks the job ``interrupted``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType

from sqlalchemy.exc import SQLAlchemyError

from studio.db.engine import Database
from studio.db.tables import Job
from studio.jobs import queue
from studio.jobs.procs import child_env, describe_exit, die_with_parent, signal_group
from studio.jobs.queue import Lease
from studio.monitoring.jobs import JobSampler
from studio.monitoring.system import Nvml
from studio.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker paces itself. Times in seconds."""

    poll_s: float = 1.0  # wait between two looks at an empty queue
    device: str = "cpu"  # the device slot it serves
    stale_after_s: float = queue.DEFAULT_STALE_AFTER_S  # a running job without heartbeat this long is orphaned
    heartbeat_s: float = 5.0  # how often the job's heartbeat is renewed while its process lives
    cancel_grace_s: float = 30.0  # how long a cancelled (or shut-down) job may take to stop by itself
    kill_after_s: float = 5.0  # after SIGTERM, how long until SIGKILL
    watch_s: float = 0.2  # how often the job process is looked at
    resource_s: float = 5.0  # how often the job's process tree is sampled into job_resource (0: never)


class Worker:
    """Runs queued jobs of one device slot, one at a time, each in a child process."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        worker_id: str | None = None,
        options: WorkerOptions | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.worker_id = worker_id or queue.default_worker_id()
        self.options = options or WorkerOptions()
        self._stop = threading.Event()
        #: the process of the job being run, while there is one
        self.process: subprocess.Popen[bytes] | None = None
        self._nvml: Nvml | None = None  # opened at the first sampled job: GPU memory of its processes

    def stop(self) -> None:
        """Stop claiming; a running job is asked to stop at its next step (ends ``interrupted``)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called."""
        return self._stop.is_set()

    def run_forever(self) -> None:
        """Claim and run jobs until ``stop()``."""
        log.info("worker %s serving device %s", self.worker_id, self.options.device)
        while not self._stop.is_set():
            try:
                job = self.run_once()
            except Exception:  # a DB hiccup must not end the worker; say so and try again
                log.exception("worker %s: error while looking for or running a job", self.worker_id)
                job = None
            if job is None:
                self._stop.wait(self.options.poll_s)
        log.info("worker %s stopped", self.worker_id)

    def run_once(self) -> Job | None:
        """Recover orphans, claim one job and run it to its end; returns its final row (None if none was ready)."""
        for job in queue.recover_orphans(self.db, stale_after_s=self.options.stale_after_s):
            log.warning("job %s: %s", job.id, job.message)
        if self._stop.is_set():
            return None
        claimed = queue.claim_next(self.db, self.worker_id, device=self.options.device)
        return self.run_job(claimed) if claimed is not None else None

    def run_job(self, job: Job) -> Job:
        """Run a job this worker has claimed in a child process and see it to a final state."""
        lease = Lease.of(job)
        folder = queue.run_dir(self.settings, job.id)
        folder.mkdir(parents=True, exist_ok=True)
        log_file = queue.log_path(self.settings, job.id)
        command = [sys.executable, "-m", "studio.jobs.child", job.id, lease.worker_id, str(lease.attempt)]
        env = child_env(self.settings, self.db.url, parent_pid=os.getpid())
        log.info("job %s (%s): starting its process", job.id, job.kind)
        with open(queue.output_path(self.settings, job.id), "ab") as out:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: one killpg ends everything it started
            )
        self.process = proc
        try:
            queue.set_pid(self.db, lease, proc.pid)
            ending = self._watch(proc, lease, self._sampler(job.id, proc.pid))
        finally:
            signal_group(proc.pid, signal.SIGKILL)  # whatever the job left behind dies with it
            if proc.poll() is None:
                proc.wait()
            self.process = None
        self._record_exit(lease, proc.returncode, ending, log_file)
        final = queue.get_job(self.db, job.id)
        log.info("job %s: %s (%s)", job.id, final.state, final.message)
        return final

    def _sampler(self, job_id: str, pid: int) -> JobSampler | None:
        """The sampler of the job's process tree (None when ``resource_s`` is 0)."""
        if self.options.resource_s <= 0:
            return None
        if self._nvml is None:
            self._nvml = Nvml()
        return JobSampler(job_id, pid, self.options.device, self._nvml)

    def _watch(self, proc: subprocess.Popen[bytes], lease: Lease, sampler: JobSampler | None = None) -> str | None:
        """Wait for the job process (sampling its resources with ``sampler``); returns why the worker ended it
        ("cancel", "shutdown", "lost"), "finished" when it wrote its final state and then was slow to exit, or
        None."""
        opts = self.options
        check_every = min(1.0, opts.heartbeat_s)
        last_check = last_beat = last_sample = time.monotonic()
        cancel_seen: float | None = None
        shutdown_seen: float | None = None
        term_sent: float | None = None
        ending: str | None = None
        while True:
            try:
                proc.wait(timeout=opts.watch_s)
                return ending
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if sampler is not None and now - last_sample >= opts.resource_s:
                last_sample = now
                sampler.record(self.db)
            if now - last_check >= check_every:
                last_check = now
                try:
                    status = queue.check_lease(self.db, lease)
                    if status != "lost" and now - last_beat >= opts.heartbeat_s:
                        last_beat = now
                        queue.heartbeat(self.db, lease)
                except SQLAlchemyError as exc:  # a database hiccup must not kill hours of training
                    log.warning("job %s: cannot reach the database (%s); will retry", lease.job_id, exc)
                    status = "ok"
                if status == "lost" and queue.finished_under(self.db, lease):
                    return self._let_exit(proc, lease)
                if status == "lost":
                    log.warning("job %s was taken from this worker; killing its process", lease.job_id)
                    signal_group(proc.pid, signal.SIGKILL)
                    return "lost"
                if status == "cancel_requested" and cancel_seen is None:
                    cancel_seen = now
            if self._stop.is_set() and shutdown_seen is None:
                shutdown_seen = now
                ending = ending or "shutdown"
                signal_group(proc.pid, signal.SIGTERM)  # the job process stops at its next step
            if term_sent is None:
                if cancel_seen is not None and now - cancel_seen > opts.cancel_grace_s:
                    ending = "cancel"
                    log.warning("job %s did not stop within %.0f s; terminating it", lease.job_id, opts.cancel_grace_s)
                    signal_group(proc.pid, signal.SIGTERM)
                    term_sent = now
                elif shutdown_seen is not None and now - shutdown_seen > opts.cancel_grace_s:
                    signal_group(proc.pid, signal.SIGTERM)
                    term_sent = now
            elif now - term_sent > opts.kill_after_s:
                signal_group(proc.pid, signal.SIGKILL)

    def _let_exit(self, proc: subprocess.Popen[bytes], lease: Lease) -> str:
        """The job process wrote its final state and is exiting (freeing torch, threads, files): give it
        ``kill_after_s`` more, then end it."""
        try:
            proc.wait(timeout=self.options.kill_after_s)
        except subprocess.TimeoutExpired:
            log.info("job %s finished but its process is still exiting; ending it", lease.job_id)
            signal_group(proc.pid, signal.SIGKILL)
        return "finished"

    def _record_exit(self, lease: Lease, returncode: int, ending: str | None, log_file: Path) -> None:
        """Write the final state when the job process ended without writing one itself."""
        if ending in ("lost", "finished") or queue.check_lease(self.db, lease) == "lost":
            return  # it wrote its final state, or it was taken from us: nothing to add
        job = queue.get_job(self.db, lease.job_id)
        checkpoint = f"; last checkpoint {job.checkpoint_path}" if job.checkpoint_path else ""
        how = describe_exit(returncode, oom_hint=ending is None)
        if ending == "cancel":
            state = queue.CANCELLED
            grace = f"{self.options.cancel_grace_s:g} s"
            message = f"cancelled: the job did not stop within {grace}, so its process {how}{checkpoint}"
        elif ending == "shutdown":
            state = queue.INTERRUPTED
            message = f"interrupted: the worker shut down and the job process {how}{checkpoint}; resume it"
        else:
            state = queue.FAILED
            message = f"the job process {how} before it finished (at step {job.step}){checkpoint}"
            last_line = queue.tail_lines(queue.output_path(self.settings, job.id), n=1).strip()
            if returncode > 0 and last_line:
                message += f"; its last output: {last_line[:300]}"
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with open(log_file, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} worker {self.worker_id}: {message}\n")
        queue.finish(self.db, lease, state, message=message)


def run_worker_forever(
    settings: Settings,
    db: Database | None = None,
    once: bool = False,
    options: WorkerOptions | None = None,
    worker_id: str | None = None,
) -> int:
    """``studio worker``: serve the queue until SIGTERM/SIGINT (or one job with ``once``); returns an exit code.

    SIGTERM or Ctrl-C stops claiming and asks the running job to stop at its next step (it ends
    ``interrupted``, resumable); a second one is not needed, the job is killed after the grace period.
    """
    die_with_parent(signal.SIGTERM)  # when started by a server: stop (gracefully) if the server dies
    settings.ensure_dirs()
    own_db = db is None
    database = db if db is not None else Database(settings.db_url)
    worker = Worker(settings, database, worker_id=worker_id, options=options)

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("worker %s: %s received, stopping", worker.worker_id, signal.Signals(signum).name)
        worker.stop()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if once:
            job = worker.run_once()
            if job is None:
                log.info("no job ready on device %s", worker.options.device)
        else:
            worker.run_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if own_db:
            database.dispose()
    return 0


class BackgroundWorker:
    """A ``studio worker`` process started by the server; ``stop()`` ends it (and its job) cleanly."""

    def __init__(self, process: subprocess.Popen[bytes], log_file: Path, grace_s: float) -> None:
        self.process = process
        self.log_file = log_file
        self._grace_s = grace_s

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.process.pid

    def alive(self) -> bool:
        """True while the worker process runs."""
        return self.process.poll() is None

    def stop(self, timeout_s: float | None = None) -> int:
        """SIGTERM the worker, wait (its job gets the grace period), then SIGKILL; returns its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s if timeout_s is not None else self._grace_s + 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def start_background_worker(
    settings: Settings,
    database_url: str | None = None,
    device: str = "cpu",
    poll_s: float = 1.0,
    log_file: Path | None = None,
) -> BackgroundWorker:
    """Start ``studio worker`` as a subprocess of this one (the server calls this unless told not to).

    Its output goes to ``STUDIO_HOME/logs/worker.log``; it stops by itself (interrupting its job cleanly) if this
    process dies, so no worker outlives the server that started it.
    """
    target = log_file or settings.home / "logs" / "worker.log"
    target.parent.mkdir(parents=True, exist_ok=True)
    env = child_env(settings, database_url or settings.db_url, parent_pid=os.getpid())
    command = [sys.executable, "-m", "studio.jobs.cli", "worker", "--poll", str(poll_s), "--device", device]
    with open(target, "ab") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
    log.info("started worker process %d (log: %s)", process.pid, target)
    return BackgroundWorker(process, target, grace_s=WorkerOptions().cancel_grace_s)
