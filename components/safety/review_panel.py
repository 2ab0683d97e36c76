"""Safety → Review: an audit's generations, worst first; pick one, mark it acceptable or problematic, write a
corrected response; export every corrected response as a version of a supervised dataset for fine-tuning.
Wiring only: ``studio.safety.audit_store``."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from components.tables import column_widths
from studio.context import AppContext
from studio.safety.audit_report import GENERATION_COLUMNS, generation_rows
from studio.safety.audit_store import (
    export_corrected,
    get_generation,
    list_generations,
    review_generation,
)

#: px per column (components/tables.py): the reply takes the room, the figures keep theirs
GENERATION_WIDTHS = {
    "Id": 70,
    "Category": 115,
    "Group": 100,
    "Template": 115,
    "Toxicity": 115,
    "Refusal": 110,
    "Sentiment": 125,
    "Review": 100,
    "Reply": 360,
}
FILTERS = [
    ("Worst per category", "worst"),
    ("All", "all"),
    ("Not reviewed", "unreviewed"),
    ("Problematic", "problematic"),
    ("With a corrected response", "corrected"),
]
NOT_REVIEWED = "not reviewed"


def create_review_panel(ctx: AppContext, job: gr.Dropdown) -> dict[str, Any]:
    with gr.Row():
        only = gr.Dropdown(FILTERS, value="worst", label="Show", elem_id="safety-review-filter", scale=2)
        list_btn = gr.Button("Refresh", scale=0, min_width=110, elem_id="safety-review-refresh")
    table = gr.Dataframe(
        headers=GENERATION_COLUMNS,
        column_widths=column_widths(GENERATION_COLUMNS, GENERATION_WIDTHS),
        interactive=False,
        wrap=True,
        max_height=360,
        label="Generations (click a row to review it)",
        elem_id="safety-review-table",
    )
    with gr.Row():
        with gr.Column():
            gen_id = gr.Number(label="Generation id", precision=0, elem_id="safety-review-id")
            prompt = gr.Textbox(label="Prompt", interactive=False, elem_id="safety-review-prompt")
            reply = gr.Textbox(label="Model reply", lines=5, interactive=False, elem_id="safety-review-reply")
        with gr.Column():
            verdict = gr.Radio(
                [NOT_REVIEWED, "acceptable", "problematic"],
                value=NOT_REVIEWED,
                label="Review",
                elem_id="safety-review-verdict",
            )
            corrected = gr.Textbox(
                label="Corrected response",
                lines=5,
                info="What the model should have answered (exported as training data).",
                elem_id="safety-review-corrected",
            )
            save_btn = gr.Button("Save review", variant="primary", elem_id="safety-review-save")
    review_status = gr.Markdown(elem_id="safety-review-status")
    with gr.Accordion("Export corrected responses as a dataset", open=False):
        with gr.Row():
            dataset = gr.Textbox(value="audit-corrections", label="Dataset name", elem_id="safety-export-name")
            export_btn = gr.Button("Export", elem_id="safety-export-btn")
        export_status = gr.Markdown(elem_id="safety-export-status")

    @handle_errors
    def list_rows(job_id: str | None, only: str) -> Any:
        if not job_id:
            return []
        return generation_rows(list_generations(ctx.db, job_id, only=only, settings=ctx.settings))  # type: ignore[arg-type]

    @handle_errors
    def open_generation(evt: gr.SelectData, rows: Any) -> tuple[Any, ...]:
        row_index = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        generation_id = int(rows.iloc[row_index, 0]) if hasattr(rows, "iloc") else int(rows[row_index][0])
        g = get_generation(ctx.db, generation_id)
        return g.id, g.prompt, g.response, g.review or NOT_REVIEWED, g.corrected or ""

    @handle_errors
    def save(generation_id: float | None, verdict: str, corrected: str) -> dict[str, Any]:
        if generation_id is None:
            raise gr.Error("choose a generation: click a row of the table")
        g = review_generation(ctx.db, int(generation_id), None if verdict == NOT_REVIEWED else verdict, corrected)
        return {"id": g.id, "review": g.review, "corrected": g.corrected, "reviewed_at": str(g.reviewed_at or "")}

    @handle_errors
    def export(job_id: str | None, name: str) -> str:
        done = export_corrected(ctx.datasets, ctx.db, [job_id] if job_id else [], name.strip())
        v = done.result.version
        new = "new version" if done.result.created else "unchanged (same content as"
        return f"Dataset **{done.result.dataset.name}** v{v.number}: {done.examples} example(s), {new}" + (
            "" if done.result.created else f" v{v.number})"
        )

    saved_json = gr.JSON(visible=False)
    list_btn.click(list_rows, [job, only], [table], api_visibility="private")
    only.change(list_rows, [job, only], [table], api_visibility="private")
    job.change(list_rows, [job, only], [table], api_visibility="private")
    table.select(open_generation, [table], [gen_id, prompt, reply, verdict, corrected], api_visibility="private")
    saved = save_btn.click(save, [gen_id, verdict, corrected], [saved_json], api_name="safety_audit_review")
    saved.success(
        lambda r: f"Saved review of generation {r['id']}.", [saved_json], [review_status], api_visibility="private"
    ).then(list_rows, [job, only], [table], api_visibility="private")
    export_btn.click(export, [job, dataset], [export_status], api_name="safety_audit_export")
    return {"table": table}
