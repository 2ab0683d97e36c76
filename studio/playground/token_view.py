"""Token-level view of a reply: every generated token coloured by the probability the model gave it, with
its log probability and top alternatives on hover, in a table below, and as a plotly chart per position.

Everything is rendered from the :class:`~studio.inference.base.TokenEvent`s an engine streamed (which
carry ``logprob`` and ``top_logprobs``), so the view needs no model and works for any backend that
reports log probabilities. The HTML needs no JavaScript: hovering a token shows the browser's own tooltip
(``title``), and clicking it jumps to its row in the details table.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from studio.inference.base import TokenEvent, TopLogprob

if TYPE_CHECKING:
    import plotly.graph_objects as go

# Characters that would be invisible (or would break the line layout) shown as markers instead.
_WHITESPACE_MARKERS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
_TOP_N = 5

_CSS = """
.wt-token-view { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; line-height: 1.9; }
.wt-token-view .wt-tokens a.wt-tok { color: #111; text-decoration: none; padding: 1px 1px; margin: 0 1px;
  border-radius: 3px; border: 1px solid rgba(0, 0, 0, 0.12); white-space: pre; }
.wt-token-view .wt-tokens a.wt-tok:hover { outline: 2px solid #333; }
.wt-token-view .wt-ws { opacity: 0.45; }
.wt-token-view .wt-legend { display: flex; align-items: center; gap: 6px; font-size: 0.85em; margin: 4px 0 8px; }
.wt-token-view .wt-legend-bar { width: 180px; height: 12px; border-radius: 3px; border: 1px solid #999; }
.wt-token-view table { border-collapse: collapse; font-size: 0.85em; }
.wt-token-view td, .wt-token-view th { padding: 1px 8px; border-bottom: 1px solid rgba(128, 128, 128, 0.25);
  text-align: left; white-space: pre; }
.wt-token-view tr:target { outline: 2px solid #333; }
.wt-token-view .token-details { max-width: 100%; overflow-x: auto; }
.wt-token-view td:last-child { white-space: normal; }
"""


def probability(logprob: float) -> float:
    """``exp(logprob)`` clamped to [0, 1]; a missing or non-finite logprob counts as probability 0."""
    if math.isnan(logprob) or logprob == -math.inf:
        return 0.0
    return min(1.0, max(0.0, math.exp(min(logprob, 0.0))))


def probability_colour(p: float) -> str:
    """Background colour for probability ``p``: red (0) → yellow (0.5) → green (1), light enough for dark
    text on top."""
    hue = 120.0 * min(1.0, max(0.0, p))
    return f"hsl({hue:.0f}, 80%, 78%)"


def visible_whitespace(text: str) -> str:
    """``text`` with spaces, tabs and newlines replaced by visible markers (␣ ⇥ ↵); an empty token shows
    as ∅ so it can still be seen and hovered."""
    if not text:
        return "∅"
    return "".join(_WHITESPACE_MARKERS.get(ch, ch) for ch in text)


def _percent(p: float) -> str:
    return f"{p * 100:.1f}%" if p >= 0.001 else f"{p * 100:.2g}%"


def _logprob_text(logprob: float) -> str:
    return f"{logprob:.3f}" if math.isfinite(logprob) else str(logprob)


def _alternatives(event: TokenEvent) -> list[TopLogprob]:
    return list(event.top_logprobs[:_TOP_N])


def _tooltip(event: TokenEvent) -> str:
    p = probability(event.logprob)
    lines = [f"{visible_whitespace(event.token)}  ·  logprob {_logprob_text(event.logprob)}  ·  p {_percent(p)}"]
    alts = _alternatives(event)
    if alts:
        lines.append("top alternatives:")
        for alt in alts:
            mark = " ◀" if alt.token_id == event.token_id else ""
            lines.append(f"  {visible_whitespace(alt.token)}  {_percent(probability(alt.logprob))}{mark}")
    return "\n".join(lines)


def _data_attribute(event: TokenEvent) -> str:
    info = {
        "token": event.token,
        "token_id": event.token_id,
        "logprob": event.logprob if math.isfinite(event.logprob) else None,
        "probability": round(probability(event.logprob), 6),
        "top": [
            {"token": a.token, "token_id": a.token_id, "logprob": a.logprob, "probability": probability(a.logprob)}
            for a in _alternatives(event)
        ],
    }
    return json.dumps(info, ensure_ascii=False)


def _token_html(text: str) -> str:
    """Escaped token text with whitespace markers dimmed; a newline also breaks the line."""
    if not text:
        return '<span class="wt-ws">∅</span>'
    out: list[str] = []
    for ch in text:
        marker = _WHITESPACE_MARKERS.get(ch)
        if marker is None:
            out.append(html.escape(ch))
        else:
            out.append(f'<span class="wt-ws">{marker}</span>')
    return "".join(out)


def _legend() -> str:
    stops = ", ".join(probability_colour(p / 10) for p in range(11))
    return (
        '<div class="wt-legend">probability <span>0%</span>'
        f'<span class="wt-legend-bar" style="background: linear-gradient(to right, {stops})"></span>'
        "<span>100%</span> · hover a token for its alternatives, click it for its row below</div>"
    )


def token_view_html(tokens: Sequence[TokenEvent], *, id_prefix: str = "wt-tok") -> str:
    """HTML for a reply's tokens, each on a background coloured by its probability ``exp(logprob)``.

    Each token is a link carrying a ``title`` tooltip (logprob, probability, top-5 alternatives) and a
    ``data-token`` attribute with the same facts as JSON; clicking it jumps to its row in the
    ``token-details`` table below, which lists every position with its top-5 alternatives (folded at first: a long
    reply's table made the page thousands of pixels tall; the browser unfolds it for a clicked token). Whitespace is
    shown as ␣ / ↵ / ⇥ markers and all token text is HTML-escaped. ``id_prefix`` keeps element ids unique
    when several views share a page.
    """
    style = f"<style>{_CSS}</style>"
    if not tokens:
        return f'{style}<div class="wt-token-view wt-empty"><em>No tokens yet.</em></div>'
    prefix = html.escape(id_prefix, quote=True)
    spans: list[str] = []
    rows: list[str] = []
    for i, event in enumerate(tokens):
        p = probability(event.logprob)
        row_id = f"{prefix}-{i}"
        spans.append(
            f'<a class="wt-tok" href="#{row_id}" style="background:{probability_colour(p)}"'
            f' title="{html.escape(_tooltip(event), quote=True)}"'
            f' data-position="{i}" data-logprob="{html.escape(_logprob_text(event.logprob), quote=True)}"'
            f' data-probability="{p:.6f}" data-token="{html.escape(_data_attribute(event), quote=True)}">'
            f"{_token_html(event.token)}</a>"
        )
        if "\n" in event.token:
            spans.append("<br>")
        alts = " ".join(
            f'<span style="background:{probability_colour(probability(a.logprob))}">'
            f"{_token_html(a.token)}</span> {_percent(probability(a.logprob))}"
            for a in _alternatives(event)
        )
        rows.append(
            f'<tr id="{row_id}"><td>{i}</td>'
            f'<td><span style="background:{probability_colour(p)}">{_token_html(event.token)}</span></td>'
            f"<td>{_percent(p)}</td><td>{html.escape(_logprob_text(event.logprob))}</td><td>{alts or '–'}</td></tr>"
        )
    return (
        f'{style}<div class="wt-token-view">{_legend()}'
        f'<div class="wt-tokens">{"".join(spans)}</div>'
        '<div class="token-details"><details><summary>Details per token (top-5 alternatives)</summary>'
        "<table><thead><tr><th>#</th><th>token</th><th>p</th><th>logprob</th><th>top alternatives</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table></details></div></div>"
    )


def _hover(event: TokenEvent, position: int) -> str:
    p = probability(event.logprob)
    lines = [
        f"#{position} <b>{html.escape(visible_whitespace(event.token))}</b>",
        f"logprob {_logprob_text(event.logprob)} · p {_percent(p)}",
    ]
    for alt in _alternatives(event):
        lines.append(f"{html.escape(visible_whitespace(alt.token))}  {_percent(probability(alt.logprob))}")
    return "<br>".join(lines)


def logprob_figure(tokens: Sequence[TokenEvent]) -> go.Figure:
    """A plotly line chart of each generated token's log probability by position (hover: the token and its
    top alternatives), plus a dashed trace of the most likely token's log probability where the engine
    reported alternatives. No tokens → an empty chart that says so."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(
        xaxis_title="position",
        yaxis_title="log probability",
        margin={"l": 60, "r": 20, "t": 40, "b": 50},
        height=320,
        hovermode="closest",
        legend={"orientation": "h", "y": 1.12},
    )
    if not tokens:
        fig.add_annotation(text="no tokens yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        return fig
    positions = list(range(len(tokens)))
    logprobs = [t.logprob if math.isfinite(t.logprob) else None for t in tokens]
    fig.add_trace(
        go.Scatter(
            x=positions,
            y=logprobs,
            mode="lines+markers",
            name="chosen token",
            text=[_hover(t, i) for i, t in enumerate(tokens)],
            hovertemplate="%{text}<extra></extra>",
            marker={
                "size": 8,
                "color": [probability_colour(probability(t.logprob)) for t in tokens],
                "line": {"width": 1, "color": "#444"},
            },
            line={"color": "#888"},
        )
    )
    if any(t.top_logprobs for t in tokens):
        fig.add_trace(
            go.Scatter(
                x=positions,
                y=[t.top_logprobs[0].logprob if t.top_logprobs else None for t in tokens],
                mode="lines",
                name="most likely token",
                text=[
                    html.escape(visible_whitespace(t.top_logprobs[0].token)) if t.top_logprobs else "" for t in tokens
                ],
                hovertemplate="most likely: %{text} (%{y:.3f})<extra></extra>",
                line={"dash": "dash", "color": "#2a7"},
            )
        )
    return fig
