"""``python -m studio`` / ``studio``: the command line. Each verb calls the same core functions as the UI."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

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


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    overrides: dict[str, object] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    settings = Settings(**overrides)  # type: ignore[arg-type]
    from app import create_app  # the UI layer; imported only when serving

    app, ctx = create_app(settings)
    if not args.no_preload:
        entry = ctx.registry.resolve("default")
        log.info("loading default model %s (converting it once if needed)…", entry.id)
        ctx.engines.load(entry.id)
    url = f"http://{settings.host}:{settings.port}"
    log.info("Whetstone Studio on %s  (API docs: %s/docs, OpenAI base URL: %s/v1)", url, url, url)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info")
    server = uvicorn.Server(config)
    if args.share:
        _start_share_tunnel(server, settings.host, settings.port)
    try:
        server.run()
    finally:
        ctx.close()
    return 0


def _start_share_tunnel(server: object, host: str, port: int) -> None:
    """Open a public gradio.live link once the server is up (needs internet; failures are reported)."""
    import secrets
    import threading
    import time

    def run() -> None:
        while not getattr(server, "started", False):
            time.sleep(0.2)
        try:
            from gradio.networking import setup_tunnel

            local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            share_url = setup_tunnel(local, port, secrets.token_urlsafe(32), None, None)
            log.info("public share link: %s", share_url)
        except Exception as exc:
            log.error("could not create a share link (it needs internet access to gradio.live): %s", exc)

    threading.Thread(target=run, name="share-tunnel", daemon=True).start()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description="Whetstone Studio command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the studio (UI + REST API) on one server")
    serve.add_argument("--host", help="interface to bind (default STUDIO_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default STUDIO_PORT or 7860)")
    serve.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    serve.add_argument("--no-preload", action="store_true", help="do not load the default model at start")
    serve.set_defaults(func=cmd_serve)

    models = sub.add_parser("models", help="models on this machine")
    msub = models.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", help="list every model the registry finds")
    ml.add_argument("--json", action="store_true", help="machine-readable output")
    ml.set_defaults(func=cmd_models_list)
    mp = msub.add_parser("prepare", help="convert a GGUF model to safetensors once (default: the default model)")
    mp.add_argument("model", nargs="?", default="default")
    mp.set_defaults(func=cmd_models_prepare)
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
