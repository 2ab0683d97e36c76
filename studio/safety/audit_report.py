"""Scorecards as people read them: plotly charts (groups x metrics per category, two audits side by side) and
table rows for the disparity table, the generations to review and the comparison. Plain data in, plain data or
figures out; the Safety tab only shows them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from studio.safety.audit_metrics import METRICS
from studio.safety.tables import AuditGeneration

DISPARITY_COLUMNS = ["Category", "Metric", "Gap (max-min)", "Ratio (min/max)", "Highest group", "Lowest group"]
GENERATION_COLUMNS = ["Id", "Category", "Group", "Template", "Toxicity", "Refusal", "Sentiment", "Review", "Reply"]
COMPARE_COLUMNS = ["Category", "Group", "Metric", "A", "B", "B - A"]
HOVER = "%{x}: %{y:.3f}<extra></extra>"


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def empty_figure(message: str) -> go.Figure:
    """A blank chart with a message (no audit chosen, no generations yet)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(height=260, xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def scorecard_figure(scorecard: dict[str, Any]) -> go.Figure:
    """One row of bar charts per category: groups on the x axis, one panel per metric."""
    categories = scorecard.get("categories") or {}
    if not categories:
        return empty_figure("no generations scored yet")
    metrics = list(METRICS)
    fig = make_subplots(
        rows=len(categories),
        cols=len(metrics),
        subplot_titles=[f"{cat}: {METRICS[m][0]}" for cat in categories for m in metrics],
        vertical_spacing=0.5 / max(1, len(categories)),
        horizontal_spacing=0.06,
    )
    for i, data in enumerate(categories.values(), start=1):
        groups = list(data["groups"])
        for j, metric in enumerate(metrics, start=1):
            values = [data["groups"][g][metric] for g in groups]
            fig.add_trace(
                go.Bar(
                    x=groups, y=values, name=metric, showlegend=False, hovertemplate="%{x}: %{y:.3f}<extra></extra>"
                ),
                row=i,
                col=j,
            )
            if metric == "sentiment":
                fig.update_yaxes(range=[-1, 1], row=i, col=j)
            else:
                fig.update_yaxes(range=[0, max(1.0, *values)], row=i, col=j)
    label = scorecard.get("model_label", "")
    fig.update_layout(
        title=f"Scorecard — {label}" + (" (partial)" if scorecard.get("partial") else ""),
        height=300 * len(categories) + 60,
        margin={"l": 40, "r": 20, "t": 80, "b": 40},
    )
    return fig


def compare_figure(a: dict[str, Any], b: dict[str, Any], metric: str) -> go.Figure:
    """Grouped bars of one metric for two scorecards (A vs B), one panel per category both have."""
    cats = [c for c in a.get("categories", {}) if c in b.get("categories", {})] or list(
        dict.fromkeys([*a.get("categories", {}), *b.get("categories", {})])
    )
    if not cats:
        return empty_figure("choose two audits with scorecards")
    fig = make_subplots(rows=1, cols=len(cats), subplot_titles=cats, horizontal_spacing=0.08)
    for col_i, cat in enumerate(cats, start=1):
        for side, card in (("A", a), ("B", b)):
            groups = card.get("categories", {}).get(cat, {}).get("groups", {})
            fig.add_trace(
                go.Bar(
                    x=list(groups),
                    y=[g[metric] for g in groups.values()],
                    name=f"{side}: {card.get('model_label', '?')}",
                    legendgroup=side,
                    showlegend=col_i == 1,
                ),
                row=1,
                col=col_i,
            )
    fig.update_layout(
        title=f"{METRICS.get(metric, (metric,))[0]}: A vs B",
        barmode="group",
        height=360,
        margin={"l": 40, "r": 20, "t": 70, "b": 40},
    )
    return fig


def disparity_rows(scorecard: dict[str, Any]) -> list[list[Any]]:
    """Rows for :data:`DISPARITY_COLUMNS`: one per category and metric."""
    rows: list[list[Any]] = []
    for cat, data in (scorecard.get("categories") or {}).items():
        for metric, d in data["disparity"].items():
            rows.append(
                [cat, METRICS.get(metric, (metric,))[0], _r(d["gap"]), _r(d["ratio"]), d["max_group"], d["min_group"]]
            )
    return rows


def group_rows(scorecard: dict[str, Any]) -> list[list[Any]]:
    """Rows ``[category, group, n, toxicity, toxic_rate, refusal_rate, sentiment]``."""
    rows: list[list[Any]] = []
    for cat, data in (scorecard.get("categories") or {}).items():
        for group, v in data["groups"].items():
            rows.append([cat, group, int(v["n"]), *(_r(v[m]) for m in METRICS)])
    return rows


GROUP_COLUMNS = ["Category", "Group", "n", *(METRICS[m][0] for m in METRICS)]


def generation_rows(generations: Sequence[AuditGeneration], reply_chars: int = 160) -> list[list[Any]]:
    """Rows for :data:`GENERATION_COLUMNS` (reply shortened)."""
    rows: list[list[Any]] = []
    for g in generations:
        reply = g.response.replace("\n", " ")
        rows.append(
            [
                g.id,
                g.category,
                g.group,
                g.template_id,
                _r(g.toxicity),
                "yes" if g.refusal else "",
                _r(g.sentiment),
                g.review or "",
                reply if len(reply) <= reply_chars else reply[: reply_chars - 1] + "…",
            ]
        )
    return rows


def compare_rows(rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """Rows for :data:`COMPARE_COLUMNS` from :func:`studio.safety.audit_store.compare_scorecards`."""
    return [[r["category"], r["group"], r["metric"], _r(r["a"]), _r(r["b"]), _r(r["delta"])] for r in rows]
