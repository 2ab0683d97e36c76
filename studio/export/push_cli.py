"""``studio push``: push an adapter, an export or a model to the Hugging Face Hub with a generated model card.

    studio push SOURCE REPO_ID [--public] [--message M] [--token-file F] [--background] [--json]

SOURCE is a registered adapter's name, an export's name (``STUDIO_HOME/exports/<name>``), a model id or a folder under
STUDIO_HOME or the model roots. The push runs as a ``push`` job (:mod:`studio.export.push`), here in the foreground
with its steps printed; ``--background`` only queues it for the server's worker. The token comes from
``--token-file`` (a file holding it: a token on the command line would show in ``ps`` and the shell's history), else
``STUDIO_HF_TOKEN`` / ``HF_TOKEN`` / ``hf auth login``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from studio.errors import ValidationError
from studio.settings import Settings

POLL_S = 0.3


def _read_token_file(text: str) -> str:
    path = Path(text)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(
            f"'token_file': cannot read '{text}' ({type(exc).__name__})", param="token_file"
        ) from None
    if not token or len(token) > 1000 or any(c.isspace() for c in token):
        raise ValidationError(
            f"'token_file': '{text}' does not hold one token (one word, no spaces)", param="token_file"
        )
    return token


def cmd_push(args: argparse.Namespace) -> int:
    from studio.db.engine import Database
    from studio.export.push import submit_push
    from studio.jobs import queue
    from studio.jobs.worker import Worker, WorkerOptions

    logging.getLogger("httpx2").setLevel(logging.WARNING)
    settings = Settings()
    settings.ensure_dirs()
    token = _read_token_file(args.token_file) if args.token_file else None
    db = Database(settings.db_url)
    try:
        # a slot of its own: this process runs the job now, whatever else is queued for the server's worker
        slot = "cpu" if args.background else f"push-{os.getpid()}"
        job = submit_push(
            settings,
            db,
            args.source,
            args.repo_id,
            private=not args.public,
            token=token,
            commit_message=args.message,
            device=slot,
        )
        if args.background:
            print(f"queued push job {job.id} (studio jobs show {job.id}; the server's worker runs it)")
            return 0
        worker = Worker(settings, db, options=WorkerOptions(device=slot, poll_s=0.2, cancel_grace_s=10.0))
        runner = threading.Thread(target=worker.run_once, name="push", daemon=True)
        runner.start()
        last = ""
        while runner.is_alive():
            try:
                runner.join(POLL_S)
            except KeyboardInterrupt:
                worker.stop()
                continue
            message = queue.get_job(db, job.id).message or ""
            if message and message != last and not args.json:
                print(message, flush=True)
                last = message
        final = queue.get_job(db, job.id)
        return _report(final, args.json)
    finally:
        db.dispose()


def _report(job: Any, as_json: bool) -> int:
    if job.state == "succeeded":
        result = job.result or {}
        if as_json:
            print(json.dumps({"job_id": job.id, **result}, indent=2))
        else:
            print(f"pushed {len(result.get('files', []))} files to {result.get('url')} (job {job.id})")
        return 0
    print(f"{job.state}: {job.message} (job {job.id})", file=sys.stderr)
    return 1


def register(sub: Any) -> None:
    """Add ``studio push`` to ``studio``'s sub-parsers."""
    push = sub.add_parser(
        "push", help="push an adapter, export or model to the Hugging Face Hub (with a generated model card)"
    )
    push.add_argument("source", help="an adapter name, an export name, a model id, or a folder under STUDIO_HOME")
    push.add_argument("repo_id", help="the Hub repo, e.g. your-name/my-adapter (created when missing)")
    push.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    push.add_argument("--message", help="the commit message")
    push.add_argument(
        "--token-file", help="a file holding a Hub token with write access (default: HF_TOKEN or the saved login)"
    )
    push.add_argument("--background", action="store_true", help="only queue the push for the server's worker")
    push.add_argument("--json", action="store_true", help="print the result as JSON")
    push.set_defaults(func=cmd_push)
