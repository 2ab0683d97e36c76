"""Evaluate "Results": eval runs, one run's metric × model table, a plotly bar chart comparing the models, and the
per-example drill-down (input, reference, output, scores) worst first. Wiring only: ``studio.evaluation.results``."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from studio.context import AppContext
from studio.errors import StudioError
from studio.evaluation.results import (
    EXAMPLE_COLUMNS,
    ResultsView,
    list_eval_runs,
    results_view,
    run_rows,
)

RUN_COLUMNS = ["id", "name", "state", "progress", "created", "message"]
ALL_MODELS = "all models"


def create_results_panel(ctx: AppContext, job_id: gr.Textbox) -> dict[str, Any]:
    gr.Markdown("## Results", elem_id="evaluate-results-title")
    with gr.Row():
        runs = gr.Dataframe(
            value=run_rows(list_eval_runs(ctx.db)),
            headers=RUN_COLUMNS,
            interactive=False,
            wrap=True,
            max_height=220,
            label="Eval runs (click a row to show it)",
            elem_id="evaluate-runs-table",
        )
    with gr.Row():
        model_filter = gr.Dropdown([ALL_MODELS], value=ALL_MODELS, label="Examples of", elem_id="evaluate-model-filter")
        sort_by = gr.Dropdown([], value=None, label="Worst first by", elem_id="evaluate-sort-by")
        show_btn = gr.Button("Show results", elem_id="evaluate-show", scale=0, min_width=140)
        refresh_btn = gr.Button("Refresh runs", elem_id="evaluate-runs-refresh", scale=0, min_width=100)
    notes = gr.Markdown(elem_id="evaluate-notes")
    summary = gr.Dataframe(
        headers=["metric"], interactive=False, label="Metric × model", elem_id="evaluate-summary-table"
    )
    chart = gr.Plot(label="Models compared", visible=False, elem_id="evaluate-chart")
    examples = gr.Dataframe(
        headers=list(EXAMPLE_COLUMNS),
        interactive=False,
        wrap=True,
        max_height=420,
        label="Per-example drill-down (worst first)",
        elem_id="evaluate-examples-table",
    )

    def outputs_of(view: ResultsView) -> list[Any]:
        labels = view.results.labels
        keys = view.results.metric_keys()
        return [
            view.notes,
            gr.Dataframe(value=view.rows, headers=view.headers),
            gr.Plot(value=view.figure, visible=view.figure is not None),  # no bare axes before the first score
            gr.Dataframe(value=view.examples, headers=list(EXAMPLE_COLUMNS)),
            gr.Dropdown(choices=[ALL_MODELS, *labels]),
            gr.Dropdown(choices=keys, value=view.sort_by),
        ]

    @handle_errors
    def show(run_id: str, model: str | None, key: str | None) -> list[Any]:
        """One run's results: notes, metric × model table, bar chart, examples worst first."""
        view = results_view(ctx.db, run_id, None if model in (None, "", ALL_MODELS) else model, key or None)
        return outputs_of(view)

    def refresh_runs() -> Any:
        return gr.Dataframe(value=run_rows(list_eval_runs(ctx.db)), headers=RUN_COLUMNS)

    def select_run(evt: gr.SelectData, data: Any) -> str:
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        values = data.values.tolist() if hasattr(data, "values") else data
        return str(values[row][0]) if values and row is not None and row < len(values) else ""

    def quiet_show(run_id: str, model: str | None, key: str | None) -> list[Any]:
        """For timers and page loads: nothing changes when the id is empty or unknown."""
        try:
            return show(run_id, model, key) if (run_id or "").strip() else [gr.skip()] * 6
        except (StudioError, gr.Error):
            return [gr.skip()] * 6

    outputs = [notes, summary, chart, examples, model_filter, sort_by]
    show_btn.click(show, [job_id, model_filter, sort_by], outputs, api_name="evaluate_results")
    refresh_btn.click(refresh_runs, None, [runs], api_visibility="private")
    model_filter.input(show, [job_id, model_filter, sort_by], outputs, api_visibility="private")
    sort_by.input(show, [job_id, model_filter, sort_by], outputs, api_visibility="private")
    runs.select(select_run, [runs], [job_id], api_visibility="private", queue=False).then(
        quiet_show, [job_id, model_filter, sort_by], outputs, api_visibility="private"
    )
    return {
        "runs": runs,
        "refresh_runs_fn": refresh_runs,
        "show_fn": quiet_show,
        "show_inputs": [job_id, model_filter, sort_by],
        "show_outputs": outputs,
    }
