"""The lineage graph of a dataset: its versions, where each came from, what was made from it, and the jobs that
used it.

Edges come from what is stored, never inferred: a version's ``parent_version_id`` (the version it was edited,
curated or augmented from within the same dataset), its ``lineage["source"]["version_id"]`` (a curation or
augmentation run that wrote into another dataset), and jobs whose config names a version (by number or content
hash, as ``studio.monitoring.disk`` counts references). One lane per dataset, jobs in a lane of their own; time
runs left to right.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlmodel import col, select

from studio.db.tables import Dataset, DatasetVersion, Job

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from studio.datasets.store import DatasetStore

#: steps shown on an edge's hover, at most
_EDGE_STEPS = 6


@dataclass(frozen=True)
class LineageNode:
    """A dataset version (``kind="version"``) or a job that read one (``kind="job"``)."""

    id: str
    kind: str
    label: str
    lane: str  # the dataset's name, or "jobs"
    order: float  # creation time (POSIX seconds): the x position
    detail: str = ""


@dataclass(frozen=True)
class LineageEdge:
    """``parent`` -> ``child`` with what made the child (``upload``, ``curate: clean, dedupe`` ...)."""

    parent: str
    child: str
    label: str


@dataclass
class LineageGraph:
    """Nodes and edges around one dataset."""

    dataset: str
    nodes: list[LineageNode] = field(default_factory=list)
    edges: list[LineageEdge] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the UI's JSON view and the API)."""
        return {
            "dataset": self.dataset,
            "nodes": [vars(n) for n in self.nodes],
            "edges": [vars(e) for e in self.edges],
        }


def _source_id(version: DatasetVersion) -> str | None:
    source = (version.lineage or {}).get("source")
    return source.get("version_id") if isinstance(source, dict) else None


def _how(version: DatasetVersion) -> str:
    """What made a version, for its incoming edge: the source and, for pipelines, their steps."""
    lineage = version.lineage or {}
    steps = lineage.get("steps") or (lineage.get("pipeline") or {}).get("steps") or []
    names = [s.get("step", "?") for s in steps if isinstance(s, dict)]
    if version.source == "augment":
        mode = lineage.get("mode") or ""
        model = lineage.get("model") or ""
        return f"augment {mode} with {model}".replace("  ", " ").strip()
    if names:
        more = f" +{len(names) - _EDGE_STEPS}" if len(names) > _EDGE_STEPS else ""
        return f"{version.source}: {', '.join(names[:_EDGE_STEPS])}{more}"
    return version.source


def dataset_lineage(store: DatasetStore, name: str) -> LineageGraph:
    """The lineage graph around dataset ``name`` (``NotFoundError`` when the current user cannot see it): all its
    versions, the versions in other datasets they came from or were made into, and the jobs that used them."""
    dataset = store.get(name)  # visibility and the not-found message
    with store.db.session() as s:
        datasets = {d.id: d for d in s.exec(select(Dataset)).all()}
        everything = list(s.exec(select(DatasetVersion).order_by(col(DatasetVersion.created_at))).all())
        jobs = list(s.exec(select(Job).order_by(col(Job.created_at))).all())
    by_id = {v.id: v for v in everything}
    keep = {v.id for v in everything if v.dataset_id == dataset.id}
    # follow sources backwards and derived versions forwards until nothing new joins
    grew = True
    while grew:
        grew = False
        for v in everything:
            src = _source_id(v) or v.parent_version_id
            if v.id in keep and src in by_id and src not in keep:
                keep.add(src)
                grew = True
            if v.id not in keep and src in keep:
                keep.add(v.id)
                grew = True
    graph = LineageGraph(dataset=dataset.name)
    for v in everything:
        if v.id not in keep:
            continue
        owner = datasets.get(v.dataset_id)
        lane = owner.name if owner is not None else "?"
        graph.nodes.append(
            LineageNode(
                id=v.id,
                kind="version",
                label=f"{lane} v{v.number}",
                lane=lane,
                order=v.created_at.timestamp(),
                detail=f"{v.num_examples} rows · {v.source} · {v.created_at:%Y-%m-%d %H:%M}",
            )
        )
        for parent in {p for p in (v.parent_version_id, _source_id(v)) if p in keep}:
            graph.edges.append(LineageEdge(parent=parent, child=v.id, label=_how(v)))
    graph.edges.extend(_job_edges(graph, jobs, [by_id[i] for i in keep], datasets))
    return graph


def _job_edges(
    graph: LineageGraph, jobs: Iterable[Job], versions: list[DatasetVersion], datasets: dict[str, Dataset]
) -> list[LineageEdge]:
    """Job nodes (added to ``graph``) and the edges from the version each one read."""
    edges = []
    for job in jobs:
        cfg = job.config or {}
        for v in versions:
            owner = datasets.get(v.dataset_id)
            if owner is None or cfg.get("dataset") != owner.name:
                continue
            if cfg.get("dataset_hash") == v.content_hash or cfg.get("dataset_version") == v.number:
                graph.nodes.append(
                    LineageNode(
                        id=job.id,
                        kind="job",
                        label=f"{job.kind} {job.name or job.id[:8]}",
                        lane="jobs",
                        order=job.created_at.timestamp(),
                        detail=f"job {job.id} · {job.state}",
                    )
                )
                edges.append(LineageEdge(parent=v.id, child=job.id, label=job.kind))
                break
    return edges


def lineage_figure(graph: LineageGraph) -> go.Figure:
    """The graph drawn with plotly: one lane per dataset (this one on top), jobs at the bottom, arrows from a
    version to what was made from it; hovering a node or an edge's midpoint says what it is."""
    import plotly.graph_objects as go

    lanes = [graph.dataset, *sorted({n.lane for n in graph.nodes} - {graph.dataset, "jobs"})]
    if any(n.kind == "job" for n in graph.nodes):
        lanes.append("jobs")
    y_of = {lane: -i for i, lane in enumerate(lanes)}
    ordered = sorted(graph.nodes, key=lambda n: n.order)
    x_of = {n.id: i for i, n in enumerate(ordered)}  # rank, not time: close versions stay apart
    pos = {n.id: (x_of[n.id], y_of[n.lane]) for n in graph.nodes}
    fig = go.Figure()
    mid_x, mid_y, mid_text = [], [], []
    for edge in graph.edges:
        (x0, y0), (x1, y1) = pos[edge.parent], pos[edge.child]
        fig.add_annotation(
            x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y",
            showarrow=True, arrowhead=2, arrowsize=1.2, arrowwidth=1.5, standoff=9, startstandoff=9,
            arrowcolor="#888",
        )  # fmt: skip
        mid_x.append((x0 + x1) / 2)
        mid_y.append((y0 + y1) / 2)
        mid_text.append(edge.label)
    fig.add_trace(
        go.Scatter(x=mid_x, y=mid_y, mode="markers", marker={"size": 6, "color": "#bbb"}, hovertext=mid_text,
                   hoverinfo="text", name="how")
    )  # fmt: skip
    for kind, symbol in (("version", "circle"), ("job", "square")):
        nodes = [n for n in graph.nodes if n.kind == kind]
        if not nodes:
            continue
        fig.add_trace(
            go.Scatter(
                x=[pos[n.id][0] for n in nodes],
                y=[pos[n.id][1] for n in nodes],
                mode="markers+text",
                marker={"size": 16, "symbol": symbol},
                text=[n.label for n in nodes],
                textposition="top center",
                hovertext=[f"{n.label}<br>{n.detail}" for n in nodes],
                hoverinfo="text",
                name="versions" if kind == "version" else "jobs",
            )
        )
    fig.update_layout(
        title=f"Lineage of {graph.dataset}",
        showlegend=False,
        height=140 + 90 * len(lanes),
        margin={"l": 110, "r": 20, "t": 50, "b": 20},
        xaxis={"visible": False, "range": [-0.7, max(len(ordered), 1) - 0.3]},
        yaxis={
            "tickvals": [y_of[lane] for lane in lanes],
            "ticktext": lanes,
            "range": [-len(lanes) + 0.4, 0.6],
            "showgrid": False,
            "zeroline": False,
        },
    )
    return fig
