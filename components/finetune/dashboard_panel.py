"""Fine-Tune "Dashboard": what supervised fine-tuning is, counts of datasets and jobs, recent jobs, quick actions.
Wiring only; the counts come from ``studio.training.service.dashboard_summary``."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.finetune.render import CSS, SFT_HERO, as_table, dashboard_stats_html
from studio.context import AppContext
from studio.training.service import JOB_COLUMNS, dashboard_summary


def create_dashboard_panel(ctx: AppContext) -> dict[str, Any]:
    summary = dashboard_summary(ctx.db)
    gr.Markdown(
        "## Supervised Fine-Tuning\nTrain custom AI models with labeled examples (input → output pairs) through "
        "supervised learning.",
        elem_id="finetune-dashboard-title",
    )
    gr.HTML(SFT_HERO, css_template=CSS, elem_id="finetune-hero")
    gr.Markdown("#### Quick Actions")
    with gr.Row():
        with gr.Column(min_width=200):
            upload_btn = gr.Button("Upload Labeled Examples", variant="primary", elem_id="finetune-action-upload")
            gr.Markdown("<small>Input → Output pairs</small>")
        with gr.Column(min_width=200):
            start_btn = gr.Button("Start Training Job", variant="primary", elem_id="finetune-action-start")
            gr.Markdown("<small>Supervised learning</small>")
        with gr.Column(min_width=200):
            import_btn = gr.Button("Import from Conversations", elem_id="finetune-action-import")
            gr.Markdown("<small>Saved Playground conversations become labeled examples</small>")
    with gr.Row():
        gr.Markdown("#### Stats")
        refresh_btn = gr.Button("Refresh", scale=0, min_width=110, elem_id="finetune-dashboard-refresh")
    stats = gr.HTML(dashboard_stats_html(summary), css_template=CSS, elem_id="finetune-dashboard-stats")
    recent = gr.Dataframe(
        value=summary.recent_jobs,  # read again on every page load (see finetune_tab)
        headers=list(JOB_COLUMNS),
        interactive=False,
        wrap=True,
        label="Recent training jobs",
        elem_id="finetune-recent-jobs",
    )

    def refresh() -> tuple[str, Any]:
        summary = dashboard_summary(ctx.db)
        return dashboard_stats_html(summary), as_table(summary.recent_jobs, list(JOB_COLUMNS))

    refresh_btn.click(refresh, None, [stats, recent], api_visibility="private", queue=False)
    return {
        "upload_btn": upload_btn,
        "start_btn": start_btn,
        "import_btn": import_btn,
        "refresh_fn": refresh,
        "outputs": [stats, recent],
    }
