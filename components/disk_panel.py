"""The Disk panel (issue 20, point 3): what everything under STUDIO_HOME takes, the free space, and clean-ups that
say what they will free before they do it (studio.monitoring.disk)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from components.finetune.render import as_table
from studio.context import AppContext
from studio.models.hub import human_bytes
from studio.monitoring.disk import CleanupPlan, apply_plan, disk_usage, make_plan

DISK_COLUMNS = ["Kind", "Name", "Size", "Details"]
ACTIONS = [
    ("Old checkpoints of a run (keep the newest and the best)", "checkpoints"),
    ("All checkpoints of a finished run (its result is saved)", "checkpoints-all"),
    ("Dataset versions no job uses (keep the latest)", "dataset-versions"),
]


def create_disk_panel(ctx: AppContext) -> dict[str, Any]:
    """The panel's components and its load function (``load_fn`` / ``load_outputs``)."""
    gr.Markdown("### Disk", elem_id="disk-title")
    summary = gr.Markdown(elem_id="disk-summary")
    table = gr.Dataframe(headers=DISK_COLUMNS, interactive=False, wrap=True, elem_id="disk-table", label="On disk")
    with gr.Row():
        refresh_btn = gr.Button("Refresh", scale=0, min_width=110, elem_id="disk-refresh")
    with gr.Accordion("Clean up", open=False, elem_id="disk-cleanup-box"):
        with gr.Row():
            action = gr.Dropdown(ACTIONS, value="checkpoints", label="What", elem_id="disk-action", scale=3)
            target = gr.Textbox(label="Job id or dataset name", elem_id="disk-target", scale=2)
            preview_btn = gr.Button("Preview", scale=0, min_width=110, elem_id="disk-preview")
        plan_md = gr.Markdown(elem_id="disk-plan")
        plan_json = gr.JSON(label="The plan", elem_id="disk-plan-json", visible=False)
        plan_state = gr.State(None)
        delete_btn = gr.Button("Delete what the preview shows", variant="stop", elem_id="disk-delete")

    def usage() -> tuple[str, Any, dict[str, Any]]:
        """Every model, adapter, export, dataset and run with its size (largest first) and the free space."""
        report = disk_usage(ctx.settings, ctx.db)
        rows = [[i.kind, i.name, human_bytes(i.bytes), i.detail] for i in report.items]
        line = (
            f"**{human_bytes(report.free_bytes)} free** of {human_bytes(report.volume_bytes)} on the volume of "
            f"`STUDIO_HOME`; the studio's models, adapters, exports, datasets and runs take "
            f"{human_bytes(report.used_bytes)}."
        )
        return line, as_table(rows, DISK_COLUMNS), report.to_dict()

    @handle_errors
    def preview(what: str, name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """What a clean-up would delete (paths under STUDIO_HOME) and free, and what it keeps (with the reason);
        nothing is deleted: "Delete" then deletes exactly this."""
        plan = make_plan(ctx.settings, ctx.db, what, (name or "").strip())
        lines = [f"**{plan.summary()}**"]
        lines += [f"- delete `$STUDIO_HOME/{p}`" for p in plan.paths[:50]]
        lines += [f"- keep {k}" for k in plan.kept]
        return "\n".join(lines), plan.to_dict(), plan.to_dict()

    @handle_errors
    def delete(shown: dict[str, Any] | None) -> tuple[str, None, str, Any]:
        """Delete exactly what the last preview showed (refused if that changed since)."""
        if not shown:
            raise gr.Error("Preview the clean-up first: it shows what will be deleted.")
        plan = CleanupPlan(**shown)
        freed = apply_plan(ctx.settings, ctx.db, plan)
        gr.Info(f"Freed {human_bytes(freed)} of {plan.target}")
        line, rows, _data = usage()
        return f"Freed **{human_bytes(freed)}** of {plan.target}.", None, line, rows

    disk_json = gr.JSON(visible=False)
    refresh_btn.click(usage, None, [summary, table, disk_json], api_name="disk_usage")
    preview_btn.click(preview, [action, target], [plan_md, plan_json, plan_state], api_name="disk_cleanup_preview")
    delete_btn.click(delete, [plan_state], [plan_md, plan_state, summary, table], api_name="disk_cleanup")
    return {"load_fn": usage, "load_outputs": [summary, table, disk_json]}
