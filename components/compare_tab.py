"""Compare tab: named side-by-side streaming, blind battles with votes, the leaderboard, ranking annotation,
batch A/B and the preference export → DPO loop. Wiring only; the panels live in ``components/compare/``."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.compare.annotate import create_ranking_panel
from components.compare.arena import create_batch_panel, create_blind_panel, create_named_panel
from components.compare.board import create_leaderboard_panel
from components.compare.loop import create_loop_panel
from components.compare.shared import CompareShared
from studio.compare.defaults import compare_defaults
from studio.context import AppContext
from studio.playground.prompts import load_use_cases


def create_compare_tab(ctx: AppContext) -> dict[str, Any]:
    defaults = compare_defaults().generation
    with gr.Tab("Compare A/B", id="compare"):
        with gr.Row():
            temperature = gr.Slider(
                0.0, 2.0, value=defaults.temperature, step=0.05, label="Temperature", elem_id="compare-temperature"
            )
            max_tokens = gr.Slider(
                1, 1024, value=defaults.max_tokens, step=1, label="Max tokens per side", elem_id="compare-max-tokens"
            )
            use_case = gr.Dropdown(
                ["", *load_use_cases()], value="", label="Use case (label for votes)", elem_id="compare-use-case"
            )
            tags = gr.Textbox(label="Tags (comma-separated)", elem_id="compare-tags")
            refresh = gr.Button("Refresh models & adapters", elem_id="compare-refresh", scale=0)
        shared = CompareShared(ctx, temperature, max_tokens, use_case, tags)
        with gr.Tabs(elem_id="compare-modes") as modes:
            with gr.Tab("Side by side", id="compare-named"):
                named = create_named_panel(shared)
            with gr.Tab("Blind battle", id="compare-blind"):
                blind = create_blind_panel(shared)
            with gr.Tab("Leaderboard", id="compare-board"):
                board = create_leaderboard_panel(ctx)
            with gr.Tab("Rank (RLHF)", id="compare-rank"):
                create_ranking_panel(shared)
            with gr.Tab("Batch A/B", id="compare-batch"):
                batch = create_batch_panel(shared)
            with gr.Tab("Export & train", id="compare-loop"):
                create_loop_panel(ctx, named["contenders"])

    def refresh_pickers(*languages: str | None) -> list[Any]:
        """Every picker offers the current contenders, narrowed by its panel's Language (none given: every one)."""
        return shared.refreshed_pickers(*languages)

    refresh.click(refresh_pickers, shared.languages, shared.pickers, api_visibility="private")
    for event in (blind["vote_event"], batch["vote_event"]):
        event.then(board["show"], board["inputs"], board["outputs"], api_visibility="private")
    return {
        "refresh_fn": refresh_pickers,
        "pickers": shared.pickers,
        "board": board,
        "modes": modes,
        "batch_sides": batch["sides"],  # side A, side B, prompts (the Adapter Manager's "Batch A/B in Compare")
    }
