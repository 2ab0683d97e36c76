"""Fine-Tune "Jobs & monitor": the jobs table and one job's progress bar, step/epoch, ETA, loss / eval loss /
learning rate / grad norm curves, log tail and memory, refreshed every 2 s by a ``gr.Timer`` that reads the
database (the page owns nothing: reloading it, or opening it elsewhere, shows the same). Cancel, Resume, and
"Load in Playground" once the job succeeded. Wiring only: ``studio.training.service`` and ``studio.jobs.queue``."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from components.finetune.render import CSS, artifact_markdown, as_table, job_header_html
from studio.context import AppContext
from studio.errors import StudioError
from studio.jobs import queue
from studio.monitoring.jobs import job_resources, job_resources_figure
from studio.training.service import (
    JOB_COLUMNS,
    JobView,
    grad_norm_figure,
    job_result_rows,
    job_rows,
    job_view,
    latest_job_id,
    learning_rate_figure,
    list_finetune_jobs,
    load_trained,
    loss_figure,
    memory_figure,
)
from studio.users.ownership import user_names

RESULT_COLUMNS = ["Result", "Value"]
ALL_STATES = "all"
REFRESH_S = 2.0


def create_monitor_panel(ctx: AppContext) -> dict[str, Any]:
    gr.Markdown("## Training jobs", elem_id="finetune-jobs-title")
    with gr.Row():
        state_filter = gr.Dropdown(
            [ALL_STATES, *queue.STATES], value=ALL_STATES, label="State", elem_id="finetune-jobs-state", scale=1
        )
        refresh_btn = gr.Button("Refresh", scale=0, min_width=110, elem_id="finetune-jobs-refresh")
    table = gr.Dataframe(
        value=job_rows(
            list_finetune_jobs(ctx.db), user_names(ctx.db)
        ),  # read again on every page load (see finetune_tab)
        headers=list(JOB_COLUMNS),
        interactive=False,
        wrap=True,
        max_height=300,
        label="Jobs (click a row to monitor it)",
        elem_id="finetune-jobs-table",
    )
    with gr.Row():
        job_box = gr.Textbox(
            value=latest_job_id(ctx.db),
            label="Job id",
            placeholder="click a row, or paste a job id",
            elem_id="finetune-job-id",
            scale=3,
        )
        show_btn = gr.Button("Show", scale=0, min_width=90, elem_id="finetune-job-show")
        # offered only while the job is queued or running (the monitor's refresh says which)
        cancel_btn = gr.Button("Cancel", interactive=False, scale=0, min_width=110, elem_id="finetune-job-cancel")
        resume_btn = gr.Button("Resume", scale=0, min_width=110, elem_id="finetune-job-resume")
        load_btn = gr.Button("Load in Playground", scale=0, min_width=180, elem_id="finetune-job-load")
        private_btn = gr.Button(
            "Private/shared",
            scale=0,
            min_width=150,
            elem_id="finetune-job-private",
        )
    header = gr.HTML(job_header_html(None), css_template=CSS, elem_id="finetune-job-header")
    action_md = gr.Markdown(elem_id="finetune-job-action")
    artifact_md = gr.Markdown(elem_id="finetune-job-artifact")
    with gr.Row():
        loss_plot = gr.Plot(label="Loss", elem_id="finetune-loss-plot")
        lr_plot = gr.Plot(label="Learning rate", elem_id="finetune-lr-plot")
        grad_plot = gr.Plot(label="Gradient norm", elem_id="finetune-grad-plot")
        # CPU %, RSS, GPU memory of the job's process tree, sampled by its worker; peaks and device in the title
        resources_plot = gr.Plot(label="Job resources", elem_id="finetune-resources-plot")
    with gr.Row():
        with gr.Column(scale=3):
            log_box = gr.Textbox(
                label="Log (last lines)",
                info="The job's own lines; progress is the bar above. Warnings of the libraries it uses are kept "
                "apart, in STUDIO_HOME/runs/<job id>/output.txt.",
                lines=12,
                max_lines=12,
                autoscroll=True,
                elem_id="finetune-job-log",
            )
        with gr.Column(scale=2):
            memory_plot = gr.Plot(label="Memory", elem_id="finetune-memory-plot")
            results = gr.Dataframe(
                headers=RESULT_COLUMNS, interactive=False, label="Result", elem_id="finetune-job-result"
            )
    with gr.Accordion("Job data (JSON)", open=False):
        job_json = gr.JSON(label="Job", elem_id="finetune-job-json")
    timer = gr.Timer(REFRESH_S)
    seen = gr.State(None)  # what the page shows now: redraw only when the job changed
    seen_rows = gr.State(None)

    # -- handlers --------------------------------------------------------------------------------------------
    def view_outputs(view: JobView | None) -> list[Any]:
        if view is None:
            return [
                job_header_html(None),
                "",
                None,
                None,
                None,
                None,
                None,
                "",
                [],
                None,
                gr.Button(interactive=False),
            ]
        return [
            job_header_html(view),
            artifact_markdown(view),
            loss_figure(view.series),
            learning_rate_figure(view.series),
            grad_norm_figure(view.series),
            job_resources_figure(job_resources(ctx.db, view.id)),
            memory_figure(view.memory) if view.memory is not None else None,
            view.log_tail,
            as_table(job_result_rows(view), RESULT_COLUMNS),
            view.to_dict(),
            gr.Button(interactive=view.can_cancel),
        ]

    @handle_errors
    def show(job_id: str) -> list[Any]:
        view = job_view(ctx.settings, ctx.db, job_id) if (job_id or "").strip() else None
        return [*view_outputs(view), view.signature if view else None]

    def tick(job_id: str, last: Any, state: str, last_rows: Any) -> list[Any]:
        """Timer: redraw the job only if something changed, the table only if its rows changed."""
        rows = job_rows(list_finetune_jobs(ctx.db, None if state == ALL_STATES else state), user_names(ctx.db))
        table_out: Any = gr.skip() if rows == last_rows else as_table(rows, list(JOB_COLUMNS))
        try:
            view = job_view(ctx.settings, ctx.db, job_id) if (job_id or "").strip() else None
        except StudioError:  # a half-typed id: keep showing what is there
            return [*([gr.skip()] * len(show_outputs)), table_out, rows]
        signature = view.signature if view else None
        if signature == last and not (view is not None and view.state == queue.RUNNING):
            return [*([gr.skip()] * len(show_outputs)), table_out, rows]
        if signature == last and view is not None:  # running but unchanged: only memory and resources move
            memory = memory_figure(view.memory) if view.memory is not None else gr.skip()
            unchanged = [gr.skip()] * len(show_outputs)
            unchanged[next(i for i, c in enumerate(view_targets) if c is memory_plot)] = memory
            unchanged[next(i for i, c in enumerate(view_targets) if c is resources_plot)] = job_resources_figure(
                job_resources(ctx.db, view.id)
            )
            return [*unchanged, table_out, rows]
        return [*view_outputs(view), signature, table_out, rows]

    @handle_errors
    def list_jobs(state: str) -> Any:
        """Fine-tuning jobs, newest first (all states, or one): id, name, state, progress, step, created, message."""
        rows = job_rows(
            list_finetune_jobs(ctx.db, None if state in (None, "", ALL_STATES) else state), user_names(ctx.db)
        )
        return as_table(rows, list(JOB_COLUMNS))

    @handle_errors
    def job_json_of(job_id: str) -> dict[str, Any]:
        """One job as JSON: state, progress, step/epoch, ETA, message, metric series, result, artifact path."""
        return job_view(ctx.settings, ctx.db, job_id).to_dict()

    @handle_errors
    def cancel(job_id: str) -> tuple[str, dict[str, Any]]:
        """Cancel a job: a queued one at once, a running one at its next step (a checkpoint is saved)."""
        job = queue.request_cancel(ctx.db, (job_id or "").strip())
        gr.Info(f"Job {job.id}: {job.message}")
        return f"Job {job.id}: {job.message}", job_view(ctx.settings, ctx.db, job.id).to_dict()

    @handle_errors
    def toggle_private(job_id: str) -> tuple[str, dict[str, Any]]:
        """Make the job private (only its owner and admins see it) or share it with the team again."""
        job = queue.get_job(ctx.db, (job_id or "").strip())
        job = queue.set_private(ctx.db, job.id, not job.private)
        state = "private: only you and admins see it" if job.private else "shared read-only with the team"
        gr.Info(f"Job {job.id} is now {state}")
        return f"Job {job.id} is now {state}.", job_view(ctx.settings, ctx.db, job.id).to_dict()

    @handle_errors
    def resume(job_id: str) -> tuple[str, dict[str, Any]]:
        """Queue an interrupted, cancelled or failed job again; it continues from its last checkpoint."""
        job = queue.resume(ctx.db, (job_id or "").strip())
        gr.Info(f"Job {job.id}: {job.message}")
        return f"Job {job.id}: {job.message}", job_view(ctx.settings, ctx.db, job.id).to_dict()

    @handle_errors
    def load(job_id: str, progress: gr.Progress = gr.Progress()) -> str:  # noqa: B008
        """Load a succeeded job's base model with its trained adapter active (or the fully fine-tuned model)
        for chatting in the Playground."""
        progress(0.2, desc="Loading the base model and the trained adapter")
        model = load_trained(ctx.engines, ctx.db, (job_id or "").strip())
        view = job_view(ctx.settings, ctx.db, job_id)
        what = f"adapter **{view.registered_as}** active" if view.artifact_kind == "adapter" else "fine-tuned model"
        gr.Info(f"Loaded {model} with the trained {view.artifact_kind}; chat with it in the Playground")
        return f"**{model}** loaded with the {what}: open the Playground tab and pick `{model}`."

    def select_row(evt: gr.SelectData, data: Any) -> str:
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        values = data.values.tolist() if hasattr(data, "values") else data
        return str(values[row][0]) if values and row is not None and row < len(values) else ""

    view_targets = [
        header,
        artifact_md,
        loss_plot,
        lr_plot,
        grad_plot,
        resources_plot,
        memory_plot,
        log_box,
        results,
        job_json,
        cancel_btn,
    ]
    show_outputs = [*view_targets, seen]
    timer.tick(
        tick,
        [job_box, seen, state_filter, seen_rows],
        [*show_outputs, table, seen_rows],
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
    refresh_btn.click(list_jobs, [state_filter], [table], api_name="finetune_jobs")
    state_filter.input(list_jobs, [state_filter], [table], api_visibility="private")
    show_btn.click(job_json_of, [job_box], [job_json], api_name="finetune_job")
    show_btn.click(show, [job_box], show_outputs, api_visibility="private")
    job_box.submit(show, [job_box], show_outputs, api_visibility="private")
    table.select(select_row, [table], [job_box], api_visibility="private", queue=False).then(
        show, [job_box], show_outputs, api_visibility="private"
    )
    cancel_btn.click(cancel, [job_box], [action_md, job_json], api_name="finetune_cancel").then(
        show, [job_box], show_outputs, api_visibility="private"
    )
    private_btn.click(toggle_private, [job_box], [action_md, job_json], api_name="finetune_private").then(
        show, [job_box], show_outputs, api_visibility="private"
    )
    resume_btn.click(resume, [job_box], [action_md, job_json], api_name="finetune_resume").then(
        show, [job_box], show_outputs, api_visibility="private"
    )
    load_event = load_btn.click(load, [job_box], [action_md], api_name="finetune_load", concurrency_limit=1)

    def page_load() -> tuple[Any, str]:
        """After a (re)load the page shows the jobs and the newest job, as stored in the database."""
        return as_table(job_rows(list_finetune_jobs(ctx.db), user_names(ctx.db)), list(JOB_COLUMNS)), latest_job_id(
            ctx.db
        )

    return {
        "page_load_fn": page_load,
        "page_load_outputs": [table, job_box],
        "job_id": job_box,
        "show_fn": show,
        "show_outputs": show_outputs,
        "table": table,
        "list_fn": list_jobs,
        "state_filter": state_filter,
        "load_event_btn": load_btn,
        "load_event": load_event,
    }
