"""Votes and rankings → a preference dataset version (``{"prompt": [...], "chosen", "rejected"}`` pairs).

* A voted battle with a winner gives one pair; the prompt is the chat the winning side answered. Ties and
  "both bad" say nothing about which reply is better and are left out.
* A ranking annotation is expanded into every pair it orders: an order of N candidates gives N(N-1)/2 pairs
  (each better-ranked candidate chosen over each worse-ranked one); scores give a pair for each two
  candidates with different scores (equal scores are a tie and are left out).
* Pairs whose two replies are the same text (or empty) are left out.

The version's lineage lists the ids of the battles and the ranking annotations it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlmodel import col, select

from studio.compare.leaderboard import voted_battles
from studio.compare.tables import RankingAnnotation, RankingItem
from studio.datasets.store import DatasetStore
from studio.db.engine import Database
from studio.errors import ValidationError


@dataclass
class PreferencePairs:
    """The pairs an export would write, and where they came from."""

    examples: list[dict[str, Any]] = field(default_factory=list)
    battle_ids: list[str] = field(default_factory=list)
    annotation_ids: list[int] = field(default_factory=list)
    skipped_ties: int = 0
    skipped_same: int = 0

    def add(self, prompt: list[dict[str, Any]], chosen: str, rejected: str) -> bool:
        """Add one pair (False, and counted as skipped, when the replies are empty or the same)."""
        if not chosen.strip() or not rejected.strip() or chosen.strip() == rejected.strip():
            self.skipped_same += 1
            return False
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
        self.examples.append({"prompt": messages, "chosen": chosen, "rejected": rejected})
        return True


def _ranked_pairs(candidates: list[dict[str, Any]], ann: RankingAnnotation) -> list[tuple[int, int]]:
    """(better, worse) candidate index pairs of one annotation."""
    if ann.order is not None:
        order = list(ann.order)
        return [(order[p], order[q]) for p in range(len(order)) for q in range(p + 1, len(order))]
    scores = list(ann.scores or [])
    return [
        (i, j) if scores[i] > scores[j] else (j, i)
        for i in range(len(scores))
        for j in range(i + 1, len(scores))
        if scores[i] != scores[j]
    ]


def preference_pairs(db: Database, use_case: str | None = None, tag: str | None = None) -> PreferencePairs:
    """Every preference pair in the votes and rankings (filtered by use case / tag when given)."""
    out = PreferencePairs()
    for battle in voted_battles(db, use_case, tag):
        if battle.winner not in ("a", "b"):
            out.skipped_ties += 1
            continue
        a_won = battle.winner == "a"
        prompt = battle.messages_a if a_won else battle.messages_b
        chosen, rejected = (battle.reply_a, battle.reply_b) if a_won else (battle.reply_b, battle.reply_a)
        if out.add(prompt, chosen, rejected):
            out.battle_ids.append(battle.id)
    with db.session() as session:
        rows = session.exec(
            select(RankingAnnotation, RankingItem)
            .join(RankingItem, col(RankingItem.id) == col(RankingAnnotation.item_id))
            .order_by(col(RankingAnnotation.created_at))
        ).all()
    for ann, item in rows:
        if (use_case and item.use_case != use_case) or (tag and tag not in (item.tags or [])):
            continue
        added = False
        for better, worse in _ranked_pairs(item.candidates, ann):
            added |= out.add(item.messages, item.candidates[better]["text"], item.candidates[worse]["text"])
        if added and ann.id is not None:
            out.annotation_ids.append(ann.id)
    return out


@dataclass(frozen=True)
class ExportResult:
    """The dataset version an export wrote (or found: identical content is not stored twice)."""

    dataset: str
    version: int
    version_id: str
    created: bool
    pairs: int
    distinct: int  # pairs stored (the same pair from two sources is stored once)
    battles: int
    annotations: int
    skipped_ties: int
    skipped_same: int

    def summary(self) -> str:
        """One line for people: the version written and what was left out."""
        state = "new version" if self.created else "same content as existing version"
        return (
            f"dataset **{self.dataset}** v{self.version} ({state}): {self.pairs} preference pair(s) "
            f"({self.distinct} distinct) from "
            f"{self.battles} battle(s) and {self.annotations} ranking(s); left out {self.skipped_ties} tie/both-bad "
            f"vote(s) and {self.skipped_same} pair(s) with identical or empty replies"
        )


def export_preferences(
    store: DatasetStore,
    db: Database,
    name: str,
    *,
    use_case: str | None = None,
    tag: str | None = None,
    description: str = "",
) -> ExportResult:
    """Write the preference pairs as a new version of dataset ``name`` (source ``feedback``), with lineage back
    to the battles and ranking annotations. ``ValidationError`` when there is nothing to export yet."""
    pairs = preference_pairs(db, use_case, tag)
    if not pairs.examples:
        raise ValidationError(
            "no preference pairs yet: vote A or B in some battles, or rank some candidates, then export",
            param="votes",
        )
    lineage = {
        "source": "compare",
        "battle_ids": pairs.battle_ids,
        "ranking_annotation_ids": pairs.annotation_ids,
        "filters": {"use_case": use_case, "tag": tag},
    }
    result = store.create_version(
        name, pairs.examples, source="feedback", lineage=lineage, kind="preference",
        description=description or "preference pairs from Compare votes and rankings",
    )  # fmt: skip
    return ExportResult(
        dataset=result.dataset.name,
        version=result.version.number,
        version_id=result.version.id,
        created=result.created,
        pairs=len(pairs.examples),
        distinct=result.version.num_examples,
        battles=len(pairs.battle_ids),
        annotations=len(pairs.annotation_ids),
        skipped_ties=pairs.skipped_ties,
        skipped_same=pairs.skipped_same,
    )
