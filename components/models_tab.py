"""Models tab: every model on this machine (bundled, local folders, the Hugging Face cache, downloads) with its size,
format, parameters, chat template source, languages, licence and the aliases that use it; download more from the
Hugging Face Hub (list a repo's files and size first, then a background ``download`` job with progress, cancel and
resume); delete one. Wiring only: ``studio.models.catalog`` and ``studio.models.download``. Below: the Adapter
Manager (:mod:`components.models_adapters`), Exports (:mod:`components.models_exports`) and Deployments
(:mod:`components.models_deploy`) panels.

A ``gr.Timer`` reads the download jobs' rows while one is queued or running (the page owns nothing: a reload or
another browser shows the same), and the model table is read again when one finishes.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import first_cell_of_clicked_row, handle_errors
from components.models_adapters import create_adapters_panel
from components.models_deploy import create_deploy_panel
from components.models_exports import create_exports_panel
from studio.context import AppContext
from studio.jobs import queue
from studio.models.catalog import TABLE_COLUMNS, delete_model, model_rows
from studio.models.details import DetailsCache
from studio.models.download import (
    DownloadConfig,
    DownloadStatus,
    cancel_download,
    list_downloads,
    resume_download,
    submit_download,
)
from studio.models.hub import HubListing, human_bytes, list_hub_files

REFRESH_S = 2.0
#: px per column of the model table (names and templates wrap; the short columns keep room for their headers)
MODEL_WIDTHS: list[str | int] = ["250px", "140px", "110px", "90px", "110px", "170px", "110px", "110px", "150px", "90px"]
DOWNLOAD_WIDTHS: list[str | int] = ["150px", "200px", "100px", "190px", "100px", "110px", "300px"]
FILE_COLUMNS = ["File", "Size", "Downloaded", "Already in the cache"]
DOWNLOAD_COLUMNS = ["Job", "Model", "State", "Progress", "Speed", "Time left", "Message"]
FIELDS = DownloadConfig.model_fields


def _help(name: str) -> str:
    return FIELDS[name].description or ""


def listing_markdown(listing: HubListing) -> str:
    """What a download of ``listing`` takes: files, bytes, what is cached already, licence, languages, access."""
    chosen = [f for f in listing.files if f.selected]
    cached = [f for f in chosen if f.cached]
    lines = [
        f"**{listing.repo}** at `{listing.commit[:12]}` ({listing.revision}): {len(listing.files)} files, "
        f"{human_bytes(listing.total_bytes)} in all.",
        f"The download takes **{len(chosen)} files, {human_bytes(listing.download_bytes)}**"
        + (f" ({len(cached)} already in the cache)" if cached else "")
        + f"; the model needs {human_bytes(listing.selected_bytes)} on disk.",
    ]
    facts = []
    if listing.parameters:
        facts.append(f"{listing.parameters / 1e6:.1f}M parameters")
    if listing.license:
        facts.append(f"licence {listing.license}")
    if listing.languages:
        facts.append(f"languages {', '.join(listing.languages)}")
    if listing.quants:
        facts.append(f"GGUF quants {', '.join(listing.quants)}")
    if listing.gated:
        facts.append("gated: the token in use has access")
    if facts:
        lines.append(" · ".join(facts))
    return "  \n".join(lines)


def file_rows(listing: HubListing) -> list[list[str]]:
    """One row per file of the repo: name, size, whether the download takes it, whether the cache has it."""
    return [
        [f.name, human_bytes(f.size), "yes" if f.selected else "no", "yes" if f.cached else "-"]
        for f in sorted(listing.files, key=lambda f: (not f.selected, f.name))
    ]


def download_rows(statuses: list[DownloadStatus]) -> list[list[str]]:
    """One row per download job, newest first."""
    return [[s.job_id, s.name, s.state, s.progress_text(), s.speed_text(), s.eta_text(), s.message] for s in statuses]


def _active(statuses: list[DownloadStatus]) -> bool:
    return any(s.state in (queue.QUEUED, queue.RUNNING) for s in statuses)


def create_models_tab(ctx: AppContext) -> dict[str, Any]:
    cache = DetailsCache()  # parameters and cards per model file, read again when a file changes

    def rows() -> list[list[str]]:
        return [r.cells() for r in model_rows(ctx.registry, ctx.engines.resolver, cache)]

    def ids(table_rows: list[list[str]]) -> list[str]:
        return [r[0] for r in table_rows]

    initial = rows()
    statuses = list_downloads(ctx.db)
    with gr.Tab("Models", id="models"):
        gr.Markdown(
            "Every model on this machine: the bundled one, folders and GGUF files in `STUDIO_HOME/models`, and the "
            "Hugging Face cache, where downloads go (so other tools find them too). Click a row to pick a model.",
            elem_id="models-intro",
        )
        table = gr.Dataframe(
            value=initial,
            headers=TABLE_COLUMNS,
            column_widths=MODEL_WIDTHS,
            interactive=False,
            wrap=True,
            elem_id="models-table",
            label="Models",
        )
        with gr.Row(elem_id="models-actions"):
            model = gr.Dropdown(
                ids(initial),
                value=None,
                allow_custom_value=True,
                label="Model",
                info="The model the buttons act on.",
                elem_id="models-selected",
                scale=3,
            )
            use_btn = gr.Button("Use in Playground", variant="primary", elem_id="models-use", scale=1)
            refresh_btn = gr.Button("Refresh", elem_id="models-refresh", scale=1)
            delete_btn = gr.Button("Delete from disk", variant="stop", elem_id="models-delete", scale=1)
        force = gr.Checkbox(False, label="Delete even if aliases use it", elem_id="models-force")
        status = gr.Markdown("", elem_id="models-status")

        gr.Markdown("### Download from the Hugging Face Hub", elem_id="models-download-title")
        with gr.Row():
            repo = gr.Textbox(
                label="Repository",
                placeholder="HuggingFaceTB/SmolLM2-135M-Instruct",
                info=_help("repo"),
                elem_id="models-repo",
                scale=3,
            )
            revision = gr.Textbox(
                label="Revision", placeholder="main", info=_help("revision"), elem_id="models-revision"
            )
            file = gr.Textbox(label="File or quant", placeholder="Q4_K_M", info=_help("file"), elem_id="models-file")
        with gr.Row():
            files_btn = gr.Button("List files", elem_id="models-list-files")
            pull_btn = gr.Button("Download", variant="primary", elem_id="models-pull")
        summary = gr.Markdown("", elem_id="models-files-summary")
        files_table = gr.Dataframe(
            headers=FILE_COLUMNS, interactive=False, wrap=True, elem_id="models-files", label="Files in the repo"
        )
        downloads = gr.Dataframe(
            value=download_rows(statuses),
            headers=DOWNLOAD_COLUMNS,
            column_widths=DOWNLOAD_WIDTHS,
            interactive=False,
            wrap=True,
            elem_id="models-downloads",
            label="Downloads (click one to pick it)",
        )
        with gr.Row():
            job = gr.Textbox(label="Download job", elem_id="models-job", scale=3)
            cancel_btn = gr.Button("Cancel", elem_id="models-cancel", scale=1)
            resume_btn = gr.Button("Resume", elem_id="models-resume", scale=1)
            downloads_btn = gr.Button("Refresh downloads", elem_id="models-downloads-refresh", scale=1)
        timer = gr.Timer(REFRESH_S, active=_active(statuses))
        shown = gr.State({s.job_id: s.state for s in statuses})  # the states the page last showed
        adapters_panel = create_adapters_panel(ctx)
        create_exports_panel(ctx)
        deploy_panel = create_deploy_panel(ctx)

    def models_update(selected: str | None = None) -> tuple[Any, Any]:
        current = rows()
        names = ids(current)
        value = selected if selected in names else None
        return current, gr.Dropdown(choices=names, value=value)

    @handle_errors
    def list_models(selected: str | None) -> tuple[Any, Any]:
        """Every model with its size, format, parameters, chat template source, languages, licence and aliases."""
        return models_update(selected)

    @handle_errors
    def list_files(repo_id: str, rev: str, wanted: str) -> tuple[str, Any]:
        """The repo's files with their sizes, and what a download takes (before anything is downloaded)."""
        listing = list_hub_files(ctx.settings, repo_id, rev or None, wanted or None)
        return listing_markdown(listing), file_rows(listing)

    def downloads_update() -> tuple[Any, dict[str, str], Any]:
        current = list_downloads(ctx.db)
        return download_rows(current), {s.job_id: s.state for s in current}, gr.Timer(active=_active(current))

    @handle_errors
    def pull(repo_id: str, rev: str, wanted: str) -> tuple[str, Any, dict[str, str], Any]:
        """List the repo and queue its download as a background job; returns the job id."""
        queued = submit_download(ctx.settings, ctx.db, repo_id, revision=rev or None, file=wanted or None)
        return (queued.id, *downloads_update())

    @handle_errors
    def refresh_downloads() -> tuple[Any, dict[str, str], Any]:
        """The download jobs, newest first: state, bytes, speed, time left."""
        return downloads_update()

    @handle_errors
    def cancel(job_id: str) -> tuple[Any, dict[str, str], Any]:
        """Stop a download; what arrived is kept for a resume."""
        cancel_download(ctx.db, (job_id or "").strip())
        return downloads_update()

    @handle_errors
    def resume(job_id: str) -> tuple[Any, dict[str, str], Any]:
        """Queue a cancelled, failed or interrupted download again; it goes on from the bytes already there."""
        resume_download(ctx.db, (job_id or "").strip())
        return downloads_update()

    @handle_errors
    def delete(selected: str, also_used: bool) -> tuple[str, Any, Any]:
        """Remove a downloaded or local model from disk (unloading it first)."""
        removed = delete_model(
            ctx.registry, ctx.engines.resolver, selected or "", force=bool(also_used), engines=ctx.engines
        )
        return (removed.summary(), *models_update())

    def poll(before: dict[str, str], selected: str | None) -> tuple[Any, ...]:
        table_rows, states, timer_state = downloads_update()
        finished = [j for j, s in states.items() if s in queue.FINAL_STATES and before.get(j) != s]
        models: tuple[Any, Any] = models_update(selected) if finished else (gr.update(), gr.update())
        return (table_rows, states, timer_state, *models)

    refresh_btn.click(list_models, [model], [table, model], api_name="models_list")
    files_btn.click(list_files, [repo, revision, file], [summary, files_table], api_name="models_files")
    pull_event = pull_btn.click(pull, [repo, revision, file], [job, downloads, shown, timer], api_name="models_pull")
    downloads_btn.click(refresh_downloads, None, [downloads, shown, timer], api_name="models_downloads")
    cancel_btn.click(cancel, [job], [downloads, shown, timer], api_name="models_cancel")
    resume_btn.click(resume, [job], [downloads, shown, timer], api_name="models_resume")
    delete_event = delete_btn.click(delete, [model, force], [status, table, model], api_name="models_delete")
    timer.tick(poll, [shown, model], [downloads, shown, timer, table, model], api_visibility="private")
    table.select(first_cell_of_clicked_row, [table], [model], api_visibility="private")
    downloads.select(first_cell_of_clicked_row, [downloads], [job], api_visibility="private")
    return {
        "table": table,
        "model": model,
        "use_button": use_btn,
        "load_fn": lambda selected: (*models_update(selected), *downloads_update()),
        "load_inputs": [model],
        "load_outputs": [table, model, downloads, shown, timer],
        "pull_event": pull_event,
        "delete_event": delete_event,
        "deploy_use_event": deploy_panel["use_event"],
        "deploy_alias": deploy_panel["alias"],
        "adapters": adapters_panel,
        "batch_event": adapters_panel["batch_event"],
        "batch_sides": adapters_panel["batch_sides"],
    }
