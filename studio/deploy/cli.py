"""``studio deploy ...`` and ``studio serve-model`` (registered by :func:`register`).

    studio deploy start TARGET [--engine E] [--port P] [--host H] [--name N] [--adapter A] [--wait] [--timeout S]
    studio deploy list [--json]
    studio deploy stop|restart|rm ID|NAME
    studio deploy logs ID|NAME [-n N]
    studio deploy add-remote NAME --base-url URL [--api-key-env VAR] [--model M]
    studio deploy alias ID|NAME            (the deploy:<name> alias the Playground uses)
    studio serve-model TARGET --port P [--host H] [--engine E] [--adapter A] [--name N]

TARGET is ``default``, an alias, a model id or path, ``adapter:NAME`` or ``export:NAME``
(:mod:`studio.deploy.targets`). ``serve-model`` is what a deployment runs; it can also be run by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from studio.deploy.config import LOCAL_ENGINES
from studio.deploy.records import uptime_text
from studio.settings import Settings


def _open() -> tuple[Settings, Any]:
    from studio.db.engine import Database

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per health check is noise on a terminal
    settings = Settings()
    settings.ensure_dirs()
    return settings, Database(settings.db_url)


def _print_row(d: Any) -> None:
    where = f"{d.url} (model '{d.served_model}')" if d.served_model else d.url
    print(f"{d.name} [{d.id[:8]}]: {d.status} on {d.engine}, {where}")
    if d.message:
        print(d.message)


def cmd_deploy_start(args: argparse.Namespace) -> int:
    from studio.deploy.service import start_deployment, wait_until_ready

    settings, db = _open()
    try:
        data: dict[str, Any] = {"target": args.target, "engine": args.engine, "host": args.host}
        for key in ("port", "name", "adapter"):
            if getattr(args, key) is not None:
                data[key] = getattr(args, key)
        if args.timeout is not None:
            data["start_timeout_s"] = args.timeout
        d = start_deployment(db, settings, data)
        print(f"started {d.name} [{d.id[:8]}] (pid {d.pid}) on {d.url}; log: {d.log_file}", flush=True)
        if not args.wait:
            return 0
        d = wait_until_ready(db, settings, d.id, timeout_s=float(args.timeout or 300))
        _print_row(d)
        return 0 if d.status == "healthy" else 1
    finally:
        db.dispose()


def cmd_deploy_list(args: argparse.Namespace) -> int:
    from studio.deploy.service import list_deployments

    settings, db = _open()
    try:
        rows = list_deployments(db, settings)
    finally:
        db.dispose()
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return 0
    if not rows:
        print("No deployments. Start one with: studio deploy start default")
        return 0
    table = [("ID", "NAME", "STATUS", "ENGINE", "URL", "UPTIME", "REQUESTS", "TARGET")]
    for r in rows:
        served = "-" if r.requests_served is None else str(r.requests_served)
        table.append((r.id[:8], r.name, r.status, r.engine, r.url, uptime_text(r.uptime_s), served, r.target))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for r in rows:
        if r.message and r.status in ("unhealthy", "failed", "lost"):
            print(f"\n{r.name}: {r.message}")
    return 0


def cmd_deploy_stop(args: argparse.Namespace) -> int:
    from studio.deploy.service import stop_deployment

    settings, db = _open()
    try:
        _print_row(stop_deployment(db, settings, args.ref))
    finally:
        db.dispose()
    return 0


def cmd_deploy_restart(args: argparse.Namespace) -> int:
    from studio.deploy.service import restart_deployment, wait_until_ready

    settings, db = _open()
    try:
        d = restart_deployment(db, settings, args.ref)
        if args.wait:
            d = wait_until_ready(db, settings, d.id)
        _print_row(d)
        return 0 if d.status in ("healthy", "starting") else 1
    finally:
        db.dispose()


def cmd_deploy_rm(args: argparse.Namespace) -> int:
    from studio.deploy.service import delete_deployment

    settings, db = _open()
    try:
        delete_deployment(db, settings, args.ref)
    finally:
        db.dispose()
    print(f"deleted deployment {args.ref}")
    return 0


def cmd_deploy_logs(args: argparse.Namespace) -> int:
    from studio.deploy.service import deployment_logs

    settings, db = _open()
    try:
        text = deployment_logs(db, settings, args.ref, lines=args.n)
    finally:
        db.dispose()
    print(text)
    return 0


def cmd_deploy_add_remote(args: argparse.Namespace) -> int:
    from studio.deploy.service import add_remote

    settings, db = _open()
    try:
        data = {"name": args.name, "base_url": args.base_url, "api_key_env": args.api_key_env, "model": args.model}
        _print_row(add_remote(db, settings, data))
    finally:
        db.dispose()
    return 0


def cmd_deploy_alias(args: argparse.Namespace) -> int:
    from studio.deploy.service import deployment_alias

    settings, db = _open()
    try:
        print(deployment_alias(db, settings, args.ref))
    finally:
        db.dispose()
    return 0


def cmd_serve_model(args: argparse.Namespace) -> int:
    from studio.deploy.serve import serve_model

    return serve_model(
        Settings(),
        args.target,
        port=args.port,
        host=args.host,
        adapter=args.adapter,
        engine=args.engine,
        served_name=args.name,
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is a number 1-65535 (got {text!r})") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number 1-65535 (got {value})")
    return value


def register(subparsers: Any) -> None:
    """Add ``deploy`` (start, list, stop, restart, rm, logs, add-remote, alias) and ``serve-model``."""
    deploy = subparsers.add_parser("deploy", help="serving processes and remote endpoints (deployments)")
    dsub = deploy.add_subparsers(dest="deploy_command", required=True)

    start = dsub.add_parser("start", help="serve a model, alias, adapter:NAME or export:NAME in its own process")
    start.add_argument("target", help="default, an alias, a model id or path, adapter:NAME or export:NAME")
    start.add_argument("--engine", default="auto", choices=LOCAL_ENGINES)
    start.add_argument("--port", type=_port, help="port (default: the first free one from 8100)")
    start.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    start.add_argument("--name", help="unique name (default: from the target and the port)")
    start.add_argument("--adapter", help="a PEFT adapter to serve on top of the model")
    start.add_argument("--wait", action="store_true", help="wait until it is healthy (exit 1 if it is not)")
    start.add_argument("--timeout", type=float, help="seconds to wait for the first healthy answer (default 300)")
    start.set_defaults(func=cmd_deploy_start)

    ls = dsub.add_parser("list", help="every deployment, checked now")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_deploy_list)

    for verb, func, text in (
        ("stop", cmd_deploy_stop, "stop a deployment (SIGTERM, then SIGKILL after 10 s)"),
        ("restart", cmd_deploy_restart, "stop and start again (also a stopped, failed or lost one)"),
        ("rm", cmd_deploy_rm, "delete a deployment that is not running (row, logs, deploy:<name> alias)"),
        ("alias", cmd_deploy_alias, "create the user alias deploy:<name> that reaches the deployment"),
    ):
        p = dsub.add_parser(verb, help=text)
        p.add_argument("ref", metavar="ID|NAME")
        if verb == "restart":
            p.add_argument("--wait", action="store_true", help="wait until it is healthy")
        p.set_defaults(func=func)

    logs = dsub.add_parser("logs", help="the end of a deployment's server.log")
    logs.add_argument("ref", metavar="ID|NAME")
    logs.add_argument("-n", type=int, default=50, help="lines (default 50)")
    logs.set_defaults(func=cmd_deploy_logs)

    remote = dsub.add_parser("add-remote", help="register an OpenAI-compatible endpoint as a deployment")
    remote.add_argument("name")
    remote.add_argument("--base-url", required=True, help="the OpenAI base URL, e.g. https://host/v1")
    remote.add_argument("--api-key-env", help="environment variable holding the API key (the key is never stored)")
    remote.add_argument("--model", help="model name to request (default: the first the server lists)")
    remote.set_defaults(func=cmd_deploy_add_remote)

    serve = subparsers.add_parser("serve-model", help="serve one model on the OpenAI API (a deployment's process)")
    serve.add_argument("target", help="default, an alias, a model id or path, adapter:NAME or export:NAME")
    serve.add_argument("--port", type=_port, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--engine", default="auto", choices=LOCAL_ENGINES)
    serve.add_argument("--adapter", help="a PEFT adapter to serve on top of the model")
    serve.add_argument("--name", help="the model name clients send (default: TARGET)")
    serve.set_defaults(func=cmd_serve_model)


__all__ = ["register"]
