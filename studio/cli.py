"""``python -m studio`` / ``studio``: the command line. Each verb calls the same core functions as the UI."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from studio.errors import StudioError
from studio.settings import Settings

log = logging.getLogger("studio")


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def cmd_models_list(args: argparse.Namespace) -> int:
    from studio.models.registry import ModelRegistry

    settings = Settings()
    entries = ModelRegistry(settings).list_models()
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    if not entries:
        print("No models found. Looked in: " + "; ".join(ModelRegistry(settings).searched_locations()))
        return 0
    rows = [("ID", "SOURCE", "FORMAT", "QUANT", "SIZE", "STATUS")]
    for e in entries:
        rows.append((e.id, e.source, e.format, e.quant or "-", _human_size(e.size_bytes), e.problem or "ok"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_models_prepare(args: argparse.Namespace) -> int:
    from studio.models.convert import prepare_model
    from studio.models.registry import ModelRegistry

    settings = Settings()
    settings.ensure_dirs()
    entry = ModelRegistry(settings).resolve(args.model)
    path = prepare_model(entry, settings.models_dir)
    print(f"{entry.id}: ready at {path}")
    return 0


def _resolver() -> Any:
    from studio.aliases.resolve import AliasResolver
    from studio.aliases.store import AliasStore
    from studio.models.registry import ModelRegistry

    settings = Settings()
    return AliasResolver(AliasStore(settings.home / "aliases"), ModelRegistry(settings))


def _print_warnings(report: Any) -> None:
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)


def cmd_alias_list(args: argparse.Namespace) -> int:
    resolver = _resolver()
    views = resolver.list_aliases()
    broken = resolver.broken_files()  # listed with their error, after the user aliases
    if args.json:
        rows = [{**v.config.to_yaml_dict(), "source": v.source, "available": v.entry is not None} for v in views]
        at = len([v for v in views if v.source == "user"])
        rows[at:at] = [
            {"alias": b.name, "file": str(b.path), "source": "broken", "available": False, "error": b.error}
            for b in broken
        ]
        print(json.dumps(rows, indent=2))
        return 0
    table = [("ALIAS", "SOURCE", "REPO", "FILENAME", "TEMPLATE", "PARAMS")]
    for v in views:
        c = v.config
        params = ", ".join(f"{k}={val}" for k, val in c.request_params.model_dump(exclude_none=True).items())
        table.append((c.alias, v.source, c.repo, c.filename or "-", c.chat_template or "-", params or "-"))
    at = len([v for v in views if v.source == "user"])
    table[1 + at : 1 + at] = [(b.name or b.path.name, "broken", "-", "-", "-", "-") for b in broken]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(col.ljust(w) for col, w in zip(r, widths, strict=True)).rstrip())
    if broken:
        print("\nbroken alias files (fix or delete them; `studio alias validate FILE` lists every problem):")
        for b in broken:
            print(f"  {b.error}")
    return 0


def cmd_alias_show(args: argparse.Namespace) -> int:
    from studio.aliases.service import export_alias

    print(export_alias(_resolver(), args.name), end="")
    return 0


def cmd_alias_create(args: argparse.Namespace) -> int:
    from studio.aliases.service import create_alias

    cfg, report, path = create_alias(
        _resolver(), args.name, args.model, template=args.template, assignments=args.set or []
    )
    _print_warnings(report)
    print(f"saved alias '{cfg.alias}' to {path}")
    return 0


def cmd_alias_clone(args: argparse.Namespace) -> int:
    from studio.aliases.service import clone_alias

    cfg, report, path = clone_alias(_resolver(), args.source, args.new)
    _print_warnings(report)
    print(f"saved alias '{cfg.alias}' to {path}")
    return 0


def cmd_alias_delete(args: argparse.Namespace) -> int:
    path = _resolver().store.delete(args.name)
    print(f"deleted alias '{args.name}' ({path})")
    return 0


def cmd_alias_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from studio.aliases.service import import_alias_files

    for cfg, report in import_alias_files(_resolver(), [Path(f) for f in args.files]):
        _print_warnings(report)
        print(f"imported alias '{cfg.alias}'")
    return 0


def cmd_alias_export(args: argparse.Namespace) -> int:
    from studio.aliases.service import export_alias

    text = export_alias(_resolver(), args.name)
    if args.output:
        from studio.files import write_text_atomic

        write_text_atomic(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0


def cmd_alias_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from studio.aliases.resolve import validate_alias
    from studio.aliases.store import parse_alias_yaml

    try:
        with open(args.file, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        print(f"error: {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        parse_alias_yaml(text, args.file)  # raises a ValidationError naming the file (and line)
        return 1
    resolver = _resolver()
    # a file already in aliases/ is that alias: its own name is not a duplicate of itself
    _, report = validate_alias(data, resolver, editing=resolver.store.alias_in_file(Path(args.file)))
    for err in report.errors:
        print(f"error: {args.file}: {err.param}: {err.message}", file=sys.stderr)
    _print_warnings(report)
    if report.errors:
        return 1
    print(f"{args.file}: ok")
    return 0


def _users_configured(settings: Settings) -> bool:
    """Users exist (or the first admin comes from STUDIO_ADMIN_USER): every surface will ask for one."""
    from studio.users.service import hf_oauth_configured

    if settings.admin_user or hf_oauth_configured():
        return True
    from studio.db.engine import Database
    from studio.users.service import UserService

    settings.ensure_dirs()
    db = Database(settings.db_url)
    try:
        return UserService(settings, db).enabled()
    finally:
        db.dispose()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    overrides: dict[str, object] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    if args.insecure:
        overrides["insecure"] = True
    settings = Settings(**overrides)  # type: ignore[arg-type]
    from studio.auth import check_bind

    # before anything slow: a refusal comes at once
    check_bind(settings, settings.host, share=args.share, users=_users_configured(settings))
    if settings.insecure and not settings.api_key:
        log.warning("serving WITHOUT a key (--insecure): anyone who can reach %s can use the studio", settings.host)
    from app import create_app, start_share_tunnel  # the UI layer; imported only when serving

    app, ctx = create_app(settings)
    from studio.notifications.webhooks import start_delivery_thread

    stop_webhooks = start_delivery_thread(ctx.db, settings)  # notifications' webhooks, retried with backoff
    from studio.deploy.service import reattach

    # serving processes outlive the studio: re-attach the live ones, mark dead ones lost (with their last log lines)
    for d in reattach(ctx.db, settings):
        log.info("deployment %s: %s%s", d.name, d.status, f" ({d.message.splitlines()[0]})" if d.message else "")
    if not args.no_preload:
        entry = ctx.registry.resolve("default")
        log.info("loading default model %s (converting it once if needed)…", entry.id)
        ctx.engines.load(entry.id)
    worker = downloads = None
    if not args.no_worker and os.environ.get("STUDIO_START_WORKER", "1") != "0":
        from studio.jobs.worker import start_background_worker

        worker = start_background_worker(settings, database_url=ctx.db.url)
        log.info("job worker started (pid %d, log %s)", worker.pid, worker.log_file)
        from studio.models.download import DOWNLOAD_DEVICE

        # downloads have a slot of their own: they never wait behind a training job, nor it behind them
        downloads = start_background_worker(
            settings, ctx.db.url, device=DOWNLOAD_DEVICE, log_file=settings.home / "logs" / "worker-download.log"
        )
    url = f"http://{settings.host}:{settings.port}"
    log.info("Whetstone Studio on %s  (API docs: %s/docs, OpenAI base URL: %s/v1)", url, url, url)
    # on Ctrl-C / SIGTERM open requests get drain_timeout_s to finish before uvicorn cancels them
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=max(1, math.ceil(settings.drain_timeout_s)),
    )
    server = uvicorn.Server(config)
    if args.share:
        start_share_tunnel(server, settings.host, settings.port, settings)
    # uvicorn re-raises the SIGTERM it caught once it has stopped serving; with Python's default handler that kills
    # the process before the clean-up below (generations' request_log rows, the job worker). Turn it into an exit.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.run()
    finally:
        stop_webhooks()
        if worker is not None:
            worker.stop(timeout_s=15)
        if downloads is not None:
            downloads.stop(timeout_s=15)
        # running generations get the rest of the drain time, then are cancelled; their request_log rows are written
        ctx.close(drain_timeout_s=settings.drain_timeout_s)
    return 0


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description="Whetstone Studio command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the studio (UI + REST API) on one server")
    serve.add_argument("--host", help="interface to bind (default STUDIO_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default STUDIO_PORT or 7860)")
    serve.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host or --share without STUDIO_API_KEY (anyone who can reach it may use it)",
    )
    serve.add_argument("--no-preload", action="store_true", help="do not load the default model at start")
    serve.add_argument(
        "--no-worker", action="store_true", help="do not start a job worker (run `studio worker` elsewhere)"
    )
    serve.set_defaults(func=cmd_serve)

    from studio.jobs.cli import register as register_jobs

    register_jobs(sub)  # `studio worker` and `studio jobs submit|list|show|cancel|resume`
    from studio.jobs.sweeps_cli import register as register_sweeps

    register_sweeps(sub)  # `studio sweep submit FILE [--dry-run]|list|show ID|cancel ID`
    from studio.evaluation.cli import register as register_eval

    register_eval(sub)  # `studio eval run|show|list|plugins|compare`
    from studio.safety.cli import register as register_safety

    register_safety(sub)  # `studio safety scan FILE [--json] [--policy P]`
    from studio.users.cli import register as register_users

    register_users(sub)  # `studio users add|list|passwd|role|quota|rm|token|tokens|revoke|audit`
    from studio.datasets.cli import register as register_datasets

    register_datasets(sub)  # `studio datasets import FILE|list|show NAME`
    from studio.curation.cli import register as register_data

    register_data(sub)  # `studio data curate PIPELINE --dataset NAME [--preview]` and `studio data pipelines`
    from studio.export.cli import register as register_export

    register_export(sub)  # `studio export merged|gguf|onnx|triton|docker MODEL`, `studio export list|show`
    from studio.deploy.cli import register as register_deploy

    register_deploy(sub)  # `studio deploy start|list|stop|restart|rm|logs|add-remote|alias` and `studio serve-model`

    models = sub.add_parser("models", help="models on this machine")
    msub = models.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", help="list every model the registry finds")
    ml.add_argument("--json", action="store_true", help="machine-readable output")
    ml.set_defaults(func=cmd_models_list)
    mp = msub.add_parser("prepare", help="convert a GGUF model to safetensors once (default: the default model)")
    mp.add_argument("model", nargs="?", default="default")
    mp.set_defaults(func=cmd_models_prepare)
    from studio.models.cli import register as register_models

    register_models(msub)  # `studio models pull REPO [--file F] [--revision R]` and `studio models rm MODEL`
    from studio.models.adapters_cli import register as register_adapters

    register_adapters(sub)  # `studio adapters list|upload|rename|rm|merge|compare`
    from studio.export.push_cli import register as register_push

    register_push(sub)  # `studio push SOURCE REPO_ID [--public] [--token-file F]`

    alias = sub.add_parser("alias", help="named model configurations (STUDIO_HOME/aliases/*.yaml)")
    asub = alias.add_subparsers(dest="alias_command", required=True)
    al = asub.add_parser("list", help="user aliases, then one model alias per model found")
    al.add_argument("--json", action="store_true")
    al.set_defaults(func=cmd_alias_list)
    ash = asub.add_parser("show", help="print an alias as YAML")
    ash.add_argument("name")
    ash.set_defaults(func=cmd_alias_show)
    ac = asub.add_parser("create", help="create a user alias")
    ac.add_argument("name")
    ac.add_argument("--model", required=True, help="registry id, repo:QUANT, or a local path")
    ac.add_argument("--template", help="built-in template id, 'embedded', or a repo id")
    ac.add_argument("--set", action="append", metavar="KEY=VALUE", help="a request or context parameter")
    ac.set_defaults(func=cmd_alias_create)
    acl = asub.add_parser("clone", help="copy a user or model alias under a new name")
    acl.add_argument("source")
    acl.add_argument("new")
    acl.set_defaults(func=cmd_alias_clone)
    ad = asub.add_parser("delete", help="delete a user alias")
    ad.add_argument("name")
    ad.set_defaults(func=cmd_alias_delete)
    ai = asub.add_parser("import", help="import alias YAML files (all are checked before any is written)")
    ai.add_argument("files", nargs="+")
    ai.set_defaults(func=cmd_alias_import)
    ae = asub.add_parser("export", help="write an alias as YAML")
    ae.add_argument("name")
    ae.add_argument("-o", "--output", help="file to write (default: stdout)")
    ae.set_defaults(func=cmd_alias_export)
    av = asub.add_parser("validate", help="check an alias file; exits 1 and lists each field error")
    av.add_argument("file")
    av.set_defaults(func=cmd_alias_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
