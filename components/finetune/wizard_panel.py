"""Fine-Tune "New job": the wizard. Step 1 labeled examples, Step 2 base model (with a language filter) and method,
Step 3 training parameters, Step 4 schedule, Review: the full YAML (what is submitted, so form and file are one
schema), a duration estimate from real warm-up steps, Submit. Wiring only: ``studio.training.service``.

Every widget's ``info`` is the field's help text from ``field_specs()`` and sliders take its range. Number
boxes take no ``minimum``/``maximum``: Gradio's own range error does not say which field is wrong, while the
config validation names the field and its allowed range (the range is in the help text too)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from components.finetune.render import CSS, SFT_WIZARD_NOTE, method_cards_html, method_label
from components.language_filter import add_language_filter
from studio.context import AppContext
from studio.errors import ValidationError
from studio.models.languages import ANY
from studio.monitoring.costs import estimated_cost, load_costs
from studio.settings import BUNDLED_MODEL_ID
from studio.training.config import METHODS, FinetuneConfig, field_specs, method_specs
from studio.training.service import (
    FORM_FIELDS,
    LATEST,
    base_model_choices,
    config_yaml_from_form,
    estimate_yaml,
    form_values,
    method_form_defaults,
    method_unavailable_reason,
    submit_yaml,
    version_choices,
)
from studio.training.train import format_duration

DEFAULT_DATASET = "whetstone-assistant"
#: fields whose value a method's smart defaults may change when the method changes
METHOD_DEFAULT_FIELDS = (
    "learning_rate",
    "lr_scheduler",
    "warmup_ratio",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "num_virtual_tokens",
    "adapter_target_modules",
    "adapter_feedforward_modules",
)
STEP_REVIEW = 5


def create_wizard_panel(ctx: AppContext) -> dict[str, Any]:
    specs = field_specs()
    methods = method_specs()
    unavailable: dict[str, str] = {m: why for m in METHODS if (why := method_unavailable_reason(m))}
    names = ctx.datasets.names()
    dataset0 = DEFAULT_DATASET if DEFAULT_DATASET in names else (names[0] if names else None)
    models = base_model_choices(ctx.engines.resolver)
    model0 = BUNDLED_MODEL_ID if BUNDLED_MODEL_ID in models else (models[0] if models else BUNDLED_MODEL_ID)
    initial = form_values(FinetuneConfig(name="job", dataset="dataset", method="lora"))
    widgets: dict[str, Any] = {}

    def info(name: str, extra: str = "") -> str:
        return specs[name].description + extra

    def number(name: str, label: str, *, integer: bool, extra: str = "", **kw: Any) -> gr.Number:
        value = initial[name]
        widgets[name] = gr.Number(
            value=None if value == "" else value,
            label=label,
            info=info(name, extra),
            precision=0 if integer else None,
            elem_id=f"finetune-{name}",
            **kw,
        )
        return widgets[name]  # type: ignore[no-any-return]

    def slider(name: str, label: str, step: float) -> gr.Slider:
        spec = specs[name]
        widgets[name] = gr.Slider(
            spec.minimum if spec.minimum is not None else 0,
            spec.maximum if spec.maximum is not None else 1,
            value=initial[name],
            step=step,
            label=label,
            info=spec.description,
            elem_id=f"finetune-{name}",
        )
        return widgets[name]  # type: ignore[no-any-return]

    def text(name: str, label: str, placeholder: str = "", extra: str = "") -> gr.Textbox:
        widgets[name] = gr.Textbox(
            value=initial[name] if name != "name" else "",
            label=label,
            info=info(name, extra),
            placeholder=placeholder,
            elem_id=f"finetune-{name}",
        )
        return widgets[name]  # type: ignore[no-any-return]

    def check(name: str, label: str) -> gr.Checkbox:
        widgets[name] = gr.Checkbox(value=bool(initial[name]), label=label, info=info(name), elem_id=f"finetune-{name}")
        return widgets[name]  # type: ignore[no-any-return]

    gr.Markdown("## New training job", elem_id="finetune-wizard-title")
    with gr.Walkthrough(selected=1, elem_id="finetune-wizard") as walkthrough:
        with gr.Step("1 · Dataset", id=1, elem_id="finetune-step-1"):
            gr.Markdown("### Step 1: Select Dataset\nChoose labeled examples for supervised learning.")
            with gr.Row():
                widgets["dataset"] = gr.Dropdown(
                    names,
                    value=dataset0,
                    label="Dataset",
                    info=info("dataset"),
                    allow_custom_value=True,
                    elem_id="finetune-dataset",
                )
                widgets["dataset_version"] = gr.Dropdown(
                    version_choices(ctx.datasets, dataset0 or ""),
                    value=LATEST,
                    label="Version",
                    info=info("dataset_version"),
                    allow_custom_value=True,
                    elem_id="finetune-dataset_version",
                )
            slider("validation_split", "Validation split", 0.01)
            with gr.Row():
                text("name", "Job name", "empty = <dataset>-<method>")
                text("output_name", "Saved adapter / model name", "empty = the job name")
            with gr.Row():
                gr.Column(scale=4)
                next1 = gr.Button("Next: model & method →", variant="primary", elem_id="finetune-next-1", scale=1)
        with gr.Step("2 · Model & method", id=2, elem_id="finetune-step-2"):
            gr.Markdown("### Step 2: Configure Model\nSelect base model and fine-tuning method.")
            with gr.Row():
                widgets["base_model"] = gr.Dropdown(
                    models,
                    value=model0,
                    allow_custom_value=True,
                    label="Base model",
                    info=info("base_model"),
                    elem_id="finetune-base_model",
                    scale=4,
                )
                model_language = add_language_filter(
                    ctx,
                    [widgets["base_model"]],
                    lambda: base_model_choices(ctx.engines.resolver),
                    elem_id="finetune-base-model-language",
                    api_name="finetune_filter_models",
                )
            gr.Markdown("#### Fine-Tuning Method *\nChoose how your model will learn from labeled examples.")
            widgets["method"] = gr.Radio(
                [(method_label(methods[m], unavailable.get(m)), m) for m in METHODS],
                value="lora",
                label="Method",
                info=info("method"),
                elem_id="finetune-method",
            )
            cards = gr.HTML(
                method_cards_html(list(methods.values()), "lora", unavailable),
                css_template=CSS,
                elem_id="finetune-method-cards",
            )
            with gr.Group(visible=True) as lora_group:
                gr.Markdown("**LoRA parameters**")
                with gr.Row():
                    slider("lora_r", "LoRA rank (r)", 1)
                    number("lora_alpha", "LoRA alpha (α)", integer=True)
                    slider("lora_dropout", "LoRA dropout", 0.01)
                text("target_modules", "Target modules", "empty = the architecture's usual choice; or all-linear")
            with gr.Group(visible=False) as prefix_group:
                gr.Markdown("**Prefix tuning parameters**")
                slider("num_virtual_tokens", "Virtual tokens (prefix length)", 1)
            with gr.Group(visible=False) as adapter_group:
                gr.Markdown("**Adapter layer (IA3) parameters**")
                with gr.Row():
                    text("adapter_target_modules", "Adapter target modules", "empty = k_proj, v_proj, down_proj")
                    text("adapter_feedforward_modules", "Feed-forward modules among them", "empty = down_proj")
            with gr.Group(visible=False) as kto_group:
                gr.Markdown("**KTO parameters** (with the LoRA parameters above)")
                with gr.Row():
                    number("kto_beta", "KTO β", integer=False)
                    number("kto_desirable_weight", "Desirable weight", integer=False)
                    number("kto_undesirable_weight", "Undesirable weight", integer=False)
            full_note = gr.Markdown(
                "**Full fine-tuning** updates every weight: no extra parameters, but the most memory and the "
                "largest artifact (a whole model).",
                visible=False,
            )
            gr.Markdown(SFT_WIZARD_NOTE)
            with gr.Row():
                back2 = gr.Button("← Back", elem_id="finetune-back-2", scale=1)
                gr.Column(scale=3)
                next2 = gr.Button("Next: training →", variant="primary", elem_id="finetune-next-2", scale=1)
        with gr.Step("3 · Training", id=3, elem_id="finetune-step-3"):
            gr.Markdown("### Step 3: Training parameters")
            with gr.Row():
                number("epochs", "Epochs", integer=False)
                number("max_steps", "Max steps", integer=True, extra=" 0 or empty = run the epochs.")
                number("batch_size", "Batch size", integer=True)
                number("gradient_accumulation", "Gradient accumulation", integer=True)
            with gr.Row():
                number("learning_rate", "Learning rate", integer=False)
                widgets["lr_scheduler"] = gr.Dropdown(
                    list(specs["lr_scheduler"].choices),
                    value=initial["lr_scheduler"],
                    label="Learning-rate schedule",
                    info=info("lr_scheduler"),
                    elem_id="finetune-lr_scheduler",
                )
                slider("warmup_ratio", "Warm-up ratio", 0.01)
            with gr.Row():
                number("max_length", "Max length (tokens)", integer=True)
                check("packing", "Packing")
                check("gradient_checkpointing", "Gradient checkpointing")
            with gr.Row():
                number("eval_every_steps", "Eval every N steps", integer=True, extra=" 0 works as empty.")
                slider("early_stopping_patience", "Early stopping patience", 1)
                number("early_stopping_threshold", "Early stopping threshold", integer=False)
            with gr.Row():
                number("checkpoint_every_steps", "Checkpoint every N steps", integer=True)
                number("logging_steps", "Log every N steps", integer=True)
                number("seed", "Seed", integer=True)
            gr.Markdown("#### Multi-GPU training")
            with gr.Row():
                widgets["strategy"] = gr.Dropdown(
                    list(specs["strategy"].choices),
                    value=initial["strategy"],
                    label="Strategy",
                    info=info("strategy"),
                    elem_id="finetune-strategy",
                )
                number("num_processes", "Processes", integer=True, extra=" 0 works as empty.")
                check("cpu_offload", "CPU offload")
            with gr.Row():
                back3 = gr.Button("← Back", elem_id="finetune-back-3", scale=1)
                gr.Column(scale=3)
                next3 = gr.Button("Next: schedule →", variant="primary", elem_id="finetune-next-3", scale=1)
        with gr.Step("4 · Schedule", id=4, elem_id="finetune-step-4"):
            gr.Markdown("### Step 4: Schedule")
            with gr.Row():
                text(
                    "not_before",
                    "Not before",
                    "YYYY-MM-DD HH:MM (local time); empty = as soon as a worker is free",
                    " Format: YYYY-MM-DD HH:MM, this machine's local time.",
                )
                slider("priority", "Priority", 1)
            with gr.Row():
                back4 = gr.Button("← Back", elem_id="finetune-back-4", scale=1)
                gr.Column(scale=3)
                review_btn = gr.Button("Review →", variant="primary", elem_id="finetune-review", scale=1)
        with gr.Step("Review", id=STEP_REVIEW, elem_id="finetune-step-review"):
            gr.Markdown(
                "### Review\nThe full job config. This YAML is exactly what is submitted: edit it here if you like "
                "(the same file runs with `studio jobs submit config.yaml`)."
            )
            config_yaml = gr.Code(
                language="yaml", lines=24, interactive=True, label="Job config (YAML)", elem_id="finetune-yaml"
            )
            with gr.Row():
                rebuild_btn = gr.Button("Rebuild from the form", elem_id="finetune-rebuild")
                estimate_btn = gr.Button("Estimate duration", elem_id="finetune-estimate")
                submit_btn = gr.Button("Submit", variant="primary", elem_id="finetune-submit")
            estimate_md = gr.Markdown(elem_id="finetune-estimate-result")
            with gr.Row():
                job_id = gr.Textbox(label="Submitted job id", interactive=False, elem_id="finetune-submitted-id")
                submit_md = gr.Markdown(elem_id="finetune-submit-status")

    form_inputs = [widgets[name] for name in FORM_FIELDS]
    default_outputs = [widgets[name] for name in METHOD_DEFAULT_FIELDS]

    # -- handlers --------------------------------------------------------------------------------------------
    def go(step: int) -> Any:
        return gr.Walkthrough(selected=step)

    @handle_errors
    def review(*values: Any) -> tuple[str, Any]:
        """The form as the full YAML config (errors name the field), then the Review step."""
        return config_yaml_from_form(dict(zip(FORM_FIELDS, values, strict=True))), go(STEP_REVIEW)

    @handle_errors
    def rebuild(*values: Any) -> str:
        return config_yaml_from_form(dict(zip(FORM_FIELDS, values, strict=True)))

    def on_method(method: str) -> list[Any]:
        """Show the method's card and parameters and apply its smart defaults."""
        defaults = method_form_defaults(method) if method in methods else {}  # type: ignore[arg-type]
        updates: list[Any] = [
            method_cards_html(list(methods.values()), method, unavailable),
            gr.Group(visible=method in ("lora", "qlora", "kto")),
            gr.Group(visible=method == "prefix"),
            gr.Group(visible=method == "adapter"),
            gr.Group(visible=method == "kto"),
            gr.Markdown(visible=method == "full"),
        ]
        for name in METHOD_DEFAULT_FIELDS:
            if name not in defaults:
                updates.append(gr.update())
                continue
            value = defaults[name]
            updates.append(None if value == "" and isinstance(widgets[name], gr.Number) else value)
        if method in unavailable:
            gr.Warning(f"QLoRA is not available here: {unavailable[method]}")
        return updates

    @handle_errors
    def on_dataset(dataset: str | None) -> Any:
        return gr.Dropdown(choices=version_choices(ctx.datasets, dataset or ""), value=LATEST)

    @handle_errors
    def submit(config: str) -> tuple[str, str]:
        """Queue a fine-tuning job from its YAML config (the dataset version is pinned by number and content
        hash first). Returns (job id, message)."""
        job = submit_yaml(ctx.settings, ctx.db, config)
        when = f", not before {job.not_before.astimezone():%Y-%m-%d %H:%M}" if job.not_before else ""
        message = f"Job **{job.name}** queued as `{job.id}`{when}. The monitor shows its progress."
        gr.Info(f"Job {job.id} queued ({job.name})")
        return job.id, message

    @handle_errors
    def estimate(config: str, progress: gr.Progress = gr.Progress()) -> str:  # noqa: B008
        """How long the job will take, part by part (loading, tokenising, steps, evaluation, checkpoints), each
        measured here on the job's own model and data, with the range it may take."""
        progress(0.05, desc="Checking the config, dataset and base model")
        if not (config or "").strip():
            raise ValidationError("press Review first: the YAML config is empty", param="config")
        progress(0.2, desc="Loading the base model, tokenising, 3 real steps, one evaluation and one save")
        result = estimate_yaml(ctx.settings, ctx.db, config)
        progress(1.0, desc="Done")
        parts = "".join(f"\n* {line}" for line in result.breakdown())
        notes = "".join(f"\n\n{n}" for n in result.notes)
        table, _text = load_costs(ctx.settings)
        cost = estimated_cost(table, result.total_seconds, result.device)
        low = estimated_cost(table, result.low_seconds, result.device).amount
        high = estimated_cost(table, result.high_seconds, result.device).amount
        cost_line = (
            f"**Estimated cost: {cost.amount:.4f} {cost.currency}** ({low:.4f} – {high:.4f}) at {cost.basis}, by "
            "your own price table (Resources tab → Cost; shipped figures are examples)."
        )
        return (
            f"**Estimated duration: {result.summary()}**\n\n{cost_line}\n\nEach part measured here just now (the "
            f"estimate took {format_duration(result.estimate_seconds)}); the range has every part at its fastest and "
            f"at its slowest:\n{parts}{notes}"
        )

    def refresh_choices(dataset: str | None, model: str | None, language: str | None = ANY) -> tuple[Any, Any, Any]:
        """Datasets and base models may have changed elsewhere (imports, aliases): offer the current ones (the base
        models narrowed to the chosen language, and that picker's languages)."""
        names_now = ctx.datasets.names()
        language_box, language_now = model_language.refreshed(language)
        models_now = model_language.narrow(language_now)
        keep = dataset if dataset in names_now else (DEFAULT_DATASET if DEFAULT_DATASET in names_now else None)
        if keep is None and names_now:
            keep = names_now[0]
        return (
            gr.Dropdown(choices=names_now, value=keep),
            gr.Dropdown(choices=models_now, value=model or model0),
            language_box,
        )

    for button, step in ((next1, 2), (next2, 3), (next3, 4), (back2, 1), (back3, 2), (back4, 3)):
        button.click(lambda s=step: go(s), None, walkthrough, api_visibility="private", queue=False)
    review_btn.click(review, form_inputs, [config_yaml, walkthrough], api_visibility="private")
    rebuild_btn.click(rebuild, form_inputs, [config_yaml], api_visibility="private")
    widgets["method"].change(
        on_method,
        [widgets["method"]],
        [cards, lora_group, prefix_group, adapter_group, kto_group, full_note, *default_outputs],
        api_visibility="private",
        queue=False,
    )
    widgets["dataset"].change(on_dataset, [widgets["dataset"]], [widgets["dataset_version"]], api_visibility="private")
    estimate_btn.click(estimate, [config_yaml], [estimate_md], api_name="finetune_estimate", concurrency_limit=1)
    submit_event = submit_btn.click(submit, [config_yaml], [job_id, submit_md], api_name="finetune_submit")
    return {
        "walkthrough": walkthrough,
        "job_id": job_id,
        "submit_event": submit_event,
        "refresh_fn": refresh_choices,
        "refresh_io": [widgets["dataset"], widgets["base_model"], model_language.dropdown],
        "widgets": widgets,
    }
