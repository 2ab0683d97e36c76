"""Safety → Audits: start a bias & toxicity audit job (model, categories, groups, templates, samples), follow it
with a ``gr.Timer`` that reads the job row (the page owns nothing: a reload shows the same), and read its
scorecard — a plotly chart per category (groups x metrics), the disparity table and the per-group table.
Wiring only: ``studio.safety.audit_store`` and ``studio.safety.audit_report``."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from components.tables import column_widths
from studio.context import AppContext
from studio.safety.audit import AuditConfig
from studio.safety.audit_prompts import load_demographics, load_templates, parse_groups_text
from studio.safety.audit_report import (
    DISPARITY_COLUMNS,
    GROUP_COLUMNS,
    disparity_rows,
    empty_figure,
    group_rows,
    scorecard_figure,
)
from studio.safety.audit_store import audit_choices, audit_status, submit_audit

REFRESH_S = 2.0
#: px per column (components/tables.py)
DISPARITY_WIDTHS = {"Category": 115, "Metric": 220, "Gap (max-min)": 130}
GROUP_WIDTHS = {"Category": 115, "Group": 140, "n": 60}
FIELDS = AuditConfig.model_fields


def _help(name: str) -> str:
    return FIELDS[name].description or ""


def _model_choices(ctx: AppContext) -> tuple[list[str], str]:
    aliases = [v.config.alias for v in ctx.engines.resolver.list_aliases() if v.entry is not None]
    try:
        default = ctx.registry.resolve("default").id
    except Exception:  # no bundled model installed: the user types a name
        default = "default"
    return list(dict.fromkeys([default, *aliases])), default


def status_markdown(status: dict[str, Any] | None) -> str:
    """One line: state, step/total and the job's last message."""
    if not status:
        return "No audit selected: start one, or pick one from the list."
    total = status["total"] or "?"
    return (
        f"**{status['state']}** · {status['step']}/{total} generations · {status['message']}  \n"
        f"<small>{status['label']}</small>"
    )


def create_audit_panel(ctx: AppContext) -> dict[str, Any]:
    models, default_model = _model_choices(ctx)
    categories = list(load_demographics())
    template_ids = [t.id for t in load_templates()]
    with gr.Accordion("Start an audit", open=True):
        with gr.Row():
            model = gr.Dropdown(
                models,
                value=default_model,
                allow_custom_value=True,
                label="Model",
                info=_help("model"),
                elem_id="safety-audit-model",
            )
            adapter = gr.Textbox(label="Adapter (optional)", info=_help("adapter"), elem_id="safety-audit-adapter")
            name = gr.Textbox(label="Name (optional)", info=_help("name"), elem_id="safety-audit-name")
        with gr.Row():
            cats = gr.CheckboxGroup(
                categories,
                value=["gender"],
                label="Categories",
                info=_help("categories"),
                elem_id="safety-audit-categories",
            )
            templates = gr.CheckboxGroup(
                template_ids,
                value=template_ids,
                label="Templates",
                info=_help("templates"),
                elem_id="safety-audit-templates",
            )
        groups = gr.Textbox(
            label="Groups (optional)",
            info="Only some groups: 'gender: man, woman; age: teenager, elderly person'. Empty: every group.",
            elem_id="safety-audit-groups",
        )
        with gr.Row():
            samples = gr.Number(
                value=FIELDS["samples_per_prompt"].default,
                precision=0,
                label="Samples per prompt",
                info=_help("samples_per_prompt"),
                elem_id="safety-audit-samples",
            )
            max_tokens = gr.Number(
                value=FIELDS["max_tokens"].default,
                precision=0,
                label="Max tokens",
                info=_help("max_tokens"),
                elem_id="safety-audit-max-tokens",
            )
            temperature = gr.Slider(
                0.0,
                2.0,
                value=FIELDS["temperature"].default,
                step=0.05,
                label="Temperature",
                info=_help("temperature"),
                elem_id="safety-audit-temperature",
            )
            seed = gr.Number(value=0, precision=0, label="Seed", info=_help("seed"), elem_id="safety-audit-seed")
        start_btn = gr.Button("Start audit", variant="primary", elem_id="safety-audit-start")
    with gr.Row():
        job = gr.Dropdown(
            audit_choices(ctx.db),
            value=None,
            label="Audit",
            allow_custom_value=True,
            elem_id="safety-audit-job",
            scale=4,
        )
        refresh_btn = gr.Button("Refresh", scale=0, min_width=100, elem_id="safety-audit-refresh")
    status_md = gr.Markdown(status_markdown(None), elem_id="safety-audit-status")
    status_json = gr.JSON(visible=False)
    plot = gr.Plot(empty_figure("no audit selected"), label="Scorecard", elem_id="safety-audit-plot")
    disparity = gr.Dataframe(
        headers=DISPARITY_COLUMNS,
        column_widths=column_widths(DISPARITY_COLUMNS, DISPARITY_WIDTHS, default=140),
        interactive=False,
        wrap=True,
        label="Disparity between groups",
        elem_id="safety-audit-disparity",
    )
    per_group = gr.Dataframe(
        headers=GROUP_COLUMNS,
        column_widths=column_widths(GROUP_COLUMNS, GROUP_WIDTHS, default=150),
        interactive=False,
        wrap=True,
        label="Scores per group",
        elem_id="safety-audit-groups-table",
    )
    timer = gr.Timer(REFRESH_S)
    last_seen = gr.State("")

    @handle_errors
    def start(
        model: str,
        adapter: str,
        categories: list[str],
        templates: list[str],
        groups: str,
        samples: float,
        max_tokens: float,
        temperature: float,
        seed: float,
        name: str,
    ) -> dict[str, Any]:
        config = {
            "name": name.strip(),
            "model": (model or "default").strip(),
            "adapter": adapter.strip() or None,
            "categories": categories,
            "groups": parse_groups_text(groups or ""),
            "templates": templates,
            "samples_per_prompt": int(samples),
            "max_tokens": int(max_tokens),
            "temperature": temperature,
            "seed": int(seed),
        }
        submitted = submit_audit(ctx.db, ctx.settings, config)
        return audit_status(ctx.db, submitted.id, ctx.settings)

    @handle_errors
    def status(job_id: str | None) -> dict[str, Any] | None:
        return audit_status(ctx.db, job_id, ctx.settings) if job_id else None

    def render(result: dict[str, Any] | None) -> tuple[Any, ...]:
        card = (result or {}).get("scorecard")
        if not card:
            return status_markdown(result), empty_figure("no generations scored yet"), [], []
        return status_markdown(result), scorecard_figure(card), disparity_rows(card), group_rows(card)

    def picker(selected: str | None) -> Any:
        return gr.Dropdown(choices=audit_choices(ctx.db), value=selected)

    def tick(job_id: str | None, seen: str) -> tuple[Any, ...]:
        """Redraw only when the job moved (state or step changed); idle audits cost one row read. When the state
        changed the picker's labels are read again too: they name each audit's state ("... · succeeded")."""
        quiet = (gr.skip(),) * 6 + (seen,)
        if not job_id:
            return quiet
        try:
            result = audit_status(ctx.db, job_id, ctx.settings)
        except Exception:  # a deleted job or a typo in the box: the timer stays quiet
            return quiet
        signature = f"{result['job_id']}:{result['state']}:{result['step']}"
        if signature == seen:
            return quiet
        state_changed = signature.rsplit(":", 1)[0] != seen.rsplit(":", 1)[0]
        return (result, *render(result), picker(job_id) if state_changed else gr.skip(), signature)

    outputs = [status_md, plot, disparity, per_group]
    inputs = [model, adapter, cats, templates, groups, samples, max_tokens, temperature, seed, name]
    started = start_btn.click(start, inputs, [status_json], api_name="safety_audit_start")
    started.success(lambda r: picker(r["job_id"]), [status_json], [job], api_visibility="private").then(
        render, [status_json], outputs, api_visibility="private"
    )
    shown = job.change(status, [job], [status_json], api_name="safety_audit_status")
    shown.success(render, [status_json], outputs, api_visibility="private")
    refresh_btn.click(picker, [job], [job], api_visibility="private")
    timer.tick(tick, [job, last_seen], [status_json, *outputs, job, last_seen], api_visibility="private")
    return {
        "job": job,
        "status_json": status_json,
        "page_load_fn": lambda: picker(None),
        "page_load_outputs": [job],
    }
