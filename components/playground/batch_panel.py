"""Playground "Batch" panel: many prompts, one after the other, each as a single-turn chat with the current model,
system prompt and parameters; a table of replies and figures, and the same as CSV. Wiring only:
``studio.playground.panels.playground_batch``."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.buttons import offer, withdraw
from components.common import handle_errors
from components.playground.shared import PlaygroundShared
from studio.playground.panels import playground_batch
from studio.playground.prompts import BATCH_COLUMNS, MAX_BATCH_PROMPTS
from studio.playground.session import sampling_from_form

COLUMN_WIDTHS = {"index": "64px", "prompt": "220px", "output": "380px", "error": "200px"}


def create_batch_panel(shared: PlaygroundShared) -> dict[str, Any]:
    ctx = shared.ctx
    gr.Markdown(
        f"Runs each prompt on its own (no chat history) with the model, system prompt and parameters of the "
        f"Playground, up to {MAX_BATCH_PROMPTS} prompts. **Stop** ends the batch (the current reply is kept as it is)."
    )
    with gr.Row():
        prompts_box = gr.Textbox(
            label="Prompts (one per line)",
            placeholder="What is the capital of France?\nName three primary colours.",
            lines=6,
            max_lines=20,
            elem_id="playground-batch-prompts",
            scale=3,
        )
        upload = gr.File(
            label="…or a file: .txt (one per line), .csv ('prompt' column), .jsonl ({\"prompt\": …})",
            file_types=[".txt", ".csv", ".jsonl"],
            type="filepath",
            elem_id="playground-batch-file",
            scale=2,
        )
    with gr.Row():
        run_btn = gr.Button("Run batch", variant="primary", elem_id="playground-batch-run")
        stop_btn = gr.Button("Stop", interactive=False, elem_id="playground-batch-stop")  # while the batch runs
    table = gr.Dataframe(
        headers=list(BATCH_COLUMNS),
        # prompt and output get the room; the figures stay narrow (the table scrolls sideways)
        column_widths=[COLUMN_WIDTHS.get(c, "110px") for c in BATCH_COLUMNS],
        interactive=False,
        wrap=True,
        label="Results",
        elem_id="playground-batch-table",
    )
    csv_file = gr.File(label="Results as CSV", interactive=False, height=60, elem_id="playground-batch-csv")

    @handle_errors
    def run(
        prompts: str,
        prompt_file: str | None,
        model: str,
        system_prompt: str,
        temperature: float,
        top_p: float,
        top_k: float,
        max_tokens: float,
        repetition_penalty: float,
        frequency_penalty: float | None,
        presence_penalty: float | None,
        stop: str,
        seed: float | None,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[list[list[Any]], str]:
        """Run every prompt (pasted, one per line, or from a .txt/.csv/.jsonl file) and return one row per prompt
        plus the rows as a CSV file."""
        params = sampling_from_form(
            temperature,
            top_p,
            top_k,
            max_tokens,
            repetition_penalty,
            frequency_penalty,
            presence_penalty,
            stop,
            seed,
            logprobs=False,
        )
        done = playground_batch(
            ctx.engines,
            ctx.settings.home,
            prompts,
            prompt_file,
            model,
            system_prompt,
            params,
            on_progress=lambda n, total: progress((n, total), desc="Running the batch", unit="prompts"),
            owner=getattr(request, "session_hash", None),
        )
        return done.table, str(done.csv_path)

    def stop_batch(request: gr.Request) -> None:
        """Stop this session's running batch: its current reply ends now and no further prompt starts."""
        owner = getattr(request, "session_hash", None)
        if owner:
            ctx.engines.cancel_owner(owner)

    run_btn.click(offer, None, [stop_btn], api_visibility="private", queue=False).then(
        run,
        [prompts_box, upload, shared.model, shared.system_prompt, *shared.params],
        [table, csv_file],
        api_name="playground_batch",
        concurrency_limit=4,
    ).then(withdraw, None, [stop_btn], api_visibility="private", queue=False)
    stop_btn.click(stop_batch, None, None, api_name="playground_batch_stop", queue=False)
    return {"prompts": prompts_box, "file": upload, "run": run_btn, "stop": stop_btn, "table": table, "csv": csv_file}
