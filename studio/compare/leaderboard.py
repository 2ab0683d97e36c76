"""The leaderboard: Bradley–Terry ratings with bootstrap intervals, online Elo, battle counts and the win-rate
matrix (a plotly heat map), from voted battles, optionally filtered by use case or tag.

The leaderboard is the team's: it counts every user's votes, while each user sees and votes on only their own
battles (``studio.compare.battles``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select

from studio.compare.defaults import LeaderboardConfig, compare_defaults
from studio.compare.ratings import Outcome, bootstrap_ratings, elo_ratings, win_rate_matrix
from studio.compare.tables import Battle
from studio.db.engine import Database

SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
COLUMNS = ["Rank", "Model", "Rating (BT)", "95% CI", "Elo", "Battles", "Wins", "Losses", "Ties", "Win rate"]


def voted_battles(db: Database, use_case: str | None = None, tag: str | None = None) -> list[Battle]:
    """Voted battles in time order, every user's (the leaderboard and the preference export are the team's);
    ``use_case``/``tag`` keep only battles labelled so (empty = all)."""
    with db.session() as session:
        stmt = select(Battle).where(col(Battle.winner).is_not(None))
        if use_case:
            stmt = stmt.where(col(Battle.use_case) == use_case)
        rows = list(session.exec(stmt.order_by(col(Battle.voted_at), col(Battle.created_at))).all())
    return [b for b in rows if not tag or tag in (b.tags or [])]


def outcomes_of(battles: Sequence[Battle]) -> list[Outcome]:
    """Battles as rating outcomes (both-bad counts as a tie; a contender against itself is left out)."""
    return [
        Outcome(b.model_a, b.model_b, SCORE[b.winner]) for b in battles if b.winner in SCORE and b.model_a != b.model_b
    ]


@dataclass(frozen=True)
class LeaderboardRow:
    """One contender on the leaderboard: its ratings and its record."""

    rank: int
    name: str
    rating: float
    ci_low: float | None
    ci_high: float | None
    elo: float
    battles: int
    wins: int
    losses: int
    ties: int
    ci_note: str | None = None

    @property
    def interval(self) -> str:
        """``"1093 – 1170"``, or why there is none (``"n too small (1 battle)"``), or ``"–"``."""
        if self.ci_low is not None and self.ci_high is not None:
            return f"{self.ci_low:.0f} – {self.ci_high:.0f}"
        if self.ci_note:
            return f"{self.ci_note} ({self.battles} battle{'' if self.battles == 1 else 's'})"
        return "–"

    @property
    def win_rate(self) -> float:
        """Share of battles won, ties counting half."""
        return (self.wins + self.ties / 2) / self.battles if self.battles else 0.0

    def cells(self) -> list[Any]:
        """The row as the table shows it."""
        return [
            self.rank, self.name, round(self.rating, 1), self.interval, round(self.elo, 1), self.battles, self.wins,
            self.losses, self.ties, f"{100 * self.win_rate:.0f}%",
        ]  # fmt: skip


@dataclass(frozen=True)
class Leaderboard:
    """The whole leaderboard: rows best first, the win-rate matrix in the same order, the filters used."""

    rows: list[LeaderboardRow]
    matrix: list[list[float | None]]  # matrix[i][j]: rows[i]'s win rate against rows[j]
    battles: int
    use_case: str | None = None
    tag: str | None = None

    @property
    def names(self) -> list[str]:
        """Contender names, best first."""
        return [r.name for r in self.rows]

    def table(self) -> list[list[Any]]:
        """The rows as the table shows them."""
        return [r.cells() for r in self.rows]

    def summary(self) -> str:
        """ "N voted battle(s) between M contender(s) (filters)"."""
        parts = [f"use case {self.use_case}" if self.use_case else "", f"tag {self.tag}" if self.tag else ""]
        where = " · ".join(p for p in parts if p)
        head = f"{self.battles} voted battle(s) between {len(self.rows)} contender(s)"
        return head + (f" ({where})" if where else "")


def compute_leaderboard(
    db: Database, use_case: str | None = None, tag: str | None = None, config: LeaderboardConfig | None = None
) -> Leaderboard:
    """Ratings, counts and the win-rate matrix of the voted battles (see :mod:`studio.compare.ratings`)."""
    cfg = config or compare_defaults().leaderboard
    battles = voted_battles(db, use_case, tag)
    outcomes = outcomes_of(battles)
    ratings = bootstrap_ratings(
        outcomes, rounds=cfg.bootstrap_rounds, confidence=cfg.confidence, seed=cfg.seed, prior=cfg.bt_prior,
        base=cfg.elo_base, min_battles=cfg.min_battles,
    )  # fmt: skip
    elo = elo_ratings(outcomes, k=cfg.elo_k, base=cfg.elo_base)
    counts: dict[str, list[int]] = {}
    for o in outcomes:
        for name, score in ((o.a, o.score_a), (o.b, 1.0 - o.score_a)):
            c = counts.setdefault(name, [0, 0, 0, 0])
            c[0] += 1
            c[1 if score == 1.0 else 2 if score == 0.0 else 3] += 1
    rows = []
    for i, r in enumerate(ratings):
        played, wins, losses, ties = counts[r.name]
        rows.append(
            LeaderboardRow(
                i + 1, r.name, r.rating, r.ci_low, r.ci_high, elo[r.name], played, wins, losses, ties, r.ci_note
            )
        )
    return Leaderboard(rows, win_rate_matrix(outcomes, [r.name for r in rows]), len(outcomes), use_case, tag)


def leaderboard_figure(board: Leaderboard) -> Any:
    """The win-rate matrix as a plotly heat map (row model's win rate against the column model)."""
    import plotly.graph_objects as go

    names = board.names
    z = [[None if v is None else round(100 * v, 1) for v in row] for row in board.matrix]
    text = [["" if v is None else f"{v:.0f}%" for v in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            text=text,
            texttemplate="%{text}",
            zmin=0,
            zmax=100,
            colorscale="RdBu",
            hovertemplate="%{y} beat %{x} in %{z}% of their battles<extra></extra>",
            colorbar={"title": "win %"},
        )
    )
    fig.update_layout(
        title="Win rate (row against column)",
        xaxis={"title": "opponent"},
        yaxis={"title": "model", "autorange": "reversed"},
        height=max(300, 80 + 60 * len(names)),
        margin={"l": 40, "r": 20, "t": 50, "b": 40},
    )
    return fig


def battle_labels(db: Database) -> tuple[list[str], list[str]]:
    """The use cases and tags that appear on battles (for the leaderboard's filters)."""
    with db.session() as session:
        rows = session.exec(select(Battle.use_case, Battle.tags)).all()
    use_cases = sorted({u for u, _t in rows if u})
    tags = sorted({t for _u, ts in rows for t in (ts or [])})
    return use_cases, tags
