"""Playground "Export / Import" panel: a prompt with the current model, system prompt and parameters as JSON, YAML,
an OpenAI request and ready-to-run curl / openai / gradio_client code; and importing such a file back into the
form. Wiring only: ``studio.playground.panels``."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import form_validator, handle_errors
from components.playground.shared import PlaygroundShared
from studio.playground.panels import base_url_from_headers, export_prompt, import_prompt_form, prompt_spec_from_form
from studio.playground.prompts import PROMPT_TEMPLATES
from studio.playground.session import PARAM_NAMES, sampling_from_form

TEMPLATE_HELP = (
    "chat: messages through the model's chat template · instruction: Alpaca-style text · raw: the text as it is"
)


def create_export_panel(shared: PlaygroundShared) -> dict[str, Any]:
    ctx = shared.ctx
    gr.Markdown(
        "Export a prompt with the Playground's **model, system prompt and parameters** (only settings that differ "
        "from the model's own are recorded), or import one (our JSON/YAML or an OpenAI chat-completions body)."
    )
    with gr.Row():
        prompt_box = gr.Textbox(value="", label="Prompt", lines=4, elem_id="playground-export-prompt", scale=3)
        template = gr.Dropdown(
            list(PROMPT_TEMPLATES),
            value="chat",
            label="Template",
            info=TEMPLATE_HELP,
            elem_id="playground-export-template",
            scale=1,
        )
    # Few-shot pairs of an imported prompt have no widget here; they are kept until the next export.
    examples = gr.State([])
    with gr.Row():
        export_btn = gr.Button("Export", variant="primary", elem_id="playground-export-btn", scale=1)
        export_file = gr.File(
            label="Download (.json)", interactive=False, height=60, elem_id="playground-export-file", scale=3
        )
    with gr.Tabs(elem_id="playground-export-views"):
        with gr.Tab("JSON", id="pg-export-json"):
            json_code = gr.Code(language="json", label="JSON", interactive=False, elem_id="playground-export-json")
        with gr.Tab("YAML", id="pg-export-yaml"):
            yaml_code = gr.Code(language="yaml", label="YAML", interactive=False, elem_id="playground-export-yaml")
        with gr.Tab("OpenAI request", id="pg-export-openai-body"):
            body_code = gr.Code(
                language="json",
                label="POST /v1/chat/completions body",
                interactive=False,
                elem_id="playground-export-openai-body",
            )
        with gr.Tab("curl", id="pg-export-curl"):
            curl_code = gr.Code(language="shell", label="curl", interactive=False, elem_id="playground-export-curl")
        with gr.Tab("Python (openai)", id="pg-export-openai"):
            openai_code = gr.Code(
                language="python", label="openai", interactive=False, elem_id="playground-export-openai"
            )
        with gr.Tab("Python (gradio_client)", id="pg-export-gradio"):
            gradio_code = gr.Code(
                language="python", label="gradio_client", interactive=False, elem_id="playground-export-gradio"
            )
    with gr.Accordion("Import", open=True, elem_id="playground-import-box"):
        with gr.Row():
            import_text = gr.Textbox(
                label="Paste JSON or YAML",
                placeholder='{"prompt": "…", "template": "chat", "params": {"temperature": 0.3}}',
                lines=5,
                elem_id="playground-import-text",
                scale=3,
            )
            import_file = gr.File(
                label="…or a .json / .yaml file",
                file_types=[".json", ".yaml", ".yml"],
                type="filepath",
                elem_id="playground-import-file",
                scale=2,
            )
        import_btn = gr.Button("Import", elem_id="playground-import-btn")
        import_status = gr.Markdown(elem_id="playground-import-status")

    @handle_errors
    def export(
        prompt: str,
        template_name: str,
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
        few_shot: list[dict[str, str]] | None,
        request: gr.Request,
    ) -> tuple[str, str, str, str, str, str, str]:
        """The prompt with the current model, system prompt and parameters as JSON, YAML, an OpenAI request body,
        curl / openai / gradio_client code, and a .json file to download."""
        params = sampling_from_form(
            temperature, top_p, top_k, max_tokens, repetition_penalty, frequency_penalty, presence_penalty, stop, seed
        )
        done = export_prompt(
            ctx.engines,
            model,
            template_name,
            prompt,
            system_prompt,
            params,
            home=ctx.settings.home,
            base_url=base_url_from_headers(dict(getattr(request, "headers", None) or {})),
            examples=few_shot or [],
        )
        return (
            done.json,
            done.yaml,
            done.openai_request,
            done.curl,
            done.openai,
            done.gradio_client,
            str(done.path),
        )

    def export_errors(prompt: str, template_name: str, model: str, system_prompt: str, *rest: Any) -> None:
        """What Export would refuse (no prompt, a parameter out of range), for the validator; writes nothing."""
        params = sampling_from_form(*rest[: len(PARAM_NAMES)])
        # the baseline only decides which parameters the export records: any will do to check the form
        prompt_spec_from_form(model, template_name, prompt, system_prompt, params, baseline=params)

    @handle_errors
    def do_import(text: str, prompt_file: str | None, model: str) -> list[Any]:
        """Fill the prompt, template, system prompt and parameters from pasted text or a .json/.yaml file (our
        export or an OpenAI request); parameters the file does not set keep their current values."""
        done = import_prompt_form(ctx.engines, text, prompt_file, model)
        gr.Info("Prompt imported")
        return [
            done.spec.prompt,
            done.spec.template,
            done.spec.system_prompt,
            *[done.values[name] if name in done.values else gr.update() for name in PARAM_NAMES],
            done.examples,
            done.summary,
        ]

    export_btn.click(
        export,
        [prompt_box, template, shared.model, shared.system_prompt, *shared.params, examples],
        [json_code, yaml_code, body_code, curl_code, openai_code, gradio_code, export_file],
        api_name="playground_export",
        validator=form_validator(export_errors, ["prompt", "template", "model", "system_prompt", *PARAM_NAMES, None]),
    )
    import_btn.click(
        do_import,
        [import_text, import_file, shared.model],
        [prompt_box, template, shared.system_prompt, *shared.params, examples, import_status],
        api_name="playground_import",
    )
    return {
        "prompt": prompt_box,
        "template": template,
        "export": export_btn,
        "json": json_code,
        "yaml": yaml_code,
        "openai_request": body_code,
        "file": export_file,
        "import": import_btn,
        "import_status": import_status,
    }
