"""The ``studio datasets ...`` verbs. ``register(subparsers)`` adds them to ``studio``'s parser;
``python -m studio.datasets.cli`` runs them on their own.

    studio datasets import FILE [--name N] [--format F] [--mapping M] [--on-invalid reject|drop]
                                [--description D] [--dry-run] [--json]
    studio datasets list [--json]
    studio datasets show NAME [--version N] [--rows N] [--json]   (versions, language mix, preview)

``import`` takes the same path as the Fine-Tune tab's upload form: :meth:`DatasetStore.import_upload` with the
column mapping read by :func:`studio.datasets.mapping.mapping_from_text` — the format is detected unless
``--format`` names it or ``--mapping`` gives a mapping (YAML/JSON text or a file holding it; LLaMA-Factory's
``dataset_info.json`` entry or whole file works too). With neither, a ``dataset_info.json`` beside FILE that
describes FILE (LLaMA-Factory's ``data/`` layout) is used, and the output says so. FILE must lie in the current
folder or under STUDIO_HOME (:func:`studio.paths.confine`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from studio.datasets.builtin import ensure_builtin_datasets
from studio.datasets.formats import FORMATS, detect_format
from studio.datasets.mapping import mapping_from_text, sibling_dataset_info
from studio.datasets.parse import parse_file
from studio.datasets.store import DatasetStore
from studio.datasets.validate import ValidationReport
from studio.db.engine import Database
from studio.errors import StudioError, ValidationError
from studio.paths import confine
from studio.settings import Settings


def _store(settings: Settings) -> DatasetStore:
    settings.ensure_dirs()
    store = DatasetStore(settings, Database(settings.db_url))
    ensure_builtin_datasets(store)
    return store


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _user_file(raw: str, settings: Settings, param: str) -> Path:
    """A file named on the command line: confined to the current folder and STUDIO_HOME, and existing."""
    path = confine(raw, [Path.cwd(), settings.home], param=param, base=Path.cwd(),
                   where="the current folder and $STUDIO_HOME")  # fmt: skip
    if not path.is_file():
        raise ValidationError(f"'{param}': no file '{raw}'", param=param)
    return path


def _mapping_text(raw: str, settings: Settings) -> str:
    """``--mapping``: the text itself, or the file it names (``.json``, ``.yaml``, ``.yml``)."""
    if raw.strip().startswith(("{", "format")) or "\n" in raw:
        return raw
    return _user_file(raw, settings, "mapping").read_text(encoding="utf-8")


def _print_report(report: ValidationReport) -> None:
    print(f"format:   {report.mapping.describe()} (kind {report.kind})")
    print(f"rows:     {report.summary()}")
    if report.unused_columns:
        print(f"not used: {', '.join(report.unused_columns)} (these columns are not imported)")
    for error in report.errors[:10]:
        print(f"  {error}  [{error.field}]")
    if report.invalid_rows > 10:
        print(f"  ... and {report.invalid_rows - 10} more invalid rows")


def cmd_datasets_import(args: argparse.Namespace) -> int:
    """Validate FILE and import it as a dataset (or a new version of ``--name``); ``--dry-run`` only validates."""
    settings = Settings()
    path = _user_file(args.file, settings, "file")
    source = ""
    if args.mapping:
        mapping = mapping_from_text(_mapping_text(args.mapping, settings), path.name)
        source = "--mapping"
    elif args.format and args.format != "auto":
        mapping = detect_format(parse_file(path).records, args.format)
        source = "--format"
    else:
        found = sibling_dataset_info(path)
        mapping = found[1] if found else None
        source = f"{found[0].name} beside the file" if found else "detected"
    store = _store(settings)
    if args.dry_run:
        report = store.inspect_upload(path, path.name, mapping)
        if args.json:
            print(json.dumps({"report": report.model_dump(mode="json"), "mapping_source": source}, indent=2))
        else:
            _print_report(report)
            print(f"mapping:  {source}; nothing imported (--dry-run)")
        return 0 if report.ok else 1
    result = store.import_upload(
        args.name or path.stem,
        path,
        path.name,
        mapping,
        on_invalid=args.on_invalid,
        description=args.description or "",
    )
    if args.json:
        print(json.dumps({**result.model_dump(mode="json"), "mapping_source": source}, indent=2))
        return 0
    v = result.version
    if result.created:
        print(f"imported '{result.dataset.name}' version {v.number}: {v.num_examples} {v.kind} examples "
              f"({v.content_hash[:12]})")  # fmt: skip
    else:
        print(f"'{result.dataset.name}' already has this content as version {v.number}; nothing new imported")
    if result.report is not None:
        _print_report(result.report)
    print(f"mapping:  {source}")
    return 0


def cmd_datasets_list(args: argparse.Namespace) -> int:
    """Every dataset, most recently updated first."""
    cards = _store(Settings()).list_cards()
    if args.json:
        print(json.dumps([c.model_dump(mode="json") for c in cards], indent=2))
        return 0
    if not cards:
        print("No datasets. Import one with: studio datasets import FILE")
        return 0
    rows = [("NAME", "KIND", "FORMAT", "EXAMPLES", "VERSION", "SIZE", "UPDATED")]
    for c in cards:
        updated = c.updated_at.astimezone().strftime("%Y-%m-%d %H:%M")
        rows.append((c.name, c.kind, c.format, str(c.num_examples), f"v{c.version}/{c.versions}", c.size_label,
                     updated))  # fmt: skip
    _table(rows)
    return 0


def cmd_datasets_show(args: argparse.Namespace) -> int:
    """One dataset: its versions, a version's language mix and a preview of it (the latest version by default)."""
    store = _store(Settings())
    dataset = store.get(args.name)
    version = store.get_version(args.name, args.version)
    versions = store.versions(args.name)
    preview = store.preview(version, args.rows)
    languages = store.language_mix(version)
    if args.json:
        data: dict[str, Any] = {
            "dataset": dataset.model_dump(mode="json"),
            "version": version.model_dump(mode="json"),
            "versions": [v.model_dump(mode="json") for v in versions],
            "languages": {**languages.model_dump(), "counts": dict(languages.ranked())},
            "preview": preview.model_dump(mode="json"),
        }
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(f"{dataset.name} ({dataset.kind}){': ' + dataset.description if dataset.description else ''}")
    rows = [("VERSION", "EXAMPLES", "FORMAT", "SOURCE", "HASH", "CREATED")]
    for v in versions:
        created = v.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
        rows.append((f"v{v.number}", str(v.num_examples), v.format, v.source, v.content_hash[:12], created))
    _table(rows)
    print(f"\nv{version.number} languages: {languages.summary()}")
    unused = version.lineage.get("unused_columns")
    if unused:
        print(f"\nv{version.number} left these columns of its file out: {', '.join(unused)}")
    print(f"\nv{version.number}, first {min(args.rows, preview.total)} of {preview.total}:")
    table = [tuple(preview.headers)] + [tuple(str(c).replace("\n", " ") for c in r) for r in preview.rows]
    _table([tuple(c if len(c) <= 60 else c[:57] + "..." for c in r) for r in table])
    return 0


def register(subparsers: Any) -> None:
    """Add ``datasets import|list|show`` to a parser's subcommands (``studio.cli.build_parser`` calls this)."""
    datasets = subparsers.add_parser("datasets", help="labelled examples: import files, list, show")
    dsub = datasets.add_subparsers(dest="datasets_command", required=True)
    di = dsub.add_parser(
        "import",
        help="validate a JSONL/CSV/JSON file and import it (format detected; LLaMA-Factory and OpenAI formats)",
    )
    di.add_argument("file", help="the data file (in the current folder or under STUDIO_HOME)")
    di.add_argument("--name", help="dataset name (default: the file's name without extension)")
    di.add_argument("--format", choices=["auto", *FORMATS], default="auto", help="the layout (default: detect it)")
    di.add_argument(
        "--mapping",
        help="a column mapping (YAML/JSON text or a file): the studio's fields, or LLaMA-Factory's dataset_info.json",
    )
    di.add_argument(
        "--on-invalid",
        choices=["reject", "drop"],
        default="reject",
        help="reject the file if a row is invalid (default), or drop the invalid rows",
    )
    di.add_argument("--description", help="a description for a new dataset")
    di.add_argument("--dry-run", action="store_true", help="validate and print the report; import nothing")
    di.add_argument("--json", action="store_true", help="machine-readable output")
    di.set_defaults(func=cmd_datasets_import)
    dl = dsub.add_parser("list", help="every dataset with its kind, format, size and latest version")
    dl.add_argument("--json", action="store_true", help="machine-readable output")
    dl.set_defaults(func=cmd_datasets_list)
    ds = dsub.add_parser("show", help="one dataset: versions, language mix and a preview")
    ds.add_argument("name")
    ds.add_argument("--version", type=int, help="version number (default: the latest)")
    ds.add_argument("--rows", type=int, default=10, help="preview rows (default 10)")
    ds.add_argument("--json", action="store_true", help="machine-readable output")
    ds.set_defaults(func=cmd_datasets_show)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dataset verbs on their own: ``python -m studio.datasets.cli import FILE``."""
    parser = argparse.ArgumentParser(prog="studio", description="Whetstone Studio datasets")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["datasets", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
