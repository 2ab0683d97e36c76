"""Models tab, Exports panel: export a model (with an adapter merged in) as merged safetensors, GGUF, ONNX, a Triton
model repository or a Docker build context, as a background ``export`` job with its progress; the finished exports
with how they answered against their source. Wiring only: ``studio.export``.

A ``gr.Timer`` reads the export jobs' rows while one is queued or running; the list of finished exports (and the
model table, through the tab) is read again when one ends.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import first_cell_of_clicked_row, handle_errors
from studio.context import AppContext
from studio.db.tables import Job
from studio.evaluation.results import adapter_choices, model_choices
from studio.export.exporter import FORMATS, ExportInfo, list_exports
from studio.export.gguf import QUANTS
from studio.export.job import ExportConfig
from studio.jobs import queue
from studio.models.hub import human_bytes

JOB_COLUMNS = ["Job", "Export", "Format", "State", "Step", "Message"]
JOB_WIDTHS: list[str | int] = ["150px", "160px", "90px", "100px", "70px", "380px"]
EXPORT_COLUMNS = ["Name", "Format", "Source", "Registered as", "Checked", "Size", "Created"]
EXPORT_WIDTHS: list[str | int] = ["160px", "80px", "260px", "180px", "260px", "90px", "170px"]
REFRESH_S = 2.0
FIELDS = ExportConfig.model_fields


def _help(name: str) -> str:
    return FIELDS[name].description or ""


def export_job_rows(jobs: list[Job]) -> list[list[Any]]:
    """One row per export job, newest first."""
    return [
        [
            j.id,
            j.name or str(j.config.get("name") or ""),
            str(j.config.get("format", "")),
            j.state,
            f"{j.step}/{j.total_steps}" if j.total_steps else "-",
            _job_message(j),
        ]
        for j in jobs
    ]


def _job_message(job: Job) -> str:
    """The job's last message; a finished export says where it went and how it answered (never an absolute path)."""
    result = job.result or {}
    if job.state == queue.SUCCEEDED and result.get("name"):
        verification = result.get("verification") or {}
        checked = ""
        if verification:
            checked = (
                f": {verification.get('prompts_identical')}/{verification.get('prompts')} prompts identical on "
                f"{result.get('engine')}"
            )
        return f"published as $STUDIO_HOME/exports/{result['name']}{checked}"
    return (job.message or "").splitlines()[0][:300] if job.message else ""


def checked_text(info: ExportInfo) -> str:
    """How the export answered against its source: prompts identical, token agreement, engine."""
    v = info.verification or {}
    if not v:
        return "-"
    agreement = float(v.get("token_agreement") or 0.0)
    return (
        f"{v.get('prompts_identical')}/{v.get('prompts')} prompts identical, {100 * agreement:.1f}% tokens "
        f"({v.get('engine', '?')})"
    )


def export_rows(items: list[ExportInfo]) -> list[list[Any]]:
    """One row per finished export."""
    rows = []
    for e in items:
        source = e.source or {}
        label = str(source.get("model_id") or source.get("model") or "")
        if source.get("adapter"):
            label += f" + {source['adapter']}"
        rows.append(
            [
                e.name,
                e.format,
                label,
                e.registered_as or "-",
                checked_text(e),
                human_bytes(e.size_bytes),
                (e.created_at or "")[:19],
            ]
        )
    return rows


def _jobs(ctx: AppContext) -> list[Job]:
    return queue.list_jobs(ctx.db, kind="export", limit=50)


def _active(jobs: list[Job]) -> bool:
    return any(j.state in (queue.QUEUED, queue.RUNNING) for j in jobs)


def create_exports_panel(ctx: AppContext) -> dict[str, Any]:
    jobs = _jobs(ctx)
    gr.Markdown(
        "### Exports\nEach export runs as a background job into `STUDIO_HOME/exports/<name>/` with a manifest "
        "(source, lineage, package versions, sha256 of every file), and is checked before it is published: its greedy "
        "answers in its own engine against the source's on 8 prompts.",
        elem_id="export-title",
    )
    with gr.Row():
        fmt = gr.Dropdown(list(FORMATS), value="gguf", label="Format", info=_help("format"), elem_id="export-format")
        model = gr.Dropdown(
            ["default", *model_choices(ctx.engines.resolver)],
            value="default",
            allow_custom_value=True,
            label="Model",
            info=_help("model"),
            elem_id="export-model",
            scale=2,
        )
        adapter = gr.Dropdown(
            ["", *adapter_choices(ctx.settings)],
            value="",
            allow_custom_value=True,
            label="Adapter",
            info=_help("adapter"),
            elem_id="export-adapter",
        )
        quant = gr.Dropdown(["", *QUANTS], value="", label="Quant", info=_help("quant"), elem_id="export-quant")
        name = gr.Textbox(label="Name", info=_help("name"), elem_id="export-name")
    export_btn = gr.Button("Export", variant="primary", elem_id="export-start")
    status = gr.Markdown("", elem_id="export-status")
    job_table = gr.Dataframe(
        value=export_job_rows(jobs),
        headers=JOB_COLUMNS,
        column_widths=JOB_WIDTHS,
        interactive=False,
        wrap=True,
        elem_id="export-jobs",
        label="Export jobs",
    )
    with gr.Row():
        job = gr.Textbox(label="Export job", elem_id="export-job", scale=3)
        cancel_btn = gr.Button("Cancel", variant="secondary", elem_id="export-cancel", scale=1)
        refresh_btn = gr.Button("Refresh exports", elem_id="export-refresh", scale=1)
    exports = gr.Dataframe(
        value=export_rows(list_exports(ctx.settings)),
        headers=EXPORT_COLUMNS,
        column_widths=EXPORT_WIDTHS,
        interactive=False,
        wrap=True,
        elem_id="export-list",
        label="Finished exports",
    )
    timer = gr.Timer(REFRESH_S, active=_active(jobs))
    shown = gr.State({j.id: j.state for j in jobs})

    def update() -> tuple[Any, Any, dict[str, str], Any]:
        current = _jobs(ctx)
        return (
            export_job_rows(current),
            export_rows(list_exports(ctx.settings)),
            {j.id: j.state for j in current},
            gr.Timer(active=_active(current)),
        )

    @handle_errors
    def export_start(kind: str, source: str, with_adapter: str, gguf_type: str, wanted: str) -> tuple[Any, ...]:
        """Queue an export job (merged, gguf, onnx, triton or docker); returns its id."""
        config: dict[str, Any] = {"format": kind, "model": source or "default"}
        if with_adapter and with_adapter.strip():
            config["adapter"] = with_adapter.strip()
        if gguf_type:
            config["quant"] = gguf_type
        if wanted and wanted.strip():
            config["name"] = wanted.strip()
        queued = queue.submit(ctx.db, "export", config, settings=ctx.settings)
        label = queued.name or str(queued.config.get("name") or "")
        gr.Info(f"Export '{label}' queued as job {queued.id}")
        return (queued.id, f"Export **{label}** queued (job `{queued.id}`).", *update())

    @handle_errors
    def export_list() -> tuple[Any, Any, dict[str, str], Any]:
        """The export jobs (state, step, message) and the finished exports with their check against the source."""
        return update()

    @handle_errors
    def export_cancel(job_id: str) -> tuple[Any, Any, dict[str, str], Any]:
        """Stop an export job; nothing half-made is published."""
        queue.request_cancel(ctx.db, (job_id or "").strip())
        return update()

    def poll(before: dict[str, str]) -> tuple[Any, ...]:
        rows, done, states, timer_state = update()
        finished = [j for j, s in states.items() if s in queue.FINAL_STATES and before.get(j) != s]
        for job_id in finished:
            row = queue.get_job(ctx.db, job_id)
            label = row.name or str(row.config.get("name") or row.id)
            if row.state == queue.SUCCEEDED:
                gr.Info(f"Export '{label}' is done")
            else:
                gr.Warning(f"Export '{label}' {row.state}: {(row.message or '').splitlines()[0][:200]}")
        return rows, done, states, timer_state

    def sources() -> tuple[Any, Any]:
        # an adapter a training job registered (or a model pulled) since the page loaded is offered at once
        return (
            gr.Dropdown(choices=["default", *model_choices(ctx.engines.resolver)]),
            gr.Dropdown(choices=["", *adapter_choices(ctx.settings)]),
        )

    model.focus(sources, None, [model, adapter], api_visibility="private")
    adapter.focus(sources, None, [model, adapter], api_visibility="private")
    listed = [job_table, exports, shown, timer]
    start_event = export_btn.click(
        export_start, [fmt, model, adapter, quant, name], [job, status, *listed], api_name="export_start"
    )
    refresh_btn.click(export_list, None, listed, api_name="export_list")
    cancel_btn.click(export_cancel, [job], listed, api_name="export_cancel")
    timer.tick(poll, [shown], listed, api_visibility="private")
    job_table.select(first_cell_of_clicked_row, [job_table], [job], api_visibility="private")
    return {"start_event": start_event, "exports": exports}
