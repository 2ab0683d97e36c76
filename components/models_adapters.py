"""Models tab, Adapter Manager panel: every PEFT adapter (base, method, rank / target modules, size, origin), upload
one (a .zip of a PEFT folder; safetensors only, checked against its base before it is registered), rename, delete
(refused while loaded), enable / disable on a loaded model, compare with its base (speed measured now on the loaded
model; quality as one evaluation job of both), and push an adapter or an export to the Hugging Face Hub as a job.
Wiring only: ``studio.models.adapters``, ``adapter_upload``, ``adapter_compare`` and ``studio.export.push``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr

from components.common import first_cell_of_clicked_row, handle_errors
from studio.compare.stream import ContenderSpec
from studio.context import AppContext
from studio.errors import ValidationError
from studio.export.exporter import list_exports
from studio.export.push import submit_push
from studio.jobs import queue
from studio.models.adapter_compare import compare_speed, disable_adapter, enable_adapter, submit_quality_comparison
from studio.models.adapter_upload import upload_adapter
from studio.models.adapters import (
    AdapterInfo,
    adapter_owner,
    adapters_dir,
    delete_adapter,
    get_adapter,
    list_adapters,
    rename_adapter,
)
from studio.models.hub import human_bytes
from studio.settings import BUNDLED_MODEL_ID

ADAPTER_COLUMNS = ["Name", "Base model", "Method", "Rank", "Target modules", "Size", "Origin", "Loaded on", "Created"]
ADAPTER_WIDTHS: list[str | int] = ["150px", "200px", "100px", "70px", "200px", "80px", "130px", "150px", "170px"]
SPEED_PROMPTS = ["What is the capital of France?", "Write one sentence about the sea."]
BATCH_PROMPTS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Give three tips for a job interview.",
    "Explain what a neural network is in one sentence.",
]


def adapter_rows(items: list[AdapterInfo], owners: dict[str, str | None] | None = None) -> list[list[Any]]:
    """One row per adapter; a broken one says why in its method column; the origin names the owner when known."""
    owners = owners or {}

    def origin(a: AdapterInfo) -> str:
        where = f"job {a.job_id}" if a.job_id else a.origin
        owner = owners.get(a.name)
        return f"{where} · {owner}" if owner else where

    return [
        [
            a.name,
            a.base_model or "-",
            a.method if a.problem is None else f"unusable: {a.problem}",
            "-" if a.rank is None else a.rank,
            ", ".join(a.target_modules) or "-",
            human_bytes(a.size_bytes),
            origin(a),
            ", ".join(a.loaded_on) or "-",
            a.created[:19],
        ]
        for a in items
    ]


def speed_markdown(result: dict[str, Any]) -> str:
    """The speed comparison as a small table: tok/s, time to first token and tokens, both ways."""
    a, b = result["with_adapter"], result["base"]
    ratio = result.get("speed_ratio")
    lines = [
        f"**{result['adapter']}** on {result['model']}, {result['prompts']} prompts x {result['max_tokens']} tokens, "
        "greedy, the same loaded weights (measured now):",
        "",
        "| | with adapter | base |",
        "|---|---|---|",
        f"| tokens/s (decode) | {_num(a['tokens_per_s'], '.1f')} | {_num(b['tokens_per_s'], '.1f')} |",
        f"| time to first token | {_num(a['ttft_s'], '.2f', ' s')} | {_num(b['ttft_s'], '.2f', ' s')} |",
        f"| tokens | {a['completion_tokens']} | {b['completion_tokens']} |",
    ]
    if ratio is not None:
        lines.append(f"\nSpeed with the adapter: **{ratio:.2f}x** the base's.")
    return "\n".join(lines)


def _num(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def create_adapters_panel(ctx: AppContext) -> dict[str, Any]:
    def owners_of(listed: list[AdapterInfo]) -> dict[str, str | None]:
        folder = adapters_dir(ctx.settings)
        return {a.name: adapter_owner(ctx.settings, folder / a.name, ctx.db) for a in listed}

    items = list_adapters(ctx.settings, ctx.engines)
    names = [a.name for a in items]
    gr.Markdown(
        "### Adapters\nPEFT adapters in `STUDIO_HOME/adapters`: trained here (linked to their job) or uploaded.",
        elem_id="adapters-title",
    )
    table = gr.Dataframe(
        value=adapter_rows(items, owners_of(items)),
        headers=ADAPTER_COLUMNS,
        column_widths=ADAPTER_WIDTHS,
        interactive=False,
        wrap=True,
        elem_id="adapters-table",
        label="Adapters (click one to pick it)",
    )
    with gr.Row(elem_id="adapters-actions"):
        adapter = gr.Dropdown(
            names, value=None, allow_custom_value=True, label="Adapter", elem_id="adapters-selected", scale=2
        )
        new_name = gr.Textbox(label="New name", elem_id="adapters-new-name", scale=2)
        rename_btn = gr.Button("Rename", elem_id="adapters-rename", scale=1)
        delete_btn = gr.Button("Delete", variant="secondary", elem_id="adapters-delete", scale=1)
        refresh_btn = gr.Button("Refresh", elem_id="adapters-refresh", scale=1)
    status = gr.Markdown("", elem_id="adapters-status")
    with gr.Accordion("Upload an adapter", open=False, elem_id="adapters-upload-box"):
        with gr.Row():
            upload = gr.File(
                label="A .zip of a PEFT adapter folder, or the folder's files (adapter_config.json + "
                "adapter_model.safetensors)",
                file_count="multiple",
                file_types=[".zip", ".json", ".safetensors", ".bin", ".md", ".txt"],
                elem_id="adapters-upload",
                scale=2,
            )
            upload_name = gr.Textbox(
                label="Name",
                info="Default: the zip's name (for loose files: adapter-<date>).",
                elem_id="adapters-upload-name",
            )
            upload_base = gr.Textbox(
                label="Base model", info="Default: the one adapter_config.json names.", elem_id="adapters-upload-base"
            )
        upload_btn = gr.Button("Upload and check", variant="primary", elem_id="adapters-upload-btn")
    with gr.Accordion("Use on a loaded model, compare with its base", open=True, elem_id="adapters-use-box"):
        with gr.Row():
            loaded = gr.Dropdown(
                ctx.engines.loaded_keys(),
                value=None,
                allow_custom_value=True,
                label="Loaded model",
                info="A model loaded in the Playground (transformers engine).",
                elem_id="adapters-model",
                scale=2,
            )
            enable_btn = gr.Button("Enable", elem_id="adapters-enable", scale=1)
            disable_btn = gr.Button("Disable", elem_id="adapters-disable", scale=1)
            speed_btn = gr.Button("Compare speed with base", elem_id="adapters-speed", scale=1)
            quality_btn = gr.Button("Compare quality (eval job)", elem_id="adapters-quality", scale=1)
            batch_btn = gr.Button("Batch A/B in Compare", elem_id="adapters-batch-ab", scale=1)
        compare_out = gr.Markdown("", elem_id="adapters-compare")
        batch_sides = [gr.Textbox(visible=False) for _ in range(3)]  # side A, side B, prompts for Compare
    with gr.Accordion("Push to the Hugging Face Hub", open=False, elem_id="adapters-push-box"):
        with gr.Row():
            push_source = gr.Dropdown(
                names + [e.name for e in list_exports(ctx.settings)],
                value=None,
                allow_custom_value=True,
                label="Adapter or export",
                elem_id="push-source",
                scale=2,
            )
            repo = gr.Textbox(label="Repository", placeholder="you/my-adapter", elem_id="push-repo", scale=2)
            private = gr.Checkbox(True, label="Private", elem_id="push-private")
            token = gr.Textbox(
                label="Token",
                type="password",
                info="Used once by the job, never stored; empty: HF_TOKEN on the server.",
                elem_id="push-token",
                scale=2,
            )
        with gr.Row():
            push_btn = gr.Button("Push", variant="primary", elem_id="push-start")
            push_job = gr.Textbox(label="Push job", elem_id="push-job", scale=2)
            push_refresh = gr.Button("Push status", elem_id="push-refresh")
        push_status = gr.Markdown("", elem_id="push-status")

    def update(pick: str | None = None) -> tuple[Any, Any, Any]:
        current = list_adapters(ctx.settings, ctx.engines)
        current_names = [a.name for a in current]
        return (
            adapter_rows(current, owners_of(current)),
            gr.Dropdown(choices=current_names, value=pick if pick in current_names else None),
            gr.Dropdown(choices=current_names + [e.name for e in list_exports(ctx.settings)]),
        )

    listed = [table, adapter, push_source]

    @handle_errors
    def adapters_list(pick: str | None) -> tuple[Any, Any, Any]:
        """Every adapter: base model, method, rank, target modules, size, origin, where it is loaded."""
        return update(pick)

    @handle_errors
    def adapters_upload(files: Any, name: str, base: str) -> tuple[Any, ...]:
        """Register an uploaded PEFT adapter (a .zip of its folder, or the folder's files) after checking it against
        its base (safetensors only)."""
        paths = [Path(f if isinstance(f, str) else getattr(f, "name", str(f))) for f in _as_list(files)]
        if not paths:
            raise gr.Error("Choose a .zip of the adapter folder, or the folder's files, first")
        wanted, base_model = (name or "").strip() or None, (base or "").strip() or None
        if len(paths) == 1 and paths[0].suffix.lower() == ".zip":
            info = upload_adapter(ctx.settings, paths[0], wanted, base_model=base_model)
        else:
            if any(p.suffix.lower() == ".zip" for p in paths):
                raise gr.Error("Upload one .zip alone, or the adapter folder's files without a zip")
            with tempfile.TemporaryDirectory(dir=ctx.settings.home) as tmp:
                folder = Path(tmp) / "adapter"
                folder.mkdir()
                for p in paths:  # a browser sends a folder's files without the folder: gather them again
                    shutil.copyfile(p, folder / p.name)
                default = time.strftime("adapter-%Y%m%d-%H%M%S")
                info = upload_adapter(ctx.settings, folder, wanted or default, base_model=base_model)
        note = "" if not info.warnings else " " + "; ".join(info.warnings)
        return (f"Registered **{info.name}** ({info.method} on {info.base_model}).{note}", *update(info.name))

    @handle_errors
    def adapters_rename(old: str, new: str) -> tuple[Any, ...]:
        """Rename an adapter (refused while it is loaded)."""
        info = rename_adapter(ctx.settings, old or "", (new or "").strip(), ctx.engines, ctx.db)
        return (f"Renamed **{old}** to **{info.name}**.", *update(info.name))

    @handle_errors
    def adapters_delete(name: str) -> tuple[Any, ...]:
        """Delete an adapter (refused while it is loaded, naming the model to unload)."""
        removed = delete_adapter(ctx.settings, name or "", ctx.engines, ctx.db)
        return (removed.summary(), *update())

    @handle_errors
    def adapters_enable(model: str, name: str) -> str:
        """Make the adapter the active one of the loaded model (loading it onto the model when needed)."""
        state = enable_adapter(ctx.engines, model or "", name or "")
        return f"**{state.model}** now answers with **{state.active}** (loaded: {', '.join(state.loaded)})."

    @handle_errors
    def adapters_disable(model: str) -> str:
        """Make the loaded model answer as its base again (its adapters stay loaded)."""
        state = disable_adapter(ctx.engines, model or "")
        return f"**{state.model}** answers as its base model (adapters loaded: {', '.join(state.loaded) or 'none'})."

    @handle_errors
    def adapters_compare_speed(model: str, name: str, progress: gr.Progress = gr.Progress()) -> str:  # noqa: B008
        """tok/s and time to first token with and without the adapter, same prompts, on the loaded model."""

        def step(done: int, total: int) -> None:
            progress(done / total, desc=f"prompt {done} of {total}")

        result = compare_speed(ctx.engines, model or "", name or "", SPEED_PROMPTS, on_progress=step)
        return speed_markdown(result)

    @handle_errors
    def adapters_compare_quality(name: str) -> str:
        """Queue one evaluation job that scores the base and the base + adapter on the same dataset and metrics."""
        queued = submit_quality_comparison(ctx.settings, ctx.db, name or "")
        return (
            f"Evaluation job `{queued.job_id}` queued: **{queued.adapter_label}** against **{queued.base_label}** on "
            f"{queued.dataset} (metrics {', '.join(queued.metrics)}). The scores appear side by side in the Evaluate "
            "tab when it ends."
        )

    @handle_errors
    def adapters_batch_ab(name: str) -> tuple[str, str, str]:
        """The base and the base + adapter as Compare's batch A/B sides (with a few prompts to start from)."""
        info = get_adapter(ctx.settings, name or "", ctx.engines)
        if info.problem is not None:
            raise ValidationError(f"adapter '{info.name}' cannot be used: {info.problem}", param="adapter")
        base = info.base_model or BUNDLED_MODEL_ID
        return base, ContenderSpec(base, info.name).label, "\n".join(BATCH_PROMPTS)

    @handle_errors
    def adapters_push(source: str, repo_id: str, is_private: bool, hub_token: str) -> tuple[str, str]:
        """Queue a push of an adapter or export to the Hugging Face Hub, with a generated model card."""
        job = submit_push(
            ctx.settings, ctx.db, source or "", repo_id or "", private=bool(is_private), token=hub_token or None
        )
        return job.id, f"Push job `{job.id}` queued: **{source}** to `{repo_id}`."

    @handle_errors
    def adapters_push_status(job_id: str) -> str:
        """Where a push job stands (its message says what arrived, or why it failed)."""
        job = queue.get_job(ctx.db, (job_id or "").strip())
        url = (job.result or {}).get("url")
        return f"Push `{job.id}`: **{job.state}**. {job.message}" + (f" {url}" if url else "")

    refresh_btn.click(adapters_list, [adapter], listed, api_name="adapters_list")
    upload_btn.click(adapters_upload, [upload, upload_name, upload_base], [status, *listed], api_name="adapters_upload")
    rename_btn.click(adapters_rename, [adapter, new_name], [status, *listed], api_name="adapters_rename")
    delete_btn.click(adapters_delete, [adapter], [status, *listed], api_name="adapters_delete")
    enable_btn.click(adapters_enable, [loaded, adapter], [compare_out], api_name="adapters_enable")
    disable_btn.click(adapters_disable, [loaded], [compare_out], api_name="adapters_disable")
    speed_btn.click(adapters_compare_speed, [loaded, adapter], [compare_out], api_name="adapters_compare_speed")
    quality_btn.click(adapters_compare_quality, [adapter], [compare_out], api_name="adapters_compare_quality")
    batch_event = batch_btn.click(adapters_batch_ab, [adapter], batch_sides, api_name="adapters_batch_ab")
    push_btn.click(
        adapters_push, [push_source, repo, private, token], [push_job, push_status], api_name="adapters_push"
    )
    push_refresh.click(adapters_push_status, [push_job], [push_status], api_name="adapters_push_status")
    table.select(first_cell_of_clicked_row, [table], [adapter], api_visibility="private")
    loaded_refresh = lambda: gr.Dropdown(choices=ctx.engines.loaded_keys())  # noqa: E731
    return {
        "batch_event": batch_event,
        "batch_sides": batch_sides,
        "loaded": loaded,
        "loaded_fn": loaded_refresh,
        "refresh_fn": lambda: update(),
        "listed": listed,
    }


def _as_list(files: Any) -> list[Any]:
    if not files:
        return []
    return list(files) if isinstance(files, (list, tuple)) else [files]
