"""Playground tab: chat with a model, watch the reply stream, see real token figures. Wiring only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from components.common import handle_errors
from studio.aliases.service import alias_from_settings
from studio.context import AppContext
from studio.errors import ValidationError
from studio.inference.params import field_help, field_range, make_sampling_params
from studio.inference.stats import GenerationResult
from studio.playground.chat import build_messages, parse_seed, parse_stop_sequences
from studio.settings import generation_defaults, load_defaults


def _model_choices(ctx: AppContext) -> tuple[list[str], str | None]:
    """User aliases first, then every model (model aliases)."""
    ids = [v.config.alias for v in ctx.engines.resolver.list_aliases() if v.entry is not None]
    default: str | None
    try:
        default = ctx.registry.resolve("default").id
    except Exception:
        default = ids[0] if ids else None
    return ids, default


def _stats_text(result: GenerationResult, running: bool) -> str:
    if result.start is None:
        return "Loading the model…" if running else ""
    if running:
        return f"Generating… {len(result.tokens)} tokens so far"
    return result.stats.summary()


def create_playground_tab(ctx: AppContext) -> dict[str, Any]:
    defaults = generation_defaults()
    ids, default_model = _model_choices(ctx)

    def slider(name: str, label: str, step: float) -> gr.Slider:
        lo, hi = field_range(name)
        if name == "max_tokens":
            hi = 4096
        return gr.Slider(
            lo, hi, value=defaults[name], step=step, label=label, info=field_help(name), elem_id=f"playground-{name}"
        )

    with gr.Tab("Playground", id="playground"), gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                model_box = gr.Dropdown(
                    choices=ids,
                    value=default_model,
                    label="Model",
                    info="A model from the registry, or a path to a local model directory or GGUF file.",
                    allow_custom_value=True,
                    elem_id="playground-model",
                    scale=4,
                )
                refresh = gr.Button("↻ Refresh", scale=1, elem_id="playground-refresh")
            chatbot = gr.Chatbot(label="Chat", elem_id="playground-chat", height=440, buttons=["copy"])
            message_box = gr.Textbox(
                label="Message",
                placeholder="Type a message and press Enter (Shift+Enter for a new line)",
                lines=2,
                elem_id="playground-input",
            )
            with gr.Row():
                send = gr.Button("Send", variant="primary", elem_id="playground-send")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="playground-stop")
                clear = gr.Button("Clear chat", elem_id="playground-clear")
            stats = gr.Markdown("", label="Statistics", elem_id="playground-stats")
            with gr.Row():
                alias_name = gr.Textbox(
                    label="Save these settings as an alias",
                    placeholder="alias name, e.g. smol:precise",
                    elem_id="playground-alias-name",
                    scale=3,
                )
                save_alias_btn = gr.Button("Save as alias", elem_id="playground-save-alias", scale=1)
        with gr.Column(scale=2):
            system_box = gr.Textbox(
                value=str(load_defaults().get("playground", {}).get("system_prompt", "")),
                label="System prompt",
                info="Sent first, before the conversation. Leave empty to use the model template's default.",
                lines=3,
                elem_id="playground-system",
            )
            temperature_s = slider("temperature", "Temperature", 0.05)
            top_p_s = slider("top_p", "Top-p", 0.01)
            top_k_s = slider("top_k", "Top-k", 1)
            max_tokens_s = slider("max_tokens", "Max tokens", 1)
            rep_s = slider("repetition_penalty", "Repetition penalty", 0.01)
            stop_box = gr.Textbox(
                value="\n".join(defaults.get("stop") or []),
                label="Stop sequences",
                info=field_help("stop") + " One per line; \\n means a newline.",
                lines=2,
                elem_id="playground-stop-sequences",
            )
            seed_box = gr.Number(
                value=-1 if defaults.get("seed") is None else defaults["seed"],
                precision=0,
                label="Seed",
                info=field_help("seed") + " -1 = random.",
                elem_id="playground-seed",
            )

    @handle_errors
    def generate(
        message: str,
        history: list[dict[str, Any]] | None,
        model: str,
        system_prompt: str,
        temperature: float,
        top_p: float,
        top_k: float,
        max_tokens: float,
        repetition_penalty: float,
        stop: str,
        seed: float | None,
        request: gr.Request,
    ) -> Iterator[tuple[list[dict[str, Any]], str, str]]:
        """Stream the model's reply to `message`, given the earlier `history`. Yields (chat, stats, input box)."""
        history = list(history or [])
        messages = build_messages(system_prompt or "", history, message or "")
        params = make_sampling_params(
            temperature=temperature,
            top_p=top_p,
            top_k=int(top_k),
            max_tokens=int(max_tokens),
            repetition_penalty=repetition_penalty,
            stop=parse_stop_sequences(stop),
            seed=parse_seed(seed),
        )
        owner = getattr(request, "session_hash", None) if request is not None else None
        handle = ctx.engines.start_chat(model or "default", messages, params, endpoint="playground", owner=owner)
        chat = [*history, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        yield chat, _stats_text(handle.result, True), ""
        reply = ""
        for _item in handle:  # the worker has already added each item to handle.result
            new_text = handle.result.text
            if new_text != reply or handle.result.finished:
                reply = new_text
                chat[-1] = {"role": "assistant", "content": reply}
                yield chat, _stats_text(handle.result, not handle.result.finished), ""
        yield chat, _stats_text(handle.result, False), ""

    def stop_generation(request: gr.Request) -> None:
        """Stop this browser session's running generation (the partial reply stays)."""
        owner = getattr(request, "session_hash", None)
        if owner:
            ctx.engines.cancel_owner(owner)

    def use_alias_settings(model: str) -> list[Any]:
        """Picking an alias fills the form with its parameters (alias > studio defaults)."""
        try:
            p = ctx.engines.params_for(model or "default")
        except Exception:  # an unknown or half-typed name: leave the form as it is
            return [gr.update()] * 7
        seed_value = -1 if p.seed is None else p.seed
        stops = "\n".join(x.replace("\n", "\\n") for x in p.stop)
        return [p.temperature, p.top_p, p.top_k, p.max_tokens, p.repetition_penalty, stops, seed_value]

    @handle_errors
    def save_as_alias(
        name: str,
        model: str,
        temperature: float,
        top_p: float,
        top_k: float,
        max_tokens: float,
        repetition_penalty: float,
        stop: str,
        seed: float | None,
    ) -> Any:
        """Store the Playground's current model and sampling settings as a user alias."""
        if not (name or "").strip():
            raise ValidationError("type a name for the alias", param="alias")
        request = {
            "temperature": temperature,
            "top_p": top_p,
            "top_k": int(top_k),
            "max_tokens": int(max_tokens),
            "repetition_penalty": repetition_penalty,
            "stop": parse_stop_sequences(stop) or None,
            "seed": parse_seed(seed),
        }
        cfg, rep, path = alias_from_settings(ctx.engines.resolver, name.strip(), model or "default", request)
        for w in rep.warnings:
            gr.Warning(w)
        gr.Info(f"Saved alias '{cfg.alias}' ({path.name})")
        choices, _ = _model_choices(ctx)
        return gr.Dropdown(choices=choices, value=cfg.alias)

    def refresh_models(current: str | None) -> Any:
        choices, default = _model_choices(ctx)
        return gr.Dropdown(choices=choices, value=current or default)

    inputs = [
        message_box,
        chatbot,
        model_box,
        system_box,
        temperature_s,
        top_p_s,
        top_k_s,
        max_tokens_s,
        rep_s,
        stop_box,
        seed_box,
    ]
    outputs = [chatbot, stats, message_box]
    send.click(generate, inputs, outputs, api_name="playground_generate", concurrency_limit=8)
    message_box.submit(generate, inputs, outputs, api_visibility="private", concurrency_limit=8)
    stop_btn.click(stop_generation, None, None, api_name="playground_stop", queue=False)
    clear.click(lambda: ([], ""), None, [chatbot, stats], api_visibility="private", queue=False)
    refresh.click(refresh_models, [model_box], [model_box], api_name="playground_models")
    sliders = [temperature_s, top_p_s, top_k_s, max_tokens_s, rep_s, stop_box, seed_box]
    model_box.change(use_alias_settings, [model_box], sliders, api_visibility="private")
    save_alias_event = save_alias_btn.click(
        save_as_alias, [alias_name, model_box, *sliders], [model_box], api_name="playground_save_alias"
    )

    return {
        "model": model_box,
        "chatbot": chatbot,
        "message": message_box,
        "send": send,
        "stop": stop_btn,
        "stats": stats,
        "refresh_fn": refresh_models,
        "changed_events": [save_alias_event],
    }
