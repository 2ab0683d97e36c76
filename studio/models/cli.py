"""``studio models pull`` and ``studio models rm`` (``list`` and ``prepare`` are in :mod:`studio.cli`).

    studio models pull REPO [--file F] [--revision R] [--background]
    studio models rm MODEL [--force]

``pull`` lists the repo (files and size), queues a ``download`` job and runs it here, in the foreground, printing
progress; Ctrl-C stops it and the same ``pull`` (or ``studio jobs resume ID``) goes on from the bytes already
downloaded. ``--background`` only queues it for the server's download worker (``studio serve`` runs one; or
``studio worker --device download``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from typing import Any

from studio.settings import Settings

PRINT_EVERY_S = 2.0


def cmd_models_pull(args: argparse.Namespace) -> int:
    from studio.db.engine import Database
    from studio.jobs.worker import Worker, WorkerOptions
    from studio.models.download import DOWNLOAD_DEVICE, download_status, submit_download
    from studio.models.hub import human_bytes

    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per request would drown the progress
    settings = Settings()
    settings.ensure_dirs()
    db = Database(settings.db_url)
    try:
        # a slot of its own: this process runs the job now, whatever else is queued for the server's worker
        slot = DOWNLOAD_DEVICE if args.background else f"pull-{os.getpid()}"
        job = submit_download(settings, db, args.repo, revision=args.revision, file=args.file, device=slot)
        files = job.config["files"]
        print(
            f"{job.name}: {len(files)} files, {human_bytes(int(job.config['bytes_total']))} to download "
            f"(commit {str(job.config['commit'])[:12]}): {', '.join(files)}",
            flush=True,
        )
        if args.background:
            print(f"queued as job {job.id} (studio jobs show {job.id}; the server's download worker runs it)")
            return 0
        worker = Worker(settings, db, options=WorkerOptions(device=slot, poll_s=0.2, cancel_grace_s=10.0))
        runner = threading.Thread(target=worker.run_once, name="pull", daemon=True)
        runner.start()
        interrupted = False
        last = ""
        shown = 0.0
        while runner.is_alive():
            try:
                runner.join(0.5)
            except KeyboardInterrupt:
                if not interrupted:
                    print("\nstopping; run the same pull again to go on from here", file=sys.stderr)
                    worker.stop()
                interrupted = True
                continue
            status = download_status(db, job.id)
            line = " · ".join(
                part
                for part in (status.progress_text(), status.speed_text(), f"{status.eta_text()} left")
                if not part.startswith("-")
            )
            if status.state == "running" and line != last and time.monotonic() - shown >= PRINT_EVERY_S:
                print(line, flush=True)
                last, shown = line, time.monotonic()
        final = download_status(db, job.id)
        return _report(final, job.id)
    finally:
        db.dispose()


def _report(status: Any, job_id: str) -> int:
    if status.state == "succeeded":
        print(f"downloaded {status.name}: {status.progress_text()}; models: {', '.join(status.models) or '-'}")
        return 0
    print(f"{status.state}: {status.message} (job {job_id})", file=sys.stderr)
    return 1 if status.state == "failed" else 130


def cmd_models_rm(args: argparse.Namespace) -> int:
    from studio.aliases.resolve import AliasResolver
    from studio.aliases.store import AliasStore
    from studio.models.catalog import delete_model
    from studio.models.registry import ModelRegistry

    settings = Settings()
    registry = ModelRegistry(settings)
    resolver = AliasResolver(AliasStore(settings.home / "aliases"), registry)
    removed = delete_model(registry, resolver, args.model, force=args.force)
    print(removed.summary())
    return 0


def register(msub: Any) -> None:
    """Add ``pull`` and ``rm`` to the ``studio models`` sub-parsers."""
    pull = msub.add_parser("pull", help="download a model from the Hugging Face Hub into the Hugging Face cache")
    pull.add_argument("repo", help="repo id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct")
    pull.add_argument("--file", help="GGUF repos: one file name, or a quant such as Q4_K_M")
    pull.add_argument("--revision", help="branch, tag or commit (default: main)")
    pull.add_argument(
        "--background", action="store_true", help="only queue it for the server's download worker and return"
    )
    pull.set_defaults(func=cmd_models_pull)
    rm = msub.add_parser("rm", help="remove a downloaded or local model from disk")
    rm.add_argument("model", help="its id as `studio models list` shows it")
    rm.add_argument("--force", action="store_true", help="remove it even if user aliases use it")
    rm.set_defaults(func=cmd_models_rm)
