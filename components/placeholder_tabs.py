"""Tabs that are not built yet: each says so plainly and what it will do."""

from __future__ import annotations

import gradio as gr

from components.common import coming_later
from studio.context import AppContext

PLANNED: dict[str, tuple[str, str]] = {
    "aliases": (
        "Aliases",
        "save named model configurations (model, chat template, sampling and performance parameters) as "
        "YAML files, validate them, try them before saving, and use them everywhere a model name is accepted.",
    ),
    "compare": (
        "Compare A/B",
        "send one prompt to two models side by side, vote blind, and build a leaderboard and preference data.",
    ),
    "finetune": (
        "Fine-Tune",
        "upload a dataset and fine-tune a model (LoRA, QLoRA, full, DPO, reward) as a background job that "
        "survives page reloads, with live loss curves.",
    ),
    "evaluate": (
        "Evaluate",
        "run metrics (perplexity, ROUGE, BLEU, custom plugins) over datasets and compare experiments.",
    ),
    "safety": (
        "Safety",
        "filter inputs and outputs (PII, toxicity, word lists, length limits) at inference time and run bias audits.",
    ),
}


def create_placeholder_tab(ctx: AppContext, key: str) -> dict[str, gr.components.Component]:
    title, what = PLANNED[key]
    with gr.Tab(title, id=key):
        note = coming_later(title, what)
    return {"note": note}
