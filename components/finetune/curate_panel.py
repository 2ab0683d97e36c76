"""Fine-Tune → Curate: run a curation pipeline (clean, filter, deduplicate, score) over a dataset version —
previewed on a sample first — and augment it with a model (paraphrase, self-instruct) as a job. Every run makes
a new dataset version; the lineage graph shows where each came from. The core is ``studio.curation``."""

from __future__ import annotations

import typing
from typing import Any

import gradio as gr
from pydantic import BaseModel

from components.common import handle_errors
from studio.context import AppContext
from studio.curation.augment import AugmentConfig, submit_augment
from studio.curation.judge import engine_chat
from studio.curation.lineage import dataset_lineage, lineage_figure
from studio.curation.pipeline import (
    CurationPipeline,
    CurationResult,
    curate,
    dump_pipeline,
    get_pipeline,
    list_pipelines,
    load_pipeline,
    preview,
    save_pipeline,
    token_counter,
)
from studio.curation.steps import STEP_KINDS, StepContext
from studio.training.service import LATEST, TokenizerCache, version_choices

STEP_COLUMNS = ["Step", "Rows in", "Rows out", "Changed", "Dropped", "Why"]
EXAMPLE_COLUMNS = ["Step", "What", "Row"]
CLUSTER_COLUMNS = ["Cluster", "Rows", "Kept (first) and dropped"]
DEFAULT_PIPELINE = "sft-clean"
NO_FILTER = "(none)"


def _field_range(model: type[BaseModel], name: str) -> str:
    bits = []
    for meta in model.model_fields[name].metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                bits.append(f"{sign} {value}")
    return f" ({', '.join(bits)})" if bits else ""


def step_reference() -> str:
    """Every step with its fields, defaults and help text — the same text the schema holds."""
    lines = ["Each step is one item of `steps:`; fields left out take their defaults.", ""]
    for name, kind in STEP_KINDS.items():
        model = kind.config_model
        lines.append(f"**`{name}`** — {kind.description}")
        for field, info in model.model_fields.items():
            if field == "step":
                continue
            default = info.default if info.default is not None else "empty"
            lines.append(f"- `{field}` = `{default}`{_field_range(model, field)}: {info.description or ''}")
        lines.append("")
    return "\n".join(lines)


def _why(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))


def report_rows(result: CurationResult) -> list[list[Any]]:
    """One table row per step."""
    return [
        [r.step + (" (skipped)" if r.skipped else ""), r.rows_in, r.rows_out, r.changed, r.dropped, _why(r.reasons)]
        for r in result.reports
    ]


def example_rows(result: CurationResult) -> list[list[Any]]:
    """Examples of dropped rows (with why) and of changed rows (before → after) for every step."""
    from studio.curation.steps import describe_row

    out: list[list[Any]] = []
    for r in result.reports:
        out.extend([r.step, f"dropped: {reason}", describe_row(row, 200)] for row, reason in r.dropped_examples)
        out.extend(
            [r.step, "changed", f"{describe_row(before, 100)}  ⟶  {describe_row(after, 100)}"]
            for before, after in r.changed_examples
        )
    return out


def cluster_rows(result: CurationResult) -> list[list[Any]]:
    """The near-duplicate clusters the dedupe steps found (the rows' text for the largest)."""
    out: list[list[Any]] = []
    for r in result.reports:
        texts = r.details.get("cluster_rows") or []
        for i, cluster in enumerate(r.clusters):
            shown = " ‖ ".join(texts[i]) if i < len(texts) else ", ".join(f"row {j + 1}" for j in cluster)
            out.append([f"{r.step} #{i + 1}", len(cluster), shown])
    return out


def funnel_figure(result: CurationResult) -> Any:
    """Rows left after each step (a funnel), the first bar being the rows read."""
    import plotly.graph_objects as go

    stages = ["rows read"] + [r.step for r in result.reports]
    values = [result.rows_in] + [r.rows_out for r in result.reports]
    fig = go.Figure(go.Funnel(y=stages, x=values, textinfo="value+percent initial"))
    of = f" (a sample of {result.rows_in} of {result.total})" if result.sampled else ""
    fig.update_layout(title=f"Rows kept by each step{of}", height=120 + 36 * len(stages), margin={"l": 110, "r": 20})
    return fig


def _widget(model: type[BaseModel], name: str, label: str, **kw: Any) -> Any:
    """A form widget for one schema field: its default, range and help text from the schema."""
    info = model.model_fields[name]
    default = info.default
    help_text = info.description or ""
    annotation = info.annotation
    origin_args = typing.get_args(annotation)
    if annotation is bool:
        return gr.Checkbox(value=bool(default), label=label, info=help_text, **kw)
    if typing.get_origin(annotation) is typing.Literal:
        return gr.Radio(list(origin_args), value=default, label=label, info=help_text, **kw)
    if annotation in (int, float) or (set(origin_args) <= {int, float, type(None)} and origin_args):
        integer = annotation is int or int in origin_args
        return gr.Number(
            value=default, label=label + _field_range(model, name), info=help_text, precision=0 if integer else None,
            **kw,
        )  # fmt: skip
    return gr.Textbox(value=default or "", label=label, info=help_text, **kw)


def create_curate_panel(ctx: AppContext, tokenizers: TokenizerCache) -> dict[str, Any]:
    settings = ctx.settings
    names = ctx.datasets.names()
    saved = list_pipelines(settings)
    start = DEFAULT_PIPELINE if DEFAULT_PIPELINE in saved else (saved[0] if saved else None)
    start_text = dump_pipeline(get_pipeline(settings, start)) if start else ""
    aliases = [v.config.alias for v in ctx.engines.resolver.list_aliases() if v.entry is not None] or ["default"]

    gr.Markdown(
        "## Curate a dataset\nPick a version and a pipeline of steps, **preview** it on a sample (what each step "
        "changes or drops, and why), then **run** it on every row: the rows kept become a new dataset version whose "
        "lineage records the source and the steps. Pipelines are YAML (`studio data curate PIPELINE.yaml --dataset "
        "NAME` runs the same one from the command line).",
        elem_id="curate-intro",
    )
    with gr.Row():
        dataset = gr.Dropdown(
            names,
            value=names[0] if names else None,
            label="Dataset",
            elem_id="curate-dataset",
            allow_custom_value=True,
            scale=2,
        )
        version = gr.Dropdown(
            version_choices(ctx.datasets, names[0] if names else ""), value=LATEST, label="Version",
            allow_custom_value=True, elem_id="curate-version", scale=2,
        )  # fmt: skip
        pipeline_pick = gr.Dropdown(
            saved, value=start, label="Saved pipeline", elem_id="curate-saved", allow_custom_value=True, scale=1
        )
    pipeline_text = gr.Code(
        value=start_text, language="yaml", label="Pipeline (YAML): steps run in order", elem_id="curate-pipeline"
    )
    with gr.Accordion("Steps and their settings", open=False):
        gr.Markdown(step_reference(), elem_id="curate-step-help")
    with gr.Row():
        sample = gr.Slider(5, 1000, value=50, step=1, label="Preview sample (rows)", elem_id="curate-sample")
        into = gr.Textbox(
            label="Write into dataset", placeholder="empty: a new version of the same dataset", elem_id="curate-into"
        )
    with gr.Row():
        preview_btn = gr.Button("Preview on a sample", elem_id="curate-preview-btn")
        run_btn = gr.Button("Run on every row → new version", variant="primary", elem_id="curate-run-btn")
        save_btn = gr.Button("Save pipeline", elem_id="curate-save-btn")
    summary = gr.Markdown(elem_id="curate-summary")
    funnel = gr.Plot(label="Rows through the pipeline", elem_id="curate-funnel")
    steps_table = gr.Dataframe(
        headers=STEP_COLUMNS, interactive=False, wrap=True, label="Steps", elem_id="curate-steps"
    )
    with gr.Accordion("Dropped and changed rows (examples)", open=True):
        examples = gr.Dataframe(headers=EXAMPLE_COLUMNS, interactive=False, wrap=True, elem_id="curate-examples")
    with gr.Accordion("Near-duplicate clusters", open=False):
        clusters = gr.Dataframe(headers=CLUSTER_COLUMNS, interactive=False, wrap=True, elem_id="curate-clusters")
    with gr.Accordion("Report as JSON", open=False):
        report_json = gr.JSON()
    lineage_plot = gr.Plot(label="Lineage", elem_id="curate-lineage")
    with gr.Accordion("Lineage as JSON", open=False):
        lineage_json = gr.JSON()

    with gr.Accordion("Augment with a model: paraphrase or synthesise", open=False, elem_id="curate-augment-box"):
        gr.Markdown(
            "Runs as a job (progress, cancel and resume in **Jobs & monitor**). Every generated row records the "
            "model, the prompt and the parameters that made it; the new version goes into the dataset named below."
        )
        with gr.Row():
            aug_model = gr.Dropdown(
                aliases, value=aliases[0], label="Model", info=AugmentConfig.model_fields["model"].description,
                allow_custom_value=True, elem_id="augment-model",
            )  # fmt: skip
            aug_mode = _widget(AugmentConfig, "mode", "Mode", elem_id="augment-mode")
            aug_fields = _widget(AugmentConfig, "fields", "Rewrite", elem_id="augment-fields")
        with gr.Row():
            aug_variants = _widget(AugmentConfig, "variants", "Variants per row", elem_id="augment-variants")
            aug_max_rows = _widget(AugmentConfig, "max_rows", "Rows to paraphrase", elem_id="augment-max-rows")
            aug_seeds = _widget(AugmentConfig, "seeds", "Seeds per request", elem_id="augment-seeds")
            aug_count = _widget(AugmentConfig, "count", "New examples", elem_id="augment-count")
        with gr.Row():
            aug_temperature = _widget(AugmentConfig, "temperature", "Temperature", elem_id="augment-temperature")
            aug_top_p = _widget(AugmentConfig, "top_p", "Top p", elem_id="augment-top-p")
            aug_max_tokens = _widget(AugmentConfig, "max_tokens", "Max new tokens", elem_id="augment-max-tokens")
            aug_seed = _widget(AugmentConfig, "seed", "Seed", elem_id="augment-seed")
        with gr.Row():
            aug_into = _widget(AugmentConfig, "into", "Into dataset", elem_id="augment-into")
            aug_include = _widget(AugmentConfig, "include_source", "Keep the source rows", elem_id="augment-include")
            aug_filter = gr.Dropdown(
                [NO_FILTER, *saved], value=NO_FILTER, label="Filter the generated rows with", allow_custom_value=True,
                info=AugmentConfig.model_fields["filter"].description, elem_id="augment-filter",
            )  # fmt: skip
        augment_btn = gr.Button("Submit augmentation job", variant="primary", elem_id="augment-submit")
        augment_md = gr.Markdown(elem_id="augment-result")
        augment_job = gr.Textbox(visible=False)

    def _version(value: str | None) -> int | None:
        return None if value in (None, "", LATEST) else int(str(value))

    def _pipeline(text: str) -> CurationPipeline:
        return load_pipeline(text or "", source="the pipeline box")

    def _counter(pipeline: CurationPipeline) -> Any:
        if pipeline.needs_tokens() and pipeline.tokenizer_model:
            return token_counter(settings, pipeline.tokenizer_model, tokenizers)
        return None

    def _context(pipeline: CurationPipeline) -> StepContext | None:
        # a judged quality step asks its model through this studio's engines (loaded on first use)
        return StepContext(chat=engine_chat(ctx.engines)) if pipeline.needs_judge() else None

    def _shown(result: CurationResult, head: str) -> tuple[Any, ...]:
        return (
            head + "\n\n```\n" + result.summary() + "\n```",
            funnel_figure(result),
            report_rows(result),
            example_rows(result),
            cluster_rows(result),
            result.to_dict() | {"kept_rows": None},
        )

    @handle_errors
    def do_preview(name: str, ver: str | None, text: str, rows: float, progress: gr.Progress = gr.Progress()) -> Any:  # noqa: B008
        pipeline = _pipeline(text)
        judged = " (the judge grades each row)" if pipeline.needs_judge() else ""
        progress(0, desc=f"running the steps on a sample{judged}")
        result = preview(
            ctx.datasets, name or "", pipeline, _version(ver), int(rows), _counter(pipeline), context=_context(pipeline)
        )
        kept = f"**Preview** of `{pipeline.name}` on {result.rows_in} of {result.total} rows: {len(result.kept)} kept."
        return _shown(result, kept)

    @handle_errors
    def do_run(name: str, ver: str | None, text: str, target: str, progress: gr.Progress = gr.Progress()) -> Any:  # noqa: B008
        pipeline = _pipeline(text)
        judged = " (the judge grades each row)" if pipeline.needs_judge() else ""
        progress(0, desc=f"running the steps on every row{judged}")
        outcome = curate(
            ctx.datasets, name or "", pipeline, _version(ver), target or None, _counter(pipeline),
            context=_context(pipeline),
        )  # fmt: skip
        made = outcome.import_result
        new = f"`{made.dataset.name}` v{made.version.number}"
        head = (
            f"**Done**: {new} has {made.version.num_examples} rows."
            if made.created
            else f"**No new version**: the rows kept are exactly {new}."
        )
        gr.Success(f"Curated {name} → {made.dataset.name} v{made.version.number}")
        graph = dataset_lineage(ctx.datasets, made.dataset.name)
        names_now = ctx.datasets.names()
        return (
            *_shown(outcome.result, head),
            lineage_figure(graph),
            graph.to_dict(),
            gr.Dropdown(choices=names_now),
            gr.Dropdown(choices=version_choices(ctx.datasets, name or ""), value=LATEST),
        )

    @handle_errors
    def do_save(text: str) -> tuple[Any, Any]:
        pipeline = _pipeline(text)
        path = save_pipeline(settings, pipeline)
        gr.Success(f"Saved pipeline {pipeline.name} ({path.name})")
        names_now = list_pipelines(settings)
        return gr.Dropdown(choices=names_now, value=pipeline.name), gr.Dropdown(choices=[NO_FILTER, *names_now])

    @handle_errors
    def do_load(name: str | None) -> str:
        return dump_pipeline(get_pipeline(settings, name)) if name else ""

    @handle_errors
    def do_lineage(name: str | None) -> tuple[Any, Any]:
        if not name:
            return None, {}
        graph = dataset_lineage(ctx.datasets, name)
        return lineage_figure(graph), graph.to_dict()

    def on_dataset(name: str | None) -> Any:
        return gr.Dropdown(choices=version_choices(ctx.datasets, name or ""), value=LATEST)

    @handle_errors
    def do_augment(name: str, ver: str | None, *values: Any) -> tuple[str, str]:
        (model, mode, fields, variants, max_rows, seeds, count, temperature, top_p, max_tokens, seed, target,
         include, filter_name) = values  # fmt: skip
        config = AugmentConfig.model_validate(
            {
                "dataset": name or "",
                "version": _version(ver),
                "model": model or "default",
                "mode": mode,
                "fields": fields,
                "variants": variants,
                "max_rows": max_rows or None,
                "seeds": seeds,
                "count": count,
                "temperature": temperature,
                "top_p": top_p,
                "max_tokens": max_tokens,
                "seed": seed,
                "into": target or "",
                "include_source": include,
                "filter": (get_pipeline(settings, filter_name) if filter_name and filter_name != NO_FILTER else None),
            }
        )
        job = submit_augment(ctx.db, settings, config)
        gr.Success(f"Augmentation job {job.id} queued")
        return (
            f"Job `{job.id}` queued: {config.mode} `{name}` with `{config.model}` into `{config.target}`. "
            "Follow it in **Jobs & monitor**.",
            job.id,
        )

    preview_event = preview_btn.click(
        do_preview,
        [dataset, version, pipeline_text, sample],
        [summary, funnel, steps_table, examples, clusters, report_json],
        api_name="finetune_curate_preview",
    )
    run_event = run_btn.click(
        do_run,
        [dataset, version, pipeline_text, into],
        [summary, funnel, steps_table, examples, clusters, report_json, lineage_plot, lineage_json, dataset, version],
        api_name="finetune_curate_run",
    )
    save_btn.click(do_save, [pipeline_text], [pipeline_pick, aug_filter], api_name="finetune_curate_save")
    pipeline_pick.input(do_load, [pipeline_pick], [pipeline_text], api_name="finetune_curate_pipeline")
    dataset.input(on_dataset, [dataset], [version], api_visibility="private", queue=False)
    lineage_btn_event = dataset.change(do_lineage, [dataset], [lineage_plot, lineage_json], api_name="finetune_lineage")
    augment_event = augment_btn.click(
        do_augment,
        [
            dataset,
            version,
            aug_model,
            aug_mode,
            aug_fields,
            aug_variants,
            aug_max_rows,
            aug_seeds,
            aug_count,
            aug_temperature,
            aug_top_p,
            aug_max_tokens,
            aug_seed,
            aug_into,
            aug_include,
            aug_filter,
        ],
        [augment_md, augment_job],
        api_name="finetune_augment",
    )

    def refresh() -> tuple[Any, Any, Any]:
        names_now = ctx.datasets.names()
        return (
            gr.Dropdown(choices=names_now),
            gr.Dropdown(choices=list_pipelines(settings)),
            gr.Dropdown(choices=[v.config.alias for v in ctx.engines.resolver.list_aliases() if v.entry is not None]),
        )

    return {
        "dataset": dataset,
        "version": version,
        "refresh_fn": refresh,
        "refresh_outputs": [dataset, pipeline_pick, aug_model],
        "lineage_fn": do_lineage,
        "lineage_outputs": [lineage_plot, lineage_json],
        "changed_events": [run_event],
        "preview_event": preview_event,
        "lineage_event": lineage_btn_event,
        "augment_event": augment_event,
        "augment_job": augment_job,
    }
