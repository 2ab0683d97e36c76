"""The ``studio export ...`` verbs. ``register(subparsers)`` adds them to ``studio``'s parser.

    studio export merged|gguf|onnx|triton|docker MODEL [--adapter A] [--quant Q] [--dtype D] [--name N]
                                                  [--no-register] [--no-wait] [--json]
    studio export list [--check] [--json]
    studio export show NAME [--json]
    studio export install-converter [--sdist FILE]

An export is a job (kind ``export``, :mod:`studio.export.job`): the verb checks the request at once (a missing
model or adapter, an absent base, a bad name is an error before anything is queued), queues the job and waits for
it, running it here when no worker takes it within a few seconds (``--no-wait``: print the job id and return).
Exit status 0 when the export succeeded, 1 when it failed (its reason is printed), 2 for a refused request.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from studio.db.engine import Database
from studio.errors import StudioError
from studio.jobs import queue
from studio.settings import Settings

WAIT_FOR_WORKER_S = 3.0


def _database(settings: Settings) -> Database:
    settings.ensure_dirs()
    return Database(settings.db_url)


def _wait(settings: Settings, db: Database, job_id: str, quiet: bool, poll_s: float = 0.5) -> Any:
    """Block until the job ends (running it here if no worker claims it); returns its final row."""
    from studio.jobs.worker import Worker

    waited = 0.0
    last = ""
    while True:
        job = queue.get_job(db, job_id)
        if job.state in queue.FINAL_STATES:
            return job
        line = f"{job.state} {job.progress * 100:.0f}% {job.message}"
        if line != last and not quiet:
            print(line, file=sys.stderr)
            last = line
        if job.state == queue.QUEUED and waited >= WAIT_FOR_WORKER_S:
            Worker(settings, db).run_once()
            continue
        time.sleep(poll_s)
        waited += poll_s


def cmd_export_run(args: argparse.Namespace) -> int:
    """Queue one export and (unless ``--no-wait``) see it to its end."""
    settings = Settings()
    db = _database(settings)
    config: dict[str, Any] = {"format": args.format, "model": args.model, "adapter": args.adapter,
                              "quant": args.quant, "dtype": args.dtype, "name": args.name,
                              "register_model": not args.no_register}  # fmt: skip
    try:
        job = queue.submit(db, "export", config, settings=settings)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.no_wait:
        print(json.dumps({"job_id": job.id, "name": job.name}) if args.json else job.id)
        return 0
    final = _wait(settings, db, job.id, quiet=args.json)
    ok = final.state == queue.SUCCEEDED and not (final.result or {}).get("stopped")
    if args.json:
        print(json.dumps({"job_id": final.id, "state": final.state, "message": final.message,
                          "result": final.result}, indent=2, default=str))  # fmt: skip
        return 0 if ok else 1
    if not ok:
        print(f"export {final.state}: {final.message}", file=sys.stderr)
        return 1
    result = final.result or {}
    print(f"exported {result.get('format')} '{result.get('name')}' to {result.get('path')}")
    verification = result.get("verification") or {}
    print(
        f"checked on {result.get('engine')}: {verification.get('prompts_identical')}/{verification.get('prompts')} "
        f"prompts identical, token agreement {100 * float(verification.get('token_agreement', 0)):.1f}%"
    )
    if result.get("registered_as"):
        print(f"registered as model '{result['registered_as']}'")
    for note in result.get("notes") or []:
        print(f"note: {note}")
    return 0


def cmd_export_list(args: argparse.Namespace) -> int:
    """Every finished export (``--check``: each file against the manifest's sha256)."""
    from studio.export.exporter import list_exports

    items = list_exports(Settings(), check=args.check)
    if args.json:
        print(json.dumps([i.to_dict() for i in items], indent=2, default=str))
        return 0
    if not items:
        print("no exports in $STUDIO_HOME/exports")
        return 0
    for item in items:
        verification = item.verification or {}
        agreement = verification.get("token_agreement")
        shown = f"{100 * float(agreement):.1f}%" if agreement is not None else "-"
        state = "ok" if not item.problems else "; ".join(item.problems)
        print(f"{item.name}\t{item.format}\t{item.size_bytes / 1e6:.1f} MB\tagreement {shown}\t"
              f"{item.registered_as or '-'}\t{state if args.check else ''}".rstrip())  # fmt: skip
    return 0 if all(not i.problems for i in items) else 1


def cmd_export_show(args: argparse.Namespace) -> int:
    """One export's manifest."""
    from studio.export.exporter import get_export
    from studio.export.manifest import read_manifest

    try:
        info = get_export(Settings(), args.name)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = read_manifest(info.path) or {}
    print(json.dumps(data, indent=2, default=str))
    return 0


def cmd_export_install_converter(args: argparse.Namespace) -> int:
    """Install llama.cpp's converter (``make setup`` runs this)."""
    from studio.export.gguf import main

    argv = ["--install-converter", *(["--sdist", str(args.sdist)] if args.sdist else [])]
    return main(argv)


def register(subparsers: Any) -> None:
    """Add ``studio export ...`` to the studio's CLI."""
    from studio.export.gguf import QUANTS
    from studio.export.merge import DTYPES

    export = subparsers.add_parser("export", help="export a model (+ adapter): merged, GGUF, ONNX, Triton, Docker")
    esub = export.add_subparsers(dest="export_command", required=True)
    for fmt, text in (
        ("merged", "the adapter merged into the model, saved as safetensors and registered as a new model"),
        ("gguf", "a GGUF file (llama.cpp's converter and quantizer), registered for the llamacpp engine"),
        ("onnx", "an ONNX model (Optimum's exporter, from .venv-onnx), registered for the onnxruntime engine"),
        ("triton", "a Triton model repository for its vLLM backend (Triton itself is not installed here)"),
        ("docker", "a Docker build context: CPU (llama.cpp or transformers) and GPU (vLLM) Dockerfiles"),
    ):
        p = esub.add_parser(fmt, help=text, description=text)
        p.add_argument("model", help="default, an alias, a model id or a model path")
        p.add_argument("--adapter", help="a registered adapter (or its folder) to merge into the model")
        p.add_argument(
            "--quant", help=f"GGUF type (gguf: default f16; docker: serve a GGUF on CPU): {', '.join(QUANTS)}"
        )
        p.add_argument("--dtype", default="auto", choices=DTYPES, help="weights of a merged model (default auto)")
        p.add_argument("--name", help="export folder name under $STUDIO_HOME/exports (default from model/adapter)")
        p.add_argument("--no-register", action="store_true", help="do not register the export as a model")
        p.add_argument("--no-wait", action="store_true", help="queue the job, print its id and return")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=cmd_export_run, format=fmt)
    ls = esub.add_parser("list", help="finished exports")
    ls.add_argument("--check", action="store_true", help="check every file against the manifest's sha256")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_export_list)
    show = esub.add_parser("show", help="an export's manifest (JSON)")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="(the output is JSON already)")
    show.set_defaults(func=cmd_export_show)
    inst = esub.add_parser("install-converter", help="install llama.cpp's GGUF converter into this venv")
    inst.add_argument("--sdist", help="llama-cpp-python's sdist (.tar.gz) already on disk: no download")
    inst.set_defaults(func=cmd_export_install_converter)
