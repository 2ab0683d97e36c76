"""Playground "Token view & attention" panel: the last reply's tokens coloured by probability with a log
probability chart, and its attention maps per layer and head. Wiring only: ``studio.playground.panels``."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from components.playground.shared import PlaygroundShared
from studio.playground.attention import AttentionMaps
from studio.playground.panels import attention_view_figure, reply_attention, reply_token_view
from studio.playground.session import PlaygroundSession

# Attention maps of one reply can take tens of MB; a session that stops using them lets them go.
ATTENTION_TTL_S = 3600


def create_analysis_panel(shared: PlaygroundShared) -> dict[str, Any]:
    ctx = shared.ctx
    gr.Markdown(
        "Analyses the **last reply** of this session (Chat or Prompt): every token coloured by the probability the "
        "model gave it, and what each token attended to."
    )
    token_btn = gr.Button("Analyse last reply", variant="primary", elem_id="playground-token-view-btn")
    token_html = gr.HTML(label="Tokens", elem_id="playground-token-view")
    logprob_plot = gr.Plot(label="Log probability per token", elem_id="playground-logprob-plot")

    with gr.Accordion("Attention maps", open=True, elem_id="playground-attention-box"):
        gr.Markdown(
            "One forward pass over prompt + reply with eager attention on the loaded model (transformers engine "
            "only). Colours are on a log scale (0.001 to 1); the middle layer is shown first. Dashed lines mark "
            "where the reply starts."
        )
        maps_state = gr.State(None, time_to_live=ATTENTION_TTL_S)
        with gr.Row():
            attention_btn = gr.Button("Compute attention", elem_id="playground-attention-btn", scale=1)
            layer = gr.Slider(0, 1, value=0, step=1, label="Layer", elem_id="playground-attention-layer", scale=2)
            head = gr.Slider(
                0, 1, value=0, step=1, label="Head", interactive=False, elem_id="playground-attention-head", scale=2
            )
            # the average over heads shows a layer's pattern at once; a single head may look at one token only
            average = gr.Checkbox(
                value=True, label="Average over heads", elem_id="playground-attention-average", scale=1
            )
        attention_md = gr.Markdown(elem_id="playground-attention-summary")
        attention_plot = gr.Plot(label="Attention", elem_id="playground-attention-plot")

    @handle_errors
    def analyse(session: PlaygroundSession | None) -> tuple[str, Any]:
        """The last reply's tokens (coloured by probability, top-5 alternatives on hover) and a chart of each
        token's log probability."""
        view = reply_token_view(session)
        return view.html, view.figure

    @handle_errors
    def compute(session: PlaygroundSession | None, average_heads: bool) -> tuple[AttentionMaps, Any, Any, Any, str]:
        """Attention maps of the last reply; shows the middle layer (head 0, or the average over heads)."""
        view = reply_attention(ctx.engines, session, average_heads=average_heads)
        return (
            view.maps,
            gr.Slider(maximum=max(1, view.layers - 1), value=view.layer),
            gr.Slider(maximum=max(1, view.heads - 1), value=0, interactive=not average_heads),
            view.figure,
            view.summary,
        )

    @handle_errors
    def redraw(
        maps: AttentionMaps | None, layer_value: float, head_value: float, average_heads: bool
    ) -> tuple[Any, Any]:
        """The heat map for the chosen layer and head (or the average over heads)."""
        figure = attention_view_figure(maps, layer_value, head_value, average_heads=average_heads)
        return figure, gr.Slider(interactive=not average_heads)

    token_btn.click(analyse, [shared.session], [token_html, logprob_plot], api_name="playground_token_view")
    attention_btn.click(
        compute,
        [shared.session, average],
        [maps_state, layer, head, attention_plot, attention_md],
        api_name="playground_attention",
    )
    for control in (layer, head, average):
        control.change(redraw, [maps_state, layer, head, average], [attention_plot, head], api_visibility="private")

    return {
        "token_button": token_btn,
        "token_view": token_html,
        "logprob_plot": logprob_plot,
        "attention_button": attention_btn,
        "attention_plot": attention_plot,
        "layer": layer,
        "head": head,
        "average": average,
        "attention_state": maps_state,
    }
