"""Evaluate "New run": models (aliases, ids, adapters), a dataset version or a text file, metrics, generation
parameters and a sample limit → an ``eval`` job. Its progress is polled by a ``gr.Timer``; Cancel asks the job to
stop. Wiring only: ``studio.evaluation.results`` builds the config and submits it."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from studio.context import AppContext
from studio.evaluation.config import EvalConfig, EvalGenerationConfig
from studio.evaluation.defaults import eval_form_defaults
from studio.evaluation.plugins import load_registry
from studio.evaluation.results import (
    adapter_choices,
    config_from_form,
    model_choices,
    run_progress,
    submit_eval,
    submit_eval_yaml,
    version_choices,
)
from studio.inference.params import field_help
from studio.jobs import queue

# a progress bar to read, not a slider to drag (issue 15, point 4); the value is the percentage done
PROGRESS_TEMPLATE = (
    '<div class="evaluate-progress">Progress <progress max="100" value="${value}" aria-label="Evaluation progress">'
    "</progress> <span>${value} %</span></div>"
)
PROGRESS_CSS = (
    ".evaluate-progress { display: flex; align-items: center; gap: 0.5em; } "
    ".evaluate-progress progress { flex: 0 1 32em; }"
)
EXAMPLE_YAML = """models: [HuggingFaceTB/SmolLM2-135M-Instruct]
dataset_file: configs/eval/data/quick-qa.jsonl
dataset: eval-quick-qa
metrics: [perplexity, rouge, exact_match]
generation: {temperature: 0.0, max_tokens: 32}
limit: 12
"""


def create_run_panel(ctx: AppContext) -> dict[str, Any]:
    models = model_choices(ctx.engines.resolver)
    metric_names = load_registry(ctx.settings).names()
    defaults = eval_form_defaults()
    datasets = ctx.datasets.names()
    preselected = defaults.pick_dataset(datasets)
    gr.Markdown("## New evaluation run", elem_id="evaluate-run-title")
    with gr.Row():
        model_pick = gr.Dropdown(
            models,
            value=[ctx.settings.default_model] if ctx.settings.default_model in models else models[:1],
            multiselect=True,
            allow_custom_value=True,
            label="Models (one or many)",
            info=EvalConfig.model_fields["models"].description,
            elem_id="evaluate-models",
            scale=3,
        )
        adapter = gr.Dropdown(
            ["", *adapter_choices(ctx.settings)],
            value="",
            allow_custom_value=True,
            label="Adapter (optional, for every model)",
            info="A PEFT adapter under STUDIO_HOME/adapters, or a path",
            elem_id="evaluate-adapter",
            scale=2,
        )
    with gr.Row():
        source = gr.Radio(
            [("Dataset version", "dataset"), ("Text file", "text")],
            value="dataset",
            label="Evaluate on",
            elem_id="evaluate-source",
            scale=1,
        )
        dataset = gr.Dropdown(
            datasets,
            value=preselected,
            label="Dataset",
            info=EvalConfig.model_fields["dataset"].description,
            elem_id="evaluate-dataset",
            scale=2,
        )
        version = gr.Dropdown(
            version_choices(ctx.datasets, preselected),
            value="latest",
            label="Version",
            elem_id="evaluate-version",
            scale=1,
        )
        text_file = gr.Textbox(
            label="Text file",
            placeholder="/path/to/text.txt or configs/eval/data/short-passages.txt",
            info=EvalConfig.model_fields["text_file"].description,
            visible=False,
            elem_id="evaluate-text-file",
            scale=2,
        )
    metrics = gr.Dropdown(
        metric_names,
        value=defaults.pick_metrics(metric_names),
        multiselect=True,
        allow_custom_value=True,  # plugins added after the page was built are accepted (the core checks names)
        label="Metrics",
        info="Built-in metrics and loaded plugins (see the Metrics & plugins sub-tab)",
        elem_id="evaluate-metrics",
    )
    gen = EvalGenerationConfig.model_fields
    with gr.Row():
        temperature = gr.Slider(
            0.0,
            2.0,
            value=0.0,
            step=0.05,
            label="Temperature",
            info=gen["temperature"].description,
            elem_id="evaluate-temperature",
        )
        max_tokens = gr.Slider(
            1,
            1024,
            value=defaults.max_tokens,
            step=1,
            label="Max tokens",
            info=gen["max_tokens"].description or field_help("max_tokens"),
            elem_id="evaluate-max-tokens",
        )
        limit = gr.Number(
            value=defaults.limit,
            precision=0,
            minimum=0,
            label="Sample limit",
            info="0 or empty = every example",
            elem_id="evaluate-limit",
        )
    with gr.Row():
        judge = gr.Dropdown(
            ["", *models],
            value="",
            allow_custom_value=True,
            label="Judge model (for the judge metric)",
            info="Any alias or model; grades with configs/eval/judge_rubric.yaml",
            elem_id="evaluate-judge",
        )
        name = gr.Textbox(label="Run name (optional)", elem_id="evaluate-name")
    with gr.Row():
        run_btn = gr.Button("Run evaluation", variant="primary", elem_id="evaluate-run")
        # offered only while the run shown is queued or running (the tab's timer says which)
        cancel_btn = gr.Button("Cancel", interactive=False, elem_id="evaluate-cancel")
    with gr.Accordion("…or run from an eval YAML config", open=False):
        yaml_box = gr.Code(EXAMPLE_YAML, language="yaml", label="Eval config", elem_id="evaluate-yaml")
        yaml_btn = gr.Button("Run this config", elem_id="evaluate-run-yaml")
    job_id = gr.Textbox(label="Run id", elem_id="evaluate-job-id", interactive=True)
    status = gr.Markdown(elem_id="evaluate-status")
    progress = gr.HTML(
        0, html_template=PROGRESS_TEMPLATE, css_template=PROGRESS_CSS, js_on_load=None, elem_id="evaluate-progress"
    )

    @handle_errors
    def run(
        models_v: list[str],
        adapter_v: str,
        source_v: str,
        dataset_v: str | None,
        version_v: str | None,
        text_v: str,
        metrics_v: list[str],
        temperature_v: float,
        max_tokens_v: float,
        limit_v: float | None,
        judge_v: str,
        name_v: str,
    ) -> tuple[str, str]:
        """Queue an evaluation run from the form; returns the run id and a status line."""
        config = config_from_form(
            models_v or [],
            adapter_v or None,
            source_v,
            dataset_v,
            version_v,
            text_v or None,
            metrics_v or [],
            float(temperature_v),
            int(max_tokens_v),
            int(limit_v) if limit_v else None,
            judge_v or None,
            name_v or "",
        )
        job = submit_eval(ctx.settings, ctx.db, config)
        return job.id, f"Queued run `{job.id}` — {job.name}"

    @handle_errors
    def run_yaml(text: str) -> tuple[str, str]:
        """Queue an evaluation run from eval YAML text."""
        job = submit_eval_yaml(ctx.settings, ctx.db, text)
        return job.id, f"Queued run `{job.id}` — {job.name}"

    @handle_errors
    def cancel(run_id: str) -> str:
        """Cancel a run: a queued one at once, a running one after its current example."""
        job = queue.request_cancel(ctx.db, (run_id or "").strip())
        return f"Run `{job.id}`: {job.message}"

    def switch_source(value: str) -> tuple[Any, Any, Any]:
        text = value == "text"
        return gr.Dropdown(visible=not text), gr.Dropdown(visible=not text), gr.Textbox(visible=text)

    def versions(name: str | None) -> Any:
        return gr.Dropdown(choices=version_choices(ctx.datasets, name), value="latest")

    form = [
        model_pick,
        adapter,
        source,
        dataset,
        version,
        text_file,
        metrics,
        temperature,
        max_tokens,
        limit,
        judge,
        name,
    ]
    run_event = run_btn.click(run, form, [job_id, status], api_name="evaluate_run", concurrency_limit=2)
    yaml_event = yaml_btn.click(run_yaml, [yaml_box], [job_id, status], api_name="evaluate_run_yaml")
    cancel_btn.click(cancel, [job_id], [status], api_name="evaluate_cancel")
    source.change(switch_source, [source], [dataset, version, text_file], api_visibility="private", queue=False)
    dataset.change(versions, [dataset], [version], api_visibility="private", queue=False)

    def refresh_choices(dataset_v: str | None) -> tuple[Any, Any, Any, Any]:
        names = model_choices(ctx.engines.resolver)
        stored = ctx.datasets.names()
        # a dataset deleted (or first imported) since the page was built: preselect again
        chosen = dataset_v if dataset_v in stored else eval_form_defaults().pick_dataset(stored)
        return (
            gr.Dropdown(choices=names),
            gr.Dropdown(choices=["", *adapter_choices(ctx.settings)]),
            gr.Dropdown(choices=stored, value=chosen),
            gr.Dropdown(choices=load_registry(ctx.settings).names()),
        )

    def progress_of(job: Any) -> float:
        """The progress display's value for a job row: percent done, one decimal."""
        return round(run_progress(job) * 100, 1)

    return {
        "job_id": job_id,
        "status": status,
        "progress": progress,
        "cancel": cancel_btn,
        "submit_events": [run_event, yaml_event],
        "progress_fn": progress_of,
        "refresh_fn": refresh_choices,
        "refresh_inputs": [dataset],
        "refresh_outputs": [model_pick, adapter, dataset, metrics],
    }
