"""The ``studio data ...`` verbs. ``register(subparsers)`` adds them to ``studio``'s parser.

    studio data curate PIPELINE --dataset NAME [--version N] [--into NAME] [--preview [--sample N]]
                                [--save] [--json]
    studio data pipelines [--json]

``PIPELINE`` is a YAML file (in the current folder, under STUDIO_HOME or the shipped ``configs/curation/``) or
the name of a saved or shipped pipeline. ``curate`` prints each step's counts and the version it made;
``--preview`` runs on a sample (``--sample``, default 50) and prints the dropped rows and duplicate clusters
without writing anything. ``--save`` also keeps the pipeline under ``STUDIO_HOME/pipelines``. A ``quality`` step
with a ``judge_model`` loads that model here, in this process, and asks it once per row.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from studio.curation.pipeline import (
    DEFAULT_SAMPLE,
    NAME_PATTERN,
    SHIPPED_DIR,
    CurationPipeline,
    CurationResult,
    curate,
    get_pipeline,
    list_pipelines,
    load_pipeline,
    pipelines_dir,
    preview,
    save_pipeline,
)
from studio.curation.steps import StepContext, describe_row
from studio.errors import ValidationError
from studio.paths import confine
from studio.settings import CONFIG_DIR, Settings

_SHOWN = 80


def _store(settings: Settings) -> Any:
    from studio.datasets.builtin import ensure_builtin_datasets
    from studio.datasets.store import DatasetStore
    from studio.db.engine import Database

    settings.ensure_dirs()
    store = DatasetStore(settings, Database(settings.db_url))
    ensure_builtin_datasets(store)
    return store


def read_pipeline_arg(raw: str, settings: Settings) -> CurationPipeline:
    """``PIPELINE`` on the command line: a YAML file (current folder, STUDIO_HOME or configs/), else the name of a
    saved or shipped pipeline."""
    looks_like_file = "/" in raw or "\\" in raw or raw.lower().endswith((".yaml", ".yml"))
    if looks_like_file:
        path = confine(raw, [Path.cwd(), settings.home, CONFIG_DIR], param="pipeline", base=Path.cwd(),
                       where="the current folder, $STUDIO_HOME and configs/")  # fmt: skip
        if path.is_file():
            return load_pipeline(path.read_text(encoding="utf-8"), path.name)
        stem = Path(raw).stem
        if "/" in raw or "\\" in raw or not re.match(NAME_PATTERN, stem):
            raise ValidationError(f"'pipeline': no file '{raw}'", param="pipeline")
        raw = stem
    return get_pipeline(settings, raw)


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _print_result(result: CurationResult, *, examples: bool) -> None:
    rows = [("STEP", "IN", "OUT", "CHANGED", "DROPPED", "WHY")]
    for r in result.reports:
        why = "skipped (disabled)" if r.skipped else ", ".join(f"{k} {v}" for k, v in r.reasons.items())
        rows.append((r.step, str(r.rows_in), str(r.rows_out), str(r.changed), str(r.dropped), why or "-"))
    _table(rows)
    of = f" (a sample of {result.total})" if result.sampled else ""
    print(f"kept {len(result.kept)} of {result.rows_in} rows{of}")
    for r in result.reports:
        if "judge_model" in r.details:
            print(r.summary())
    if not examples:
        return
    for r in result.reports:
        if r.dropped_examples:
            print(f"\n{r.step}: dropped, for example")
            for row, reason in r.dropped_examples:
                print(f"  [{reason}] {describe_row(row, _SHOWN)}")
        if r.changed_examples:
            print(f"\n{r.step}: changed, for example")
            for before, after in r.changed_examples:
                print(f"  before: {describe_row(before, _SHOWN)}\n  after:  {describe_row(after, _SHOWN)}")
        for cluster in r.details.get("cluster_rows", []):
            print(f"\n{r.step}: near-duplicates (the first is kept)")
            for text in cluster:
                print(f"  {text}")


def cmd_data_curate(args: argparse.Namespace) -> int:
    """Run a curation pipeline on a dataset version (``--preview``: on a sample, writing nothing)."""
    settings = Settings()
    if args.sample is not None and not args.preview:
        raise ValidationError("--sample is the size of a preview: use it with --preview", param="sample")
    pipeline = read_pipeline_arg(args.pipeline, settings)
    # Presidio warns once per analysed text about spaCy labels it does not map (CARDINAL ...): noise in a table
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    if not pipeline.needs_judge():
        return _curate(args, settings, pipeline, _store(settings), None)
    # a quality step grades rows with a judge model: the studio's engines, in this process
    from studio.context import AppContext
    from studio.curation.judge import engine_chat

    app = AppContext.create(settings)
    try:
        return _curate(args, settings, pipeline, app.datasets, StepContext(chat=engine_chat(app.engines)))
    finally:
        app.close()


def _curate(
    args: argparse.Namespace, settings: Settings, pipeline: CurationPipeline, store: Any, context: StepContext | None
) -> int:
    if args.save:
        path = save_pipeline(settings, pipeline)
        if not args.json:
            print(f"saved pipeline '{pipeline.name}' to {path}")
    if args.preview:
        result = preview(store, args.dataset, pipeline, args.version, args.sample or DEFAULT_SAMPLE, context=context)
        if args.json:
            print(json.dumps({"pipeline": pipeline.name, **result.to_dict()}, indent=2, ensure_ascii=False))
            return 0
        print(f"preview of pipeline '{pipeline.name}' on '{args.dataset}' — nothing is written")
        _print_result(result, examples=True)
        return 0
    outcome = curate(store, args.dataset, pipeline, args.version, args.into, context=context)
    imported = outcome.import_result
    v = imported.version
    if args.json:
        data = {"pipeline": pipeline.name, **outcome.result.to_dict(), "import": imported.model_dump(mode="json")}
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(f"pipeline '{pipeline.name}' on '{args.dataset}'")
    _print_result(outcome.result, examples=False)
    if imported.created:
        print(f"created '{imported.dataset.name}' version {v.number}: {v.num_examples} {v.kind} examples "
              f"({v.content_hash[:12]})")  # fmt: skip
    else:
        print(f"'{imported.dataset.name}' already has these rows as version {v.number}; no new version")
    return 0


def cmd_data_pipelines(args: argparse.Namespace) -> int:
    """The saved pipelines and the shipped examples (a file that no longer validates is listed with its error)."""
    settings = Settings()
    folder = pipelines_dir(settings)
    saved = {p.stem for p in folder.glob("*.yaml")} if folder.is_dir() else set()
    listed: list[dict[str, Any]] = []
    for name in list_pipelines(settings):
        entry: dict[str, Any] = {"name": name, "where": "saved" if name in saved else "shipped"}
        try:
            p = get_pipeline(settings, name)
        except ValidationError as exc:
            entry.update(description="", steps=[], error=exc.message)
        else:
            entry.update(description=p.description, steps=[s.step for s in p.steps])
        listed.append(entry)
    if args.json:
        print(json.dumps(listed, indent=2, ensure_ascii=False))
        return 0
    if not listed:
        print(f"No pipelines. Write one (see {SHIPPED_DIR.name}/ in configs) and run: studio data curate FILE")
        return 0
    rows = [("NAME", "WHERE", "STEPS", "DESCRIPTION")]
    for e in listed:
        rows.append((e["name"], e["where"], ", ".join(e["steps"]) or "-", e.get("error") or e["description"]))
    _table(rows)
    return 0


def register(subparsers: Any) -> None:
    """Add ``data curate|pipelines`` to a parser's subcommands (``studio.cli.build_parser`` calls this)."""
    data = subparsers.add_parser("data", help="curate datasets: clean, filter, deduplicate into a new version")
    dsub = data.add_subparsers(dest="data_command", required=True)
    dc = dsub.add_parser("curate", help="run a curation pipeline on a dataset version and store the rows it keeps")
    dc.add_argument("pipeline", help="a pipeline YAML file, or the name of a saved or shipped pipeline")
    dc.add_argument("--dataset", required=True, help="the dataset to curate")
    dc.add_argument("--version", type=int, help="its version number (default: the latest)")
    dc.add_argument("--into", help="store the result as a version of this dataset instead (created if absent)")
    dc.add_argument("--preview", action="store_true", help="run on a sample and show what would go; write nothing")
    dc.add_argument("--sample", type=int, help="rows a preview runs on (default 50)")
    dc.add_argument("--save", action="store_true", help="also save the pipeline under STUDIO_HOME/pipelines")
    dc.add_argument("--json", action="store_true", help="machine-readable output")
    dc.set_defaults(func=cmd_data_curate)
    dp = dsub.add_parser("pipelines", help="saved pipelines and the shipped examples")
    dp.add_argument("--json", action="store_true", help="machine-readable output")
    dp.set_defaults(func=cmd_data_pipelines)
