"""The Cost panel (issue 20, point 4): the user's own price table, editable here, and what jobs cost -- totals per
day, per user and per experiment from their measured running time (studio.monitoring.costs)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from components.finetune.render import as_table
from studio.context import AppContext
from studio.monitoring.costs import cost_totals, load_costs, save_costs
from studio.users.ownership import user_names

TOTAL_COLUMNS = ["Day / user / experiment", "Jobs", "Hours", "Cost"]
BY = [("Per day (UTC)", "day"), ("Per user", "user"), ("Per experiment", "experiment")]


def create_cost_panel(ctx: AppContext) -> dict[str, Any]:
    """The panel's components and its load function (``load_fn`` / ``load_outputs``)."""
    gr.Markdown("### Cost", elem_id="cost-title")
    note = gr.Markdown(elem_id="cost-note")
    with gr.Row():
        by = gr.Radio(BY, value="day", label="Totals", elem_id="cost-by", scale=3)
        totals_btn = gr.Button("Refresh", scale=0, min_width=110, elem_id="cost-refresh")
    totals = gr.Dataframe(headers=TOTAL_COLUMNS, interactive=False, elem_id="cost-totals", label="What jobs cost")
    with gr.Accordion("Price table (your own figures)", open=False, elem_id="cost-table-box"):
        table_yaml = gr.Code(language="yaml", label="costs.yaml", elem_id="cost-table", interactive=True)
        save_btn = gr.Button("Save price table", variant="primary", elem_id="cost-save")

    def summary() -> tuple[str, str]:
        table, text = load_costs(ctx.settings)
        line = (
            f"Prices in **{table.currency}**, your own figures ({table.source or 'no source given'}): "
            f"{table.cpu_core_per_hour:g}/h per CPU core, {table.gpu_per_hour['default']:g}/h per GPU unless named. "
            "A job costs its measured running time at its device's price."
        )
        return line, text

    @handle_errors
    def show_totals(what: str) -> Any:
        """Jobs that ran, their hours and cost: per day (UTC), per user or per experiment (kind: name)."""
        table, _text = load_costs(ctx.settings)
        rows = cost_totals(ctx.db, table, what or "day", owners=user_names(ctx.db))
        data = [[r.key, r.jobs, round(r.hours, 3), f"{r.amount:.4f} {r.currency}"] for r in rows]
        return as_table(data, TOTAL_COLUMNS)

    @handle_errors
    def save(text: str) -> tuple[str, str, Any]:
        """Check and save the price table (STUDIO_HOME/costs.yaml); an invalid one names the field, saves nothing."""
        table = save_costs(ctx.settings, text or "")
        gr.Info(f"Saved the price table ({table.currency})")
        line, saved = summary()
        return line, saved, show_totals("day")

    def load() -> tuple[str, str, Any]:
        line, text = summary()
        return line, text, show_totals("day")

    totals_btn.click(show_totals, [by], [totals], api_name="costs_totals")
    by.input(show_totals, [by], [totals], api_visibility="private")
    save_btn.click(save, [table_yaml], [note, table_yaml, totals], api_name="costs_save")
    return {"load_fn": load, "load_outputs": [note, table_yaml, totals]}
