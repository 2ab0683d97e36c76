"""Safety → Policy: the safety policy as a form (one widget per ``SafetyPolicyConfig`` field, its description as
the tooltip) and as raw YAML, the active toxicity scorer, and the editable offensive-word list. Policies are named
(``studio.safety.store.PolicyStore``: saved only under ``STUDIO_HOME/safety``; word lists and checkpoints only
from the allowed folders); saving writes the file atomically; a bad value is refused with a message naming the
field. Widgets are built from the schema, so a field added to the policy appears here by itself. Wiring only:
``studio.safety.policy`` and ``studio.safety.store``."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import gradio as gr
from pydantic import BaseModel

from components.common import handle_errors
from studio.context import AppContext
from studio.errors import UserError
from studio.safety.policy import (
    SUPPORTED_PII_ENTITIES,
    SafetyPolicyConfig,
    dump_policy_yaml,
    parse_policy_yaml,
    policy_from_dict,
)
from studio.safety.toxicity import active_scorer

FieldPath = tuple[str, ...]


def _optional(annotation: Any) -> tuple[Any, bool]:
    """``(inner, True)`` for ``X | None``, else ``(annotation, False)``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _widget(path: FieldPath, annotation: Any, description: str, value: Any) -> gr.components.Component:
    """The widget for one policy field."""
    label, elem = path[-1], "safety-policy-" + "-".join(path)
    inner, optional = _optional(annotation)
    if inner is bool:
        return gr.Checkbox(value=value, label=label, info=description, elem_id=elem)
    if get_origin(inner) is Literal:
        return gr.Dropdown(list(get_args(inner)), value=value, label=label, info=description, elem_id=elem)
    if get_origin(inner) is list:
        (item,) = get_args(inner)
        if get_origin(item) is Literal:
            return gr.CheckboxGroup(list(get_args(item)), value=value, label=label, info=description, elem_id=elem)
        return gr.Dropdown(
            list(SUPPORTED_PII_ENTITIES), value=value, multiselect=True, label=label, info=description, elem_id=elem
        )
    if inner in (int, float):
        hint = " Empty: no limit." if optional else ""
        return gr.Number(
            value=value, label=label, info=description + hint, precision=0 if inner is int else None, elem_id=elem
        )
    return gr.Textbox(value="" if value is None else value, label=label, info=description, elem_id=elem)


def _form_value(annotation: Any, value: Any) -> Any:
    """A widget's value as the policy field expects it (empty → None for optional fields)."""
    inner, optional = _optional(annotation)
    if optional and (value is None or value == ""):
        return None
    if inner is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _form_updates(policy: SafetyPolicyConfig, fields: list[tuple[FieldPath, Any]]) -> list[Any]:
    data = policy.model_dump(mode="json")
    out = []
    for path, _annotation in fields:
        value: Any = data
        for key in path:
            value = value[key]
        out.append("" if value is None and _optional(_annotation)[0] is str else value)
    return out


def create_policy_panel(ctx: AppContext, policy_path: gr.Dropdown) -> dict[str, Any]:
    store = ctx.engines.safety.policies
    _file, policy = store.load(str(policy_path.value or ""))
    scorer = gr.Markdown(elem_id="safety-scorer")
    fields: list[tuple[FieldPath, Any]] = []
    widgets: list[gr.components.Component] = []
    data = policy.model_dump(mode="json")
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Group():
                for name in ("name", "description"):
                    info = SafetyPolicyConfig.model_fields[name]
                    widgets.append(_widget((name,), info.annotation, info.description or "", data[name]))
                    fields.append(((name,), info.annotation))
            for section, info in SafetyPolicyConfig.model_fields.items():
                model = info.annotation
                if not (isinstance(model, type) and issubclass(model, BaseModel)):
                    continue
                with gr.Accordion(f"{section} — {info.description}", open=section in ("pii", "toxicity")):
                    for name, sub in model.model_fields.items():
                        widgets.append(
                            _widget((section, name), sub.annotation, sub.description or "", data[section][name])
                        )
                        fields.append(((section, name), sub.annotation))
            save_form_btn = gr.Button("Save policy", variant="primary", elem_id="safety-policy-save-form")
        with gr.Column(scale=2):
            yaml_box = gr.Code(
                value=dump_policy_yaml(policy), language="yaml", label="Policy YAML", elem_id="safety-policy-yaml"
            )
            with gr.Row():
                reload_btn = gr.Button("Reload", elem_id="safety-policy-reload")
                save_yaml_btn = gr.Button("Save YAML", elem_id="safety-policy-save-yaml")
    status = gr.Markdown(elem_id="safety-policy-status")
    policy_json = gr.JSON(visible=False)
    with gr.Accordion("Offensive-word list", open=False):
        words_path = gr.Markdown(elem_id="safety-words-path")
        words = gr.Code(label="One word or phrase per line; # starts a comment", elem_id="safety-words")
        save_words_btn = gr.Button("Save word list", elem_id="safety-words-save")
        words_status = gr.Markdown(elem_id="safety-words-status")

    def describe(path: Path, policy: SafetyPolicyConfig) -> dict[str, Any]:
        """The policy as the API returns it; a word list or checkpoint outside the allowed folders is reported
        (the policy still loads, so that it can be fixed and saved)."""
        try:
            resolved = store.resolved(policy)
            scorer_name = active_scorer(resolved)[1] if policy.toxicity.enabled else "off (toxicity scoring disabled)"
            words_file, words_text = store.word_list_text(policy)
            words_shown = store.display(words_file)
        except UserError as exc:
            scorer_name, words_shown, words_text = f"not available: {exc}", f"not available: {exc}", ""
        return {
            "policy_file": store.display(path),
            "policy": policy.model_dump(mode="json"),
            "yaml": dump_policy_yaml(policy),
            "scorer": scorer_name,
            "word_list_file": words_shown,
            "words": words_text,
        }

    @handle_errors
    def get_policy(name: str) -> dict[str, Any]:
        path, loaded = store.load(name)
        return describe(path, loaded)

    @handle_errors
    def save_yaml(name: str, text: str) -> dict[str, Any]:
        saved = parse_policy_yaml(text, "policy YAML")
        return {**describe(store.save(saved, name), saved), "saved": True}

    @handle_errors
    def save_form(name: str, *values: Any) -> dict[str, Any]:
        nested: dict[str, Any] = {}
        for (field_path, annotation), value in zip(fields, values, strict=True):
            target = nested
            for key in field_path[:-1]:
                target = target.setdefault(key, {})
            target[field_path[-1]] = _form_value(annotation, value)
        saved = policy_from_dict(nested, "policy form")
        return {**describe(store.save(saved, name), saved), "saved": True}

    def show(result: dict[str, Any]) -> list[Any]:
        parsed = SafetyPolicyConfig.model_validate(result["policy"])
        note = f"Saved {result['policy_file']}." if result.get("saved") else f"Loaded {result['policy_file']}."
        scorer_md = f"**Active toxicity scorer:** {result['scorer']}"
        return [
            result["yaml"],
            note,
            scorer_md,
            *_form_updates(parsed, fields),
            f"Word list file: `{result['word_list_file']}`",
            result["words"],
        ]

    show_outputs = [yaml_box, status, scorer, *widgets, words_path, words]

    @handle_errors
    def save_words(name: str, text: str) -> str:
        target = store.save_word_list(name, text)
        return f"Saved {store.display(target)}: the next check uses it."

    reload_btn.click(get_policy, [policy_path], [policy_json], api_name="safety_policy").success(
        show, [policy_json], show_outputs, api_visibility="private"
    )

    def policy_names(name: str | None) -> Any:
        """The picker with a policy saved under a new name among its choices."""
        return gr.Dropdown(choices=store.names(), value=name)

    for saved in (
        save_yaml_btn.click(save_yaml, [policy_path, yaml_box], [policy_json], api_name="safety_save_policy"),
        save_form_btn.click(save_form, [policy_path, *widgets], [policy_json], api_visibility="private"),
    ):
        saved.success(show, [policy_json], show_outputs, api_visibility="private")
        saved.success(policy_names, [policy_path], [policy_path], api_visibility="private", queue=False)
    save_words_btn.click(save_words, [policy_path, words], [words_status], api_name="safety_save_words")
    return {
        "load_fn": lambda path: show(get_policy(path)),
        "load_inputs": [policy_path],
        "load_outputs": show_outputs,
    }
