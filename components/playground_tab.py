"""Playground tab: load models (adapters, quantization), chat or prompt with streaming, see real token
figures, analyse replies. Wiring only; the panels live in ``components/playground/``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import gradio as gr
from gradio.context import Context

from components.buttons import offer, withdraw
from components.common import handle_errors
from components.language_filter import add_language_filter
from components.playground.analysis_panel import create_analysis_panel
from components.playground.batch_panel import create_batch_panel
from components.playground.conversations_panel import create_conversations_panel
from components.playground.export_panel import create_export_panel
from components.playground.prompt_panel import create_prompt_panel
from components.playground.shared import PlaygroundShared
from studio.aliases.service import alias_from_settings
from studio.context import AppContext
from studio.errors import ValidationError
from studio.inference.params import field_help, field_range
from studio.inference.routing import ENGINES
from studio.inference.stats import GenerationResult
from studio.monitor import memory_snapshot
from studio.playground.chat import build_messages, parse_seed, parse_stop_sequences
from studio.playground.conversations import MessageCreate, save_exchange
from studio.playground.prompts import load_use_cases
from studio.playground.session import (
    PlaygroundSession,
    default_system_prompt,
    sampling_from_form,
    use_case_after_model_pick,
)
from studio.playground.status import load_status_line, loaded_model_line
from studio.safety.service import safety_summary
from studio.settings import generation_defaults

LOADED_COLUMNS = ["Model", "Engine", "Device", "dtype", "Quantization", "Memory (MiB)", "Adapters", "Active adapter"]

#: On a phone the tab's blocks stack in one column: the conversation and the message box come first (the
#: loading form and its six buttons used to push them ~700 px down), then the loading form, then the sampling
#: parameters; the model's name gets a line of its own (it was cut at half width), the loading buttons sit two
#: to a line and Send / Stop / Clear share one. Wide screens keep the form above the chat, the parameters beside it.
PLAYGROUND_CSS = """
@media (max-width: 640px) {
  #playground-main { display: contents; }
  #playground-conversation { order: -1; }
  #playground-parameters { order: 1; }
  #playground-model { min-width: 100% !important; }
  #playground-buttons > button { flex: 1 1 40%; min-width: 40% !important; }
  #playground-send-row > button { flex: 1 1 0; min-width: 0 !important; padding-inline: 4px; white-space: nowrap; }
}
"""


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
        live = result.stats
        tps = f" · {live.tokens_per_s:.1f} tok/s" if live.tokens_per_s else ""
        return f"Generating… {live.completion_tokens} tokens{tps} ▌"
    return result.stats.summary()


def _form_values(p: Any) -> list[Any]:
    """SamplingParams as the parameter widgets show them (in the order of the form's ``params`` list)."""
    stops = "\n".join(x.replace("\n", "\\n") for x in p.stop)
    return [
        p.temperature,
        p.top_p,
        p.top_k,
        p.max_tokens,
        max(1.0, p.repetition_penalty),
        p.frequency_penalty,
        p.presence_penalty,
        stops,
        -1 if p.seed is None else p.seed,
    ]


def loaded_rows(ctx: AppContext) -> list[list[Any]]:
    rows = []
    for info in ctx.engines.loaded():
        rows.append(
            [
                info.model_id,
                info.backend,
                info.device,
                info.dtype,
                info.extra.get("quantization", "none"),
                round(info.memory_bytes / 2**20, 1),
                info.extra.get("adapters", "") or "-",
                info.extra.get("active_adapter", "") or "(base)",
            ]
        )
    return rows


def create_playground_tab(ctx: AppContext) -> dict[str, Any]:
    defaults = generation_defaults()
    ids, default_model = _model_choices(ctx)
    use_cases = list(load_use_cases())

    def slider(name: str, label: str, step: float) -> gr.Slider:
        lo, hi = field_range(name)
        if name == "max_tokens":
            hi = 4096
        return gr.Slider(
            lo, hi, value=defaults[name], step=step, label=label, info=field_help(name), elem_id=f"playground-{name}"
        )

    with gr.Tab("Playground", id="playground"):
        session = gr.State(PlaygroundSession())
        # -- model loading ------------------------------------------------------------------------------------
        with gr.Row(elem_id="playground-model-row"):
            model_box = gr.Dropdown(
                choices=ids,
                value=default_model,
                label="Model",
                info="An alias, a registry model, or a path to a local model directory or GGUF file.",
                allow_custom_value=True,
                elem_id="playground-model",
                scale=3,
            )
            model_language = add_language_filter(
                ctx,
                [model_box],
                lambda: _model_choices(ctx)[0],
                elem_id="playground-language",
                api_name="playground_filter_models",
            )
            adapter_box = gr.Textbox(
                label="Adapter (optional)",
                info="PEFT adapter directory (LoRA, IA3, …): a path, or a name under STUDIO_HOME/adapters.",
                elem_id="playground-adapter",
                scale=2,
            )
            use_case = gr.Dropdown(
                ["", *use_cases],
                value="",
                label="Use case",
                info="Fills suggested parameters, template and example prompts.",
                elem_id="playground-use-case",
                scale=2,
            )
            quantization = gr.Dropdown(
                ["none", "auto", "int8", "int4", "nf4"],
                value="none",
                label="Quantization",
                info="bitsandbytes at load; auto = only if the model would not fit in free memory.",
                elem_id="playground-quantization",
                scale=1,
            )
            engine_choice = gr.Dropdown(
                list(ENGINES),
                value="auto",
                label="Engine",
                info="auto: the alias's engine, else llama.cpp for GGUF files, vLLM for concurrent serving, "
                "transformers for adapters/attention. The choice and why shows after loading.",
                elem_id="playground-engine",
                scale=1,
            )
        with gr.Row(elem_id="playground-buttons"):
            load_btn = gr.Button("Load", variant="primary", elem_id="playground-load")
            estimate_btn = gr.Button("Estimate memory", elem_id="playground-estimate")
            unload_btn = gr.Button("Unload", elem_id="playground-unload")
            swap_btn = gr.Button("Swap adapter", elem_id="playground-swap")
            base_btn = gr.Button("Disable adapters", elem_id="playground-base")
            refresh = gr.Button("Refresh models", elem_id="playground-refresh")
        load_status = gr.Markdown(label="Status", elem_id="playground-load-status")
        with gr.Accordion("Loaded models & memory", open=False, elem_id="playground-loaded-box"):
            memory = gr.Markdown(memory_snapshot().summary(), label="Memory", elem_id="playground-memory")
            loaded = gr.Dataframe(
                headers=LOADED_COLUMNS, value=loaded_rows(ctx), interactive=False, elem_id="playground-loaded"
            )
            timer = gr.Timer(3.0)
        with gr.Row(elem_id="playground-main"):
            with gr.Column(scale=3, elem_id="playground-conversation"), gr.Tabs(elem_id="playground-views"):
                with gr.Tab("Chat", id="pg-chat"):
                    chatbot = gr.Chatbot(label="Chat", elem_id="playground-chat", height=420, buttons=["copy"])
                    message_box = gr.Textbox(
                        label="Message",
                        placeholder="Type a message and press Enter (Shift+Enter for a new line)",
                        # one starting line is what makes Gradio send on Enter (with more, Enter is a new line
                        # and Shift+Enter sends); the box still grows as lines are added with Shift+Enter
                        lines=1,
                        max_lines=8,
                        elem_id="playground-input",
                    )
                    with gr.Row(elem_id="playground-send-row"):
                        send = gr.Button("Send", variant="primary", elem_id="playground-send")
                        # offered only while a reply is being written (see the send events below)
                        stop_btn = gr.Button("Stop", interactive=False, elem_id="playground-stop")
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
                shared_tabs: dict[str, Any] = {}
                tab_prompt = gr.Tab("Prompt", id="pg-prompt")
                tab_conv = gr.Tab("Conversations", id="pg-conversations")
                tab_tokens = gr.Tab("Token view & attention", id="pg-analysis")
                tab_batch = gr.Tab("Batch", id="pg-batch")
                tab_export = gr.Tab("Export / Import", id="pg-export")
                with gr.Tab("Compare with base", id="pg-compare"):
                    gr.Markdown(
                        "The same prompt with the active adapter and with the base model, one after the other on "
                        "the same weights."
                    )
                    compare_prompt = gr.Textbox(label="Prompt", lines=2, elem_id="playground-compare-prompt")
                    compare_btn = gr.Button("Compare with base", elem_id="playground-compare")
                    with gr.Row():
                        compare_adapter = gr.Markdown(label="With adapter", elem_id="playground-compare-adapter")
                        compare_base = gr.Markdown(label="Base model", elem_id="playground-compare-base")
            with gr.Column(scale=2, elem_id="playground-parameters"):
                system_box = gr.Textbox(
                    value=default_system_prompt(),
                    label="System prompt",
                    info="Sent first, before the conversation. Leave empty to use the model template's default.",
                    lines=3,
                    elem_id="playground-system",
                )
                streaming = gr.Checkbox(
                    value=True,
                    label="Stream tokens",
                    info="Off: the reply appears in one piece when done.",
                    elem_id="playground-streaming",
                )
                safety_box = gr.Checkbox(
                    value=False,
                    label="Safety filter",
                    info="Check the prompt and the streamed reply with the safety policy (PII, toxicity, word list, "
                    "length); what fired is shown under the reply. Aliases with a safety_policy filter by default.",
                    elem_id="playground-safety",
                )
                temperature_s = slider("temperature", "Temperature", 0.05)
                top_p_s = slider("top_p", "Top-p", 0.01)
                top_k_s = slider("top_k", "Top-k", 1)
                max_tokens_s = slider("max_tokens", "Max tokens", 1)
                rep_s = gr.Slider(
                    1.0,
                    2.0,
                    value=max(1.0, float(defaults["repetition_penalty"])),
                    step=0.01,
                    label="Repetition penalty",
                    info=field_help("repetition_penalty"),
                    elem_id="playground-repetition_penalty",
                )
                freq_s = slider("frequency_penalty", "Frequency penalty", 0.05)
                pres_s = slider("presence_penalty", "Presence penalty", 0.05)
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

        params = [temperature_s, top_p_s, top_k_s, max_tokens_s, rep_s, freq_s, pres_s, stop_box, seed_box]
        shared = PlaygroundShared(
            ctx=ctx,
            model=model_box,
            use_case=use_case,
            system_prompt=system_box,
            params=params,
            streaming=streaming,
            session=session,
            chatbot=chatbot,
        )
        with tab_prompt:
            shared_tabs["prompt"] = create_prompt_panel(shared)
        with tab_conv:
            shared_tabs["conversations"] = create_conversations_panel(shared)
        with tab_tokens:
            shared_tabs["analysis"] = create_analysis_panel(shared)
        with tab_batch:
            shared_tabs["batch"] = create_batch_panel(shared)
        with tab_export:
            shared_tabs["export"] = create_export_panel(shared)

    # -- handlers ------------------------------------------------------------------------------------------
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
        frequency_penalty: float | None,
        presence_penalty: float | None,
        stream: bool | None,
        state: PlaygroundSession | None,
        use_case_name: str | None,
        safety: bool | None = False,
        request: gr.Request = None,  # type: ignore[assignment]  # gradio fills it in
    ) -> Iterator[tuple[list[dict[str, Any]], str, Any, PlaygroundSession]]:
        """Stream the model's reply to `message`, given the earlier `history`. Yields (chat, stats, input box).
        The exchange is saved to the active conversation. The input box is cleared by the first update only,
        so text typed while the reply finishes is never wiped."""
        state = state or PlaygroundSession()
        history = list(history or [])
        messages = build_messages(system_prompt or "", history, message or "")
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
        owner = getattr(request, "session_hash", None) if request is not None else None
        handle = ctx.engines.start_chat(
            model or "default", messages, params, endpoint="playground", owner=owner, safety=True if safety else None
        )
        chat = [*history, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        yield chat, _stats_text(handle.result, True), "", state
        reply = ""
        for _item in handle:  # the worker has already added each item to handle.result
            if stream is False:
                continue
            new_text = handle.result.text
            if new_text != reply or handle.result.finished:
                reply = new_text
                chat[-1] = {"role": "assistant", "content": reply}
                yield chat, _stats_text(handle.result, not handle.result.finished), gr.update(), state
        result = handle.result
        chat[-1] = {"role": "assistant", "content": result.text}
        state.remember_reply(handle.model_id, result.tokens, result.text, messages=messages)
        state.use_case = use_case_name or None
        detail = save_exchange(
            ctx.db,
            state.conversation_id,
            [
                MessageCreate(role="user", content=message, params=params.model_dump(mode="json")),
                MessageCreate(
                    role="assistant",
                    content=result.text or " ",
                    stats={**result.stats.to_dict(), **({"safety": result.safety} if result.safety else {})},
                ),
            ],
            model=handle.model_id,
            use_case=state.use_case,
        )
        state.conversation_id = detail.id
        shield = safety_summary(result.safety)
        yield chat, result.stats.summary() + (f"\n\n{shield}" if shield else ""), gr.update(), state

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
            return [gr.update()] * len(params)
        return _form_values(p)

    def clear_use_case(use_case_name: str | None, system_prompt: str | None) -> tuple[str, str]:
        """Picking a model clears the use case and the system prompt it suggested (one the person wrote stays)."""
        fields = use_case_after_model_pick(use_case_name, system_prompt)
        return fields.use_case, fields.system_prompt

    @handle_errors
    def apply_use_case(name: str) -> list[Any]:
        """A use case fills suggested parameters and its system prompt."""
        if not name:
            return [gr.update()] * (len(params) + 1)
        from studio.playground.prompts import use_case as get_use_case

        uc = get_use_case(name)
        return [*_form_values(uc.sampling_params()), uc.system_prompt]

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

    def show_load_status(model: str | None) -> str:
        """The status line for the picked model: loaded (engine, device, active adapter) or not yet."""
        return load_status_line(ctx.engines, model)

    def refresh_models(current: str | None, language: str | None = None) -> Any:
        choices, default = _model_choices(ctx)
        if language:  # the Language filter's choice (none from app.py's cross-tab refreshes: every model)
            choices = model_language.narrow(language)
        return gr.Dropdown(choices=choices, value=current or default)

    def monitor() -> tuple[str, list[list[Any]]]:
        return memory_snapshot().summary(), loaded_rows(ctx)

    @handle_errors
    def load_model(
        model: str,
        adapter: str,
        quant: str,
        engine_name: str | None = "auto",
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[str, str, Any]:
        """Load a model (converting a GGUF once), optionally quantized and with a PEFT adapter."""
        progress(0.1, desc="Resolving and estimating memory")
        try:
            what = ctx.engines.estimate(model or "default", quantization=quant if quant != "auto" else "none").summary()
        except ValidationError as exc:  # a remote model: nothing local to estimate
            what = exc.message
        progress(0.3, desc=f"Loading ({what})")
        engine = ctx.engines.load(model or "default", quantization=quant or "none", engine=engine_name or "auto")
        active = None
        if (adapter or "").strip():
            progress(0.8, desc="Loading the adapter")
            active = ctx.engines.load_adapter_on(engine, adapter.strip())
        info = engine.info
        if active:  # the adapter just made active, whatever this backend's info reports
            info = replace(info, extra={**info.extra, "active_adapter": active})
        gr.Info(f"Loaded {info.model_id}")
        return (
            loaded_model_line(info),
            memory_snapshot().summary(),
            gr.Dataframe(value=loaded_rows(ctx), headers=LOADED_COLUMNS),
        )

    @handle_errors
    def estimate(model: str, quant: str) -> str:
        """What loading the model would take, before loading it."""
        est = ctx.engines.estimate(model or "default", quantization=quant if quant != "auto" else "none")
        return "Estimate: " + est.summary()

    @handle_errors
    def unload_model(model: str) -> tuple[str, str, Any]:
        """Unload the model and free its memory."""
        before = memory_snapshot().process_rss
        ctx.engines.engine(model or "default")
        ctx.engines.unload(model or "default")
        after = memory_snapshot().process_rss
        gr.Info("Model unloaded")
        text = f"Unloaded; process memory {before / 2**20:.0f} → {after / 2**20:.0f} MiB"
        return text, memory_snapshot().summary(), gr.Dataframe(value=loaded_rows(ctx), headers=LOADED_COLUMNS)

    @handle_errors
    def swap(model: str, adapter: str) -> tuple[str, Any]:
        """Hot-swap the active adapter (a loaded adapter's name or a new adapter path) without reloading."""
        if not (adapter or "").strip():
            raise ValidationError("type the adapter to switch to (a loaded adapter's name or a path)", param="adapter")
        active = ctx.engines.swap_adapter(model or "default", adapter.strip())
        return f"Active adapter: **{active}**", gr.Dataframe(value=loaded_rows(ctx), headers=LOADED_COLUMNS)

    @handle_errors
    def disable_adapters(model: str) -> tuple[str, Any]:
        """Use the base model (adapters stay loaded for a later swap)."""
        ctx.engines.swap_adapter(model or "default", None)
        return "Adapters disabled: the base model answers", gr.Dataframe(value=loaded_rows(ctx), headers=LOADED_COLUMNS)

    @handle_errors
    def compare(
        prompt: str,
        model: str,
        system_prompt: str,
        temperature: float,
        top_p: float,
        top_k: float,
        max_tokens: float,
        repetition_penalty: float,
        frequency_penalty: float,
        presence_penalty: float,
        stop: str,
        seed: float | None,
    ) -> tuple[str, str]:
        """The same prompt with the active adapter and with the base model, with each reply's speed."""
        messages = build_messages(system_prompt or "", [], prompt or "")
        p = sampling_from_form(
            temperature, top_p, top_k, max_tokens, repetition_penalty, frequency_penalty, presence_penalty, stop, seed
        )
        with_adapter, base = ctx.engines.compare_with_base(model or "default", messages, p)

        def show(title: str, r: GenerationResult) -> str:
            return f"#### {title}\n\n{r.text}\n\n`{r.stats.summary()}`"

        return show("With adapter", with_adapter), show("Base model", base)

    chat_inputs = [
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
        freq_s,
        pres_s,
        streaming,
        session,
        use_case,
        safety_box,
    ]
    chat_outputs = [chatbot, stats, message_box, session]
    # Stop is offered from the moment a message is sent until its reply has ended (finished, stopped or failed)
    send_event = send.click(offer, None, [stop_btn], api_visibility="private", queue=False).then(
        generate, chat_inputs, chat_outputs, api_name="playground_generate", concurrency_limit=8
    )
    submit_event = message_box.submit(offer, None, [stop_btn], api_visibility="private", queue=False).then(
        generate, chat_inputs, chat_outputs, api_visibility="private", concurrency_limit=8
    )
    conversations = shared_tabs["conversations"]
    for event in (send_event, submit_event):
        event.then(
            conversations["refresh_fn"], conversations["inputs"], conversations["outputs"], api_visibility="private"
        )
        # the first message loads the model: the status line says so
        event.then(show_load_status, [model_box], [load_status], api_visibility="private", queue=False)
        event.then(withdraw, None, [stop_btn], api_visibility="private", queue=False)
    stop_btn.click(stop_generation, None, None, api_name="playground_stop", queue=False)
    clear.click(lambda: ([], ""), None, [chatbot, stats], api_visibility="private", queue=False).then(
        conversations["new_fn"], conversations["new_inputs"], conversations["new_outputs"], api_visibility="private"
    )
    refresh.click(refresh_models, [model_box, model_language.dropdown], [model_box], api_name="playground_models")
    model_box.change(use_alias_settings, [model_box], params, api_visibility="private")
    model_box.change(show_load_status, [model_box], [load_status], api_visibility="private", queue=False)
    root = Context.root_block
    if root is not None:  # `studio serve` loads the default model before the first page: a fresh page says so
        root.load(show_load_status, [model_box], [load_status], api_visibility="private", queue=False)
    # a model loaded since (Load, a chat, the API) counts the Prompt view's tokens once the view is opened
    prompt_panel = shared_tabs["prompt"]
    tab_prompt.select(
        prompt_panel["count_fn"], prompt_panel["count_inputs"], [prompt_panel["count"]], api_visibility="private"
    )
    use_case.change(apply_use_case, [use_case], [*params, system_box], api_visibility="private")
    # a person picking a model: its parameters replace the use case's, so the use case's label and system prompt
    # go too (a programmatic change, such as Save as alias selecting the new alias, keeps them)
    model_box.input(clear_use_case, [use_case, system_box], [use_case, system_box], api_visibility="private")
    alias_inputs = [alias_name, model_box, temperature_s, top_p_s, top_k_s, max_tokens_s, rep_s, stop_box, seed_box]
    save_alias_event = save_alias_btn.click(save_as_alias, alias_inputs, [model_box], api_name="playground_save_alias")
    timer.tick(monitor, None, [memory, loaded], api_visibility="private", queue=False)
    load_btn.click(
        load_model,
        [model_box, adapter_box, quantization, engine_choice],
        [load_status, memory, loaded],
        api_name="playground_load",
    )
    estimate_btn.click(estimate, [model_box, quantization], [load_status], api_name="playground_estimate")
    unload_btn.click(unload_model, [model_box], [load_status, memory, loaded], api_name="playground_unload")
    swap_btn.click(swap, [model_box, adapter_box], [load_status, loaded], api_name="playground_swap_adapter")
    base_btn.click(disable_adapters, [model_box], [load_status, loaded], api_name="playground_disable_adapters")
    compare_btn.click(
        compare,
        [compare_prompt, model_box, system_box, *params],
        [compare_adapter, compare_base],
        api_name="playground_compare",
    )

    return {
        "model": model_box,
        "adapter": adapter_box,
        "chatbot": chatbot,
        "message": message_box,
        "send": send,
        "stop": stop_btn,
        "stats": stats,
        "session": session,
        "refresh_fn": refresh_models,
        "load_status": load_status,
        "status_fn": show_load_status,
        "changed_events": [save_alias_event],
        "panels": shared_tabs,
    }
