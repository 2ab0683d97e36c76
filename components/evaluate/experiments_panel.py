"""Evaluate "Experiments": every training job and eval run with its config; compare a set (overlaid loss curves,
perplexity trends, metric table, config diff); tag, favourite and archive runs; filter by tag. Wiring only:
``studio.evaluation.experiments``."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from components.tables import column_widths
from studio.context import AppContext
from studio.evaluation.experiments import (
    EXPERIMENT_COLUMNS,
    all_tags,
    compare,
    experiment_rows,
    list_experiments,
    parse_ids,
    set_archived,
    set_favourite,
    set_tags,
)

ANY_TAG = "any tag"
#: px per column (components/tables.py): the id stays on one line, names wrap
EXPERIMENT_WIDTHS = {
    "id": 290,
    "kind": 90,
    "name": 210,
    "state": 110,
    "tags": 110,
    "favourite": 120,
    "archived": 115,
    "created": 160,
}


def create_experiments_panel(ctx: AppContext) -> dict[str, Any]:
    gr.Markdown("## Experiments", elem_id="evaluate-experiments-title")
    with gr.Row():
        tag_filter = gr.Dropdown(
            [ANY_TAG, *all_tags(ctx.db)],
            value=ANY_TAG,
            label="Tag",
            allow_custom_value=True,
            elem_id="evaluate-exp-tag-filter",
        )
        show_archived = gr.Checkbox(False, label="Show archived", elem_id="evaluate-exp-archived")
        favourites = gr.Checkbox(False, label="Favourites only", elem_id="evaluate-exp-favourites")
        list_btn = gr.Button("List", scale=0, min_width=90, elem_id="evaluate-exp-list")
    table = gr.Dataframe(
        value=experiment_rows(list_experiments(ctx.db)),
        headers=list(EXPERIMENT_COLUMNS),
        column_widths=column_widths(EXPERIMENT_COLUMNS, EXPERIMENT_WIDTHS, default=120),
        interactive=False,
        wrap=True,
        max_height=300,
        label="Training jobs and eval runs (click rows to add them to the comparison)",
        elem_id="evaluate-exp-table",
    )
    with gr.Row():
        ids = gr.Textbox(label="Runs to compare (ids, comma separated)", elem_id="evaluate-exp-ids", scale=4)
        compare_btn = gr.Button("Compare", variant="primary", scale=0, min_width=120, elem_id="evaluate-exp-compare")
        clear_btn = gr.Button("Clear", scale=0, min_width=80, elem_id="evaluate-exp-clear")
    with gr.Row():
        tags = gr.Textbox(
            label="Tags of the first selected run", placeholder="baseline, lora", elem_id="evaluate-exp-tags"
        )
        tag_btn = gr.Button("Save tags", scale=0, min_width=120, elem_id="evaluate-exp-save-tags")
        fav_btn = gr.Button("Favourite / unfavourite", scale=0, min_width=200, elem_id="evaluate-exp-favourite")
        archive_btn = gr.Button("Archive / restore", scale=0, min_width=180, elem_id="evaluate-exp-archive")
    action = gr.Markdown(elem_id="evaluate-exp-action")
    with gr.Row():
        loss_plot = gr.Plot(label="Loss curves", elem_id="evaluate-exp-loss")
        ppl_plot = gr.Plot(label="Perplexity", elem_id="evaluate-exp-perplexity")
    metric_table = gr.Dataframe(
        headers=["metric"], interactive=False, wrap=True, label="Metrics", elem_id="evaluate-exp-metrics"
    )
    configs = gr.JSON(label="Full configs and runtime of the compared runs", elem_id="evaluate-exp-configs")
    diff_table = gr.Dataframe(
        headers=["config key"],
        interactive=False,
        wrap=True,
        label="Config diff (keys that differ)",
        elem_id="evaluate-exp-diff",
    )

    def rows(tag: str | None, archived: bool, favs: bool) -> Any:
        jobs = list_experiments(ctx.db, None if tag in (None, "", ANY_TAG) else tag, archived, favs)
        return gr.Dataframe(value=experiment_rows(jobs), headers=list(EXPERIMENT_COLUMNS))

    @handle_errors
    def list_runs(tag: str | None, archived: bool, favs: bool) -> tuple[Any, Any]:
        """Experiments newest first, filtered by tag (archived hidden unless asked)."""
        return rows(tag, archived, favs), gr.Dropdown(choices=[ANY_TAG, *all_tags(ctx.db)])

    @handle_errors
    def run_compare(id_text: str) -> list[Any]:
        """Compare runs: loss curves, perplexity, metric table, config diff, full configs and runtime."""
        c = compare(ctx.db, id_text)
        return [
            c.loss,
            c.perplexity,
            gr.Dataframe(value=c.metric_rows, headers=c.metric_headers),
            gr.Dataframe(value=c.diff_rows, headers=c.diff_headers),
            c.configs(),
        ]

    def first_id(id_text: str) -> str:
        found = parse_ids(id_text or "")
        if not found:
            raise gr.Error("pick a run first: click a row of the table")
        return found[0]

    @handle_errors
    def save_tags(id_text: str, tag_text: str) -> str:
        """Replace the tags of the first selected run."""
        job = set_tags(ctx.db, first_id(id_text), tag_text or "")
        return f"Run `{job.id[:8]}` tags: {', '.join(job.tags) or '(none)'}"

    @handle_errors
    def toggle_favourite(id_text: str) -> str:
        """Favourite or unfavourite the first selected run."""
        from studio.jobs import queue

        job = queue.get_job(ctx.db, first_id(id_text))
        job = set_favourite(ctx.db, job.id, not job.favourite)
        return f"Run `{job.id[:8]}` is {'a favourite' if job.favourite else 'no longer a favourite'}"

    @handle_errors
    def toggle_archive(id_text: str) -> str:
        """Archive or restore the first selected run."""
        from studio.jobs import queue

        job = queue.get_job(ctx.db, first_id(id_text))
        job = set_archived(ctx.db, job.id, not job.archived)
        return f"Run `{job.id[:8]}` {'archived' if job.archived else 'restored'}"

    def add_row(evt: gr.SelectData, data: Any, id_text: str) -> tuple[str, str]:
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        values = data.values.tolist() if hasattr(data, "values") else data
        if not values or row is None or row >= len(values):
            return id_text, gr.skip()
        chosen = parse_ids(id_text or "")
        picked = str(values[row][0])
        if picked not in chosen:
            chosen.append(picked)
        return ", ".join(chosen), str(values[row][4]) if len(chosen) == 1 else gr.skip()

    filters = [tag_filter, show_archived, favourites]
    list_btn.click(list_runs, filters, [table, tag_filter], api_name="evaluate_experiments")
    tag_filter.input(rows, filters, [table], api_visibility="private")
    show_archived.input(rows, filters, [table], api_visibility="private")
    favourites.input(rows, filters, [table], api_visibility="private")
    compare_btn.click(
        run_compare, [ids], [loss_plot, ppl_plot, metric_table, diff_table, configs], api_name="evaluate_compare"
    )
    clear_btn.click(lambda: "", None, [ids], api_visibility="private", queue=False)
    table.select(add_row, [table, ids], [ids, tags], api_visibility="private", queue=False)
    tag_btn.click(save_tags, [ids, tags], [action], api_name="evaluate_tag").then(
        rows, filters, [table], api_visibility="private"
    )
    fav_btn.click(toggle_favourite, [ids], [action], api_name="evaluate_favourite").then(
        rows, filters, [table], api_visibility="private"
    )
    archive_btn.click(toggle_archive, [ids], [action], api_name="evaluate_archive").then(
        rows, filters, [table], api_visibility="private"
    )

    def page_load() -> Any:
        return rows(ANY_TAG, False, False)

    return {"table": table, "page_load_fn": page_load, "page_load_outputs": [table]}
