"""Playground "Prompt" view: one prompt framed by a template (chat / instruction / raw) with few-shot examples
and optionally the Chat view's history; streamed output with live figures. Wiring only: the logic is in
``studio.playground.prompt_runner``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr
from gradio.context import Context

from components.buttons import offer, withdraw
from components.common import handle_errors
from components.playground.shared import PlaygroundShared
from studio.playground.prompt_runner import (
    chat_history_messages,
    code_from_reply,
    examples_from_rows,
    progress_line,
    prompt_count_line,
    start_prompt,
)
from studio.playground.prompts import load_use_cases, use_case
from studio.playground.session import PlaygroundSession, sampling_from_form

CURSOR = "▌"
TEMPLATE_CHOICES = [("Chat", "chat"), ("Instruction", "instruction"), ("Raw", "raw")]
TEMPLATE_HELP = (
    "Chat: through the model's chat template. Instruction: '### Instruction / ### Response' framing. "
    "Raw: your text exactly as typed (no template)."
)


def _example_choices(name: str | None) -> list[tuple[str, str]]:
    """The picked use case's example prompts; with none picked, every use case's (labelled with its name)."""
    if name:
        return [(p, p) for p in use_case(name).example_prompts]
    return [(f"{uc.name}: {p}", p) for uc in load_use_cases().values() for p in uc.example_prompts]


def create_prompt_panel(shared: PlaygroundShared) -> dict[str, Any]:
    ctx = shared.ctx
    with gr.Row():
        template = gr.Radio(
            TEMPLATE_CHOICES, value="chat", label="Template", info=TEMPLATE_HELP, elem_id="playground-template", scale=3
        )
        include_history = gr.Checkbox(
            value=False,
            label="Include chat history",
            info="Send the Chat view's conversation before this prompt.",
            elem_id="playground-include-history",
            scale=1,
        )
    example_pick = gr.Dropdown(
        choices=_example_choices(None),
        value=None,
        label="Example prompts",
        info="Pick one to put it in the prompt box (the use case chooses which are offered).",
        elem_id="playground-example-prompts",
    )
    prompt = gr.Textbox(
        label="Prompt", lines=10, max_lines=40, placeholder="Type or paste a prompt", elem_id="playground-prompt"
    )
    count = gr.Markdown(prompt_count_line(ctx.engines, "", ""), elem_id="playground-prompt-count")
    with gr.Accordion("Few-shot examples", open=False, elem_id="playground-examples-box"):
        examples = gr.Dataframe(
            headers=["input", "output"],
            value=[["", ""]],
            column_count=2,
            column_limits=(2, 2),
            row_limits=(1, None),
            datatype="str",
            type="array",
            interactive=True,
            wrap=True,
            label="Input → output pairs placed before the prompt (add or remove rows; blank rows are ignored)",
            elem_id="playground-examples",
        )
    with gr.Row():
        generate_btn = gr.Button("Generate", variant="primary", elem_id="playground-prompt-generate")
        stop_btn = gr.Button("Stop", interactive=False, elem_id="playground-prompt-stop")  # while generating
        reset_btn = gr.Button("Reset", elem_id="playground-prompt-reset")
    stats = gr.Markdown("", elem_id="playground-prompt-stats")
    output_text = gr.Markdown(
        "",
        label="Output",
        show_label=True,
        container=True,
        line_breaks=True,
        buttons=["copy"],
        min_height=120,
        max_height=520,
        elem_id="playground-prompt-output",
    )
    output_code = gr.Code(
        "",
        language="python",
        label="Output (code)",
        interactive=False,
        visible=False,
        lines=8,
        max_lines=30,
        buttons=["copy", "download"],
        elem_id="playground-prompt-output-code",
    )
    # Without a Chat view there is no history to include: an empty stand-in keeps one signature.
    history_input = shared.chatbot if shared.chatbot is not None else gr.State([])

    # -- handlers ------------------------------------------------------------------------------------------
    @handle_errors
    def count_prompt(text: str, model: str) -> str:
        return prompt_count_line(ctx.engines, model or "", text or "")

    @handle_errors
    def apply_use_case(name: str) -> tuple[Any, Any, Any, Any, Any]:
        """A use case sets the template, the few-shot table, the example prompts and the kind of output view."""
        if not name:
            return (
                gr.update(),
                gr.update(),
                gr.Dropdown(choices=_example_choices(None), value=None),
                gr.Markdown(visible=True),
                gr.Code(visible=False),
            )
        uc = use_case(name)
        rows = [[ex.input, ex.output] for ex in uc.few_shot] or [["", ""]]
        language = uc.output_language if uc.output_language in gr.Code.languages else None
        code_view = uc.output_language is not None
        return (
            uc.prompt_template,
            rows,
            gr.Dropdown(choices=_example_choices(name), value=None),
            gr.Markdown(visible=not code_view),
            gr.Code(
                visible=code_view,
                language=language,  # type: ignore[arg-type]  # checked against gr.Code.languages above
                label=f"Output ({uc.output_language or 'code'})",
            ),
        )

    @handle_errors
    def generate(
        prompt: str,
        template: str,
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
        examples: list[list[Any]] | None,
        include_history: bool,
        history: list[dict[str, Any]] | None,
        stream: bool | None,
        state: PlaygroundSession | None,
        request: gr.Request,
    ) -> Iterator[tuple[str, str, str, PlaygroundSession]]:
        """Generate from one prompt framed by `template` (chat, instruction or raw), with the few-shot
        `examples` and, if `include_history`, the Chat view's `history` before it. Yields (output text,
        code view, stats); streamed token by token unless `stream` is False."""
        state = state or PlaygroundSession()
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
        )
        run = start_prompt(
            ctx.engines,
            model or "default",
            template or "chat",
            prompt or "",
            params,
            system_prompt=system_prompt or "",
            examples=examples_from_rows(examples),
            history=chat_history_messages(history) if include_history else (),
            owner=getattr(request, "session_hash", None),
        )
        yield "", "", progress_line(run.result), state
        for _item in run.handle:  # the worker has already added each item to run.result
            if stream is False or run.result.finished:
                continue
            text = run.result.text + CURSOR
            yield text, code_from_reply(run.result.text) + CURSOR, progress_line(run.result), state
        run.remember(state)
        text = run.result.text
        yield text, code_from_reply(text), progress_line(run.result), state

    def stop_generation(request: gr.Request) -> None:
        """Stop this browser session's running generation (the partial output stays)."""
        owner = getattr(request, "session_hash", None)
        if owner:
            ctx.engines.cancel_owner(owner)

    # -- events --------------------------------------------------------------------------------------------
    prompt.change(count_prompt, [prompt, shared.model], [count], api_visibility="private", queue=False)
    shared.model.change(count_prompt, [prompt, shared.model], [count], api_visibility="private", queue=False)
    example_pick.input(lambda p: p or gr.update(), [example_pick], [prompt], api_visibility="private", queue=False)
    shared.use_case.change(
        apply_use_case,
        [shared.use_case],
        [template, examples, example_pick, output_text, output_code],
        api_visibility="private",
    )
    generate_event = generate_btn.click(offer, None, [stop_btn], api_visibility="private", queue=False).then(
        generate,
        [
            prompt,
            template,
            shared.model,
            shared.system_prompt,
            *shared.params,
            examples,
            include_history,
            history_input,
            shared.streaming,
            shared.session,
        ],
        [output_text, output_code, stats, shared.session],
        api_name="playground_prompt",
        concurrency_limit=8,
    )
    generate_event.then(withdraw, None, [stop_btn], api_visibility="private", queue=False)
    # generating loads the model on first use: the token count becomes available then
    generate_event.then(count_prompt, [prompt, shared.model], [count], api_visibility="private", queue=False)
    # the line was written when the app was built, before `studio serve` loaded the model: every page counts anew
    root = Context.root_block
    if root is not None:
        root.load(count_prompt, [prompt, shared.model], [count], api_visibility="private", queue=False)
    stop_btn.click(stop_generation, None, None, api_visibility="private", queue=False)
    reset_btn.click(
        lambda: ("", "", "", "", None),
        None,
        [prompt, output_text, output_code, stats, example_pick],
        api_visibility="private",
        queue=False,
    )

    return {
        "prompt": prompt,
        "template": template,
        "examples": examples,
        "include_history": include_history,
        "output": output_text,
        "output_code": output_code,
        "stats": stats,
        "count": count,
        "count_fn": count_prompt,
        "count_inputs": [prompt, shared.model],
        "generate": generate_btn,
        "generate_event": generate_event,
    }
