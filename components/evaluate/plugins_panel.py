"""Evaluate "Metrics & plugins": every metric (built-in or plugin) with its description, and the plugins loaded
from ``STUDIO_HOME/plugins/`` and installed packages, with the error of any that failed to load."""

from __future__ import annotations

from typing import Any

import gradio as gr

from studio.context import AppContext
from studio.evaluation.plugins import load_registry, plugin_rows

METRIC_COLUMNS = ["metric", "source", "description"]
PLUGIN_COLUMNS = ["plugin", "kind", "metrics / status", "description", "file"]


def create_plugins_panel(ctx: AppContext) -> dict[str, Any]:
    gr.Markdown(
        "## Metrics & plugins\n"
        f"Put a Python file with `register(registry)` or a YAML metric (regex, keywords, json_schema, judge) in "
        f"`{ctx.settings.home / 'plugins'}`, or install a package with a `whetstone.metrics` entry point; then "
        "press Reload. See `studio/evaluation/plugins.py` and `configs/eval/plugins-examples/`.",
        elem_id="evaluate-plugins-title",
    )
    reload_btn = gr.Button("Reload plugins", elem_id="evaluate-plugins-reload")
    metrics = gr.Dataframe(
        headers=METRIC_COLUMNS, interactive=False, wrap=True, label="Metrics", elem_id="evaluate-metrics-table"
    )
    plugins = gr.Dataframe(
        headers=PLUGIN_COLUMNS, interactive=False, wrap=True, label="Plugins", elem_id="evaluate-plugins-table"
    )

    def load() -> tuple[Any, Any]:
        """Every metric and every plugin (with load errors)."""
        registry = load_registry(ctx.settings)
        return (
            gr.Dataframe(value=[[s.name, s.source, s.description] for s in registry.specs()], headers=METRIC_COLUMNS),
            gr.Dataframe(value=plugin_rows(registry.plugins), headers=PLUGIN_COLUMNS),
        )

    reload_btn.click(load, None, [metrics, plugins], api_name="evaluate_plugins")
    return {"load_fn": load, "load_outputs": [metrics, plugins]}
