"""Safety → Compare: two audits' scorecards side by side (e.g. the base model vs its fine-tuned adapter): one
metric as grouped bars per category, and every group's metrics with the difference B - A.
Wiring only: ``studio.safety.audit_store`` and ``studio.safety.audit_report``."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from studio.context import AppContext
from studio.safety.audit_metrics import METRICS
from studio.safety.audit_report import COMPARE_COLUMNS, compare_figure, compare_rows, empty_figure
from studio.safety.audit_store import audit_choices, audit_scorecard, compare_scorecards


def create_compare_panel(ctx: AppContext) -> dict[str, Any]:
    choices = audit_choices(ctx.db)
    with gr.Row():
        a = gr.Dropdown(choices, label="Audit A", allow_custom_value=True, elem_id="safety-compare-a", scale=3)
        b = gr.Dropdown(choices, label="Audit B", allow_custom_value=True, elem_id="safety-compare-b", scale=3)
        metric = gr.Dropdown(
            [(label, key) for key, (label, _r, _w) in METRICS.items()],
            value="toxicity",
            label="Metric",
            elem_id="safety-compare-metric",
            scale=2,
        )
    with gr.Row():
        refresh_btn = gr.Button("Refresh audits", elem_id="safety-compare-refresh")
        compare_btn = gr.Button("Compare", variant="primary", elem_id="safety-compare-btn")
    plot = gr.Plot(empty_figure("choose two audits"), elem_id="safety-compare-plot")
    table = gr.Dataframe(headers=COMPARE_COLUMNS, interactive=False, label="A vs B", elem_id="safety-compare-table")

    @handle_errors
    def compare(job_a: str, job_b: str, metric: str) -> tuple[Any, Any]:
        card_a = audit_scorecard(ctx.db, job_a or "", ctx.settings)
        card_b = audit_scorecard(ctx.db, job_b or "", ctx.settings)
        return compare_figure(card_a, card_b, metric), compare_rows(compare_scorecards(card_a, card_b))

    def refresh(job_a: str | None, job_b: str | None) -> tuple[Any, Any]:
        fresh = audit_choices(ctx.db)
        return gr.Dropdown(choices=fresh, value=job_a), gr.Dropdown(choices=fresh, value=job_b)

    compare_btn.click(compare, [a, b, metric], [plot, table], api_name="safety_audit_compare")
    refresh_btn.click(refresh, [a, b], [a, b], api_visibility="private")
    return {"page_load_fn": lambda: refresh(None, None), "page_load_outputs": [a, b]}
