"""The leaderboard panel: ratings with intervals, battle counts, the win-rate heat map (wiring only)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from studio.compare.defaults import compare_defaults
from studio.compare.leaderboard import COLUMNS, battle_labels, compute_leaderboard, leaderboard_figure
from studio.context import AppContext

ALL = "(all)"


def create_leaderboard_panel(ctx: AppContext) -> dict[str, Any]:
    gr.Markdown(
        "Ratings are **Bradley–Terry** maximum-likelihood strengths on the Elo scale (average 1000; +400 = 10:1 "
        "odds) with 95% **bootstrap** intervals (**n too small** where a contender has fewer than "
        f"{compare_defaults().leaderboard.min_battles} battles or "
        "its votes never disagree: resampling them shows no spread, which is not certainty); online **Elo** "
        "(K=32) is shown beside them. Ties and 'both bad' count half a win for each side."
    )
    with gr.Row():
        use_case = gr.Dropdown(
            [ALL], value=ALL, label="Use case", allow_custom_value=True, elem_id="compare-board-use-case", scale=2
        )
        tag = gr.Dropdown([ALL], value=ALL, label="Tag", allow_custom_value=True, elem_id="compare-board-tag", scale=2)
        refresh = gr.Button("Refresh", elem_id="compare-board-refresh", scale=1)
    summary = gr.Markdown("", elem_id="compare-board-summary")
    table = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="compare-leaderboard")
    plot = gr.Plot(label="Win-rate matrix", elem_id="compare-heatmap")

    @handle_errors
    def show(use_case_name: str | None, tag_name: str | None) -> list[Any]:
        """The leaderboard (filtered by use case / tag) and the filters' current choices."""
        uc = None if use_case_name in (None, "", ALL) else use_case_name
        tg = None if tag_name in (None, "", ALL) else tag_name
        board = compute_leaderboard(ctx.db, uc, tg)
        use_cases, tags = battle_labels(ctx.db)
        return [
            board.summary(),
            board.table(),
            leaderboard_figure(board),
            gr.update(choices=[ALL, *use_cases]),
            gr.update(choices=[ALL, *tags]),
        ]

    outputs = [summary, table, plot, use_case, tag]
    refresh.click(show, [use_case, tag], outputs, api_name="compare_leaderboard")
    use_case.change(show, [use_case, tag], outputs, api_visibility="private")
    tag.change(show, [use_case, tag], outputs, api_visibility="private")
    return {"show": show, "inputs": [use_case, tag], "outputs": outputs}
