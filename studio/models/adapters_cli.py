"""The ``studio adapters ...`` verbs. ``register(subparsers)`` adds them to ``studio``'s parser.

    studio adapters list [--json]
    studio adapters upload PATH [--name N] [--base MODEL] [--json]
    studio adapters rename OLD NEW
    studio adapters rm NAME
    studio adapters compare NAME [--prompt P ...] [--max-tokens N] [--model M] [--json]
    studio adapters compare NAME --quality [--dataset D] [--metrics m1,m2] [--limit N] [--model M] [--json]

They call :mod:`studio.models.adapters`, :mod:`studio.models.adapter_upload` and
:mod:`studio.models.adapter_compare`, as the Models tab does. ``compare`` loads the adapter's base in this process
and measures tok/s with and without the adapter on the same prompts; ``--quality`` instead queues one evaluation job
scoring the base and the adapter side by side (``studio eval show JOB`` once the worker has run it). ``upload``
takes a folder or a ``.zip`` of a PEFT adapter lying in the current folder or under STUDIO_HOME. The CLI has no
loaded models of its own: ``rm`` and ``rename`` cannot see what a running server has loaded (the server's Adapter
Manager refuses while it is loaded).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from studio.errors import ValidationError
from studio.models.adapter_upload import upload_adapter
from studio.models.adapters import delete_adapter, get_adapter, list_adapters, rename_adapter
from studio.paths import confine
from studio.settings import Settings


def _size(n: int) -> str:
    from studio.models.hub import human_bytes

    return human_bytes(n)


def cmd_adapters_list(args: argparse.Namespace) -> int:
    settings = Settings()
    items = list_adapters(settings)
    if args.json:
        print(json.dumps([a.to_dict() for a in items], indent=2))
        return 0
    if not items:
        print("no adapters in $STUDIO_HOME/adapters (train one, or: studio adapters upload PATH)")
        return 0
    rows = [("NAME", "BASE", "METHOD", "RANK", "TARGETS", "SIZE", "ORIGIN", "CREATED")]
    for a in items:
        rank = f"r={a.rank}" if a.rank is not None else (f"{a.virtual_tokens} tok" if a.virtual_tokens else "-")
        rows.append(
            (
                a.name,
                a.base_model or "-",
                a.method if a.problem is None else f"{a.method} (unusable: {a.problem})",
                rank,
                ",".join(a.target_modules) or "-",
                _size(a.size_bytes),
                a.origin,
                a.created[:19],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_adapters_upload(args: argparse.Namespace) -> int:
    settings = Settings()
    settings.ensure_dirs()
    src = confine(args.path, [Path.cwd(), settings.home], param="path", base=Path.cwd(),
                  where="the current folder and $STUDIO_HOME")  # fmt: skip
    if not src.exists():
        raise ValidationError(f"'path': no file or folder '{args.path}'", param="path")
    info = upload_adapter(settings, src, args.name, base_model=args.base)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    print(
        f"registered adapter '{info.name}': {info.method} r={info.rank} on {info.base_model} "
        f"({', '.join(info.target_modules) or 'no target modules'}; {_size(info.size_bytes)})"
    )
    for note in info.warnings:
        print(f"note: {note}")
    return 0


def cmd_adapters_rename(args: argparse.Namespace) -> int:
    info = rename_adapter(Settings(), args.old, args.new)
    print(f"renamed adapter '{args.old}' to '{info.name}'")
    return 0


def cmd_adapters_rm(args: argparse.Namespace) -> int:
    print(delete_adapter(Settings(), args.name).summary())
    return 0


DEFAULT_PROMPTS = (
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Give three tips for learning a language.",
    "Explain what a noun is.",
)


def cmd_adapters_compare(args: argparse.Namespace) -> int:
    settings = Settings()
    settings.ensure_dirs()
    if args.quality:
        return _compare_quality(settings, args)
    from studio.context import AppContext
    from studio.models.adapter_compare import compare_speed

    info = get_adapter(settings, args.name)
    model = args.model or info.base_model
    if not model:
        raise ValidationError(f"adapter '{info.name}' records no base model: give --model", param="model")
    context = AppContext.create(settings)
    try:
        report = compare_speed(
            context.engines, model, info.name, args.prompt or DEFAULT_PROMPTS, max_tokens=args.max_tokens
        )
    finally:
        context.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    a, b = report["with_adapter"], report["base"]
    print(f"{report['prompts']} prompts, {report['max_tokens']} tokens each, greedy, on {model}:")
    rows = [(f"with {report['adapter']}", a), ("base", b)]
    width = max(len(label) for label, _ in rows)
    for label, figures in rows:
        print(f"  {label.ljust(width)}  {figures['tokens_per_s']} tok/s (first token {figures['ttft_s']} s)")
    print(f"  speed ratio (adapter / base): {report['speed_ratio']}")
    return 0


def _compare_quality(settings: Settings, args: argparse.Namespace) -> int:
    from studio.db.engine import Database
    from studio.models.adapter_compare import submit_quality_comparison

    db = Database(settings.db_url)
    try:
        metrics = [m for m in (args.metrics or "").replace(",", " ").split() if m] or None
        queued = submit_quality_comparison(
            settings, db, args.name, dataset=args.dataset, metrics=metrics, limit=args.limit, model=args.model
        )
    finally:
        db.dispose()
    if args.json:
        print(json.dumps(queued.to_dict(), indent=2))
        return 0
    print(
        f"queued eval job {queued.job_id}: '{queued.base_label}' and '{queued.adapter_label}' on "
        f"{queued.dataset} v{queued.dataset_version} ({', '.join(queued.metrics)}); "
        f"see: studio eval show {queued.job_id}"
    )
    return 0


def cmd_adapters_merge(args: argparse.Namespace) -> int:
    """``studio adapters merge NAME``: ``studio export merged BASE --adapter NAME`` with the base it records."""
    from studio.export.cli import cmd_export_run

    model = args.model or get_adapter(Settings(), args.name).base_model
    if not model:
        raise ValidationError(f"adapter '{args.name}' does not name its base model; give --model", param="model")
    options = {"quant": None, "dtype": args.dtype, "name": args.export_name, "no_register": False}
    merged = argparse.Namespace(format="merged", model=model, adapter=args.name, no_wait=args.no_wait, json=args.json)
    return cmd_export_run(argparse.Namespace(**vars(merged), **options))


def register(sub: Any) -> None:
    """Add ``studio adapters list|upload|rename|rm|merge|compare`` to ``studio``'s sub-parsers."""
    adapters = sub.add_parser("adapters", help="PEFT adapters in $STUDIO_HOME/adapters")
    asub = adapters.add_subparsers(dest="adapters_cmd", required=True)
    ls = asub.add_parser("list", help="every adapter: base model, method, rank, target modules, size, origin")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_adapters_list)
    up = asub.add_parser(
        "upload", help="register a PEFT adapter folder or .zip (safetensors only; checked against its base first)"
    )
    up.add_argument("path", help="the adapter's folder or a .zip of it (in the current folder or under STUDIO_HOME)")
    up.add_argument("--name", help="the name to register it under (default: the folder's or zip's name)")
    up.add_argument("--base", help="its base model (default: the one adapter_config.json names)")
    up.add_argument("--json", action="store_true", help="print JSON")
    up.set_defaults(func=cmd_adapters_upload)
    rn = asub.add_parser("rename", help="rename an adapter")
    rn.add_argument("old")
    rn.add_argument("new")
    rn.set_defaults(func=cmd_adapters_rename)
    rm = asub.add_parser("rm", help="delete an adapter (a trained one keeps its files in its job's run folder)")
    rm.add_argument("name")
    rm.set_defaults(func=cmd_adapters_rm)
    mg = asub.add_parser("merge", help="merge into its base: a new model (studio export merged BASE --adapter NAME)")
    mg.add_argument("name", help="a registered adapter")
    mg.add_argument("--model", help="the model to merge it into (default: the base the adapter records)")
    mg.add_argument("--name", dest="export_name", help="the new model's name (default: from model and adapter)")
    mg.add_argument("--dtype", default="auto", help="weights of the merged model: auto, float32, bfloat16, float16")
    mg.add_argument("--no-wait", action="store_true", help="queue the job, print its id and return")
    mg.add_argument("--json", action="store_true", help="machine-readable output")
    mg.set_defaults(func=cmd_adapters_merge)
    cmp = asub.add_parser("compare", help="tok/s with and without the adapter, or (--quality) an eval job of both")
    cmp.add_argument("name", help="a registered adapter")
    cmp.add_argument("--model", help="the model to put it on (default: the base the adapter records)")
    cmp.add_argument("--prompt", action="append", help="a prompt to measure with (repeatable; default: four prompts)")
    cmp.add_argument("--max-tokens", type=int, default=32, help="tokens generated per prompt and side (default 32)")
    cmp.add_argument("--quality", action="store_true", help="queue an evaluation of the base and the adapter instead")
    cmp.add_argument("--dataset", help="--quality: the dataset (default: the Evaluate tab's)")
    cmp.add_argument("--metrics", help="--quality: metric names, comma separated (default: the Evaluate tab's)")
    cmp.add_argument("--limit", type=int, help="--quality: examples scored (default: the Evaluate tab's)")
    cmp.add_argument("--json", action="store_true", help="print JSON")
    cmp.set_defaults(func=cmd_adapters_compare)
