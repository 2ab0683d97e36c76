"""Preference export and the feedback loop: dataset version → DPO / reward job → adapter back into Compare."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from studio.compare import feedback
from studio.compare.export import export_preferences
from studio.context import AppContext

ALL = "(all)"


def create_loop_panel(ctx: AppContext, contenders: gr.Dropdown) -> dict[str, Any]:
    gr.Markdown(
        "Votes (A or B better) and rankings become **prompt / chosen / rejected** pairs in a new dataset version "
        "(ties and 'both bad' left out, each ranking expanded into pairs). Train on it with **DPO** (TRL "
        "DPOTrainer, LoRA) or a **reward model** (TRL RewardTrainer); a finished DPO adapter can go straight "
        "back into side-by-side comparison against its base."
    )
    with gr.Row():
        name = gr.Textbox(value="compare-preferences", label="Dataset name", elem_id="compare-export-name")
        use_case = gr.Textbox(label="Only use case (optional)", elem_id="compare-export-use-case")
        tag = gr.Textbox(label="Only tag (optional)", elem_id="compare-export-tag")
    export_btn = gr.Button("Export preference dataset", variant="primary", elem_id="compare-export")
    exported = gr.Markdown("", elem_id="compare-export-result")
    version = gr.Number(label="Version", precision=0, interactive=False, elem_id="compare-export-version")
    with gr.Row():
        kind = gr.Radio(["dpo", "reward"], value="dpo", label="Job", elem_id="compare-job-kind")
        base = gr.Textbox(value="default", label="Base model", elem_id="compare-job-base")
    job_yaml = gr.Code(language="yaml", label="Job config (editable)", elem_id="compare-job-yaml")
    submit = gr.Button("Submit job", variant="primary", elem_id="compare-job-submit")
    with gr.Row():
        job_id = gr.Textbox(label="Job id", elem_id="compare-job-id")
        status_btn = gr.Button("Job status", elem_id="compare-job-status-btn", scale=0)
    status = gr.Markdown("", elem_id="compare-job-status")
    loop_btn = gr.Button("Compare this job's adapter with its base", elem_id="compare-loop")
    timer = gr.Timer(5.0, active=False)  # polls the job only while one is queued or running

    @handle_errors
    def export(dataset: str, uc: str, tg: str, which: str, base_model: str) -> list[Any]:
        """Write the preference pairs as a new dataset version and prefill the job config for it."""
        result = export_preferences(ctx.datasets, ctx.db, dataset, use_case=uc or None, tag=tg or None)
        text = feedback.preference_job_yaml(which, result.dataset, result.version, base_model or None)
        return [result.summary(), result.version, text]

    @handle_errors
    def prefill(dataset: str, number: float | None, which: str, base_model: str) -> str:
        return feedback.preference_job_yaml(which, dataset, int(number) if number else None, base_model or None)

    @handle_errors
    def submit_job(text: str) -> list[Any]:
        """Validate the YAML config and queue the job (the worker trains it)."""
        job = feedback.submit_preference_job(ctx.settings, ctx.db, text)
        return [job.id, feedback.job_status(ctx.db, job.id), gr.Timer(active=True)]

    def poll(current: str) -> list[Any]:
        if not current:
            return [gr.update(), gr.Timer(active=False)]
        try:
            line = feedback.job_status(ctx.db, current)
        except Exception:  # a typed-in id that does not exist: the status line stays as it was
            return [gr.update(), gr.Timer(active=False)]
        finished = any(f"**{s}**" in line for s in ("succeeded", "failed", "cancelled", "interrupted"))
        return [line, gr.Timer(active=not finished)]

    @handle_errors
    def status_of(current: str) -> str:
        if not current:
            raise gr.Error("Submit a job first (or paste a job id).")
        return feedback.job_status(ctx.db, current)

    @handle_errors
    def close_loop(current: str) -> Any:
        """Put the finished DPO adapter and its base model into the side-by-side contenders."""
        adapter = feedback.adapter_from_job(ctx.db, current)
        pair = adapter.contenders
        return gr.update(choices=list(dict.fromkeys([*pair, *feedback_choices()])), value=pair)

    def feedback_choices() -> list[str]:
        from studio.compare.battles import contender_choices

        return contender_choices(ctx.engines, ctx.settings)

    export_btn.click(
        export, [name, use_case, tag, kind, base], [exported, version, job_yaml], api_name="compare_export"
    )
    kind.change(prefill, [name, version, kind, base], [job_yaml], api_visibility="private")
    submit.click(submit_job, [job_yaml], [job_id, status, timer], api_name="compare_job_submit")
    status_btn.click(status_of, [job_id], [status], api_name="compare_job_status")
    timer.tick(poll, [job_id], [status, timer], api_visibility="private")
    loop_event = loop_btn.click(close_loop, [job_id], [contenders], api_name="compare_loop")
    return {"loop_event": loop_event}
