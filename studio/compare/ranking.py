"""Ranking annotation (RLHF feedback): candidates for a prompt, annotators who order or score them, their
history and their agreement (:mod:`studio.compare.agreement` explains the measures).

Who an annotator is (issue 19): with users, the annotator is the signed-in user -- every function here that takes
an annotator name ignores it and records, reads and looks up the user's own :class:`Annotator` (named after the
user, ``user_id`` set), so no one judges or reads history under another name. The single user (no users configured,
the operator key, the CLI) types a free-text annotator name as before. Items and the agreement report are shared
by the whole team.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from studio.auth import Principal
from studio.compare.agreement import agreement_by_annotator, pairwise_preferences
from studio.compare.defaults import compare_defaults
from studio.compare.stream import ContenderSpec, start_sides
from studio.compare.tables import Annotator, RankingAnnotation, RankingItem
from studio.db.engine import Database
from studio.errors import ConflictError, GenerationError, NotFoundError, ValidationError
from studio.inference.base import ChatMessage
from studio.inference.manager import EngineManager
from studio.inference.params import SamplingParams
from studio.users.acting import current_principal


def generate_candidates(
    engines: EngineManager,
    db: Database,
    contenders: Sequence[str],
    prompt: str,
    n: int,
    params: SamplingParams,
    *,
    system: str | None = None,
    use_case: str | None = None,
    tags: Sequence[str] = (),
    owner: str | None = None,
) -> RankingItem:
    """Generate ``n`` (2-6) candidate replies to ``prompt``, cycling through ``contenders`` (one or several
    configs; with one config the candidates differ by sampling), and store them as an item to annotate."""
    limits = compare_defaults().ranking
    if not limits.min_candidates <= n <= limits.max_candidates:
        raise ValidationError(
            f"generate {limits.min_candidates} to {limits.max_candidates} candidates, not {n}", param="n"
        )
    specs = [ContenderSpec.parse(c) for c in contenders if c and c.strip()]
    if not specs:
        raise ValidationError("pick at least one model, alias or adapter to generate candidates", param="models")
    text = (prompt or "").strip()
    if not text:
        raise ValidationError("type a prompt first", param="prompt")
    messages = [ChatMessage("system", system.strip())] if system and system.strip() else []
    messages.append(ChatMessage("user", text))
    candidates: list[dict[str, Any]] = []
    for k in range(n):
        spec = specs[k % len(specs)]
        (handle,) = start_sides(engines, [spec], [messages], params, owner=owner, endpoint="compare.ranking")
        if isinstance(handle, Exception):
            raise handle
        result = handle.wait()
        candidates.append({"label": spec.label, "config": spec.to_dict(), "text": result.text})
    if all(not c["text"].strip() for c in candidates):
        raise GenerationError("every candidate came back empty")
    item = RankingItem(
        prompt=text,
        messages=[{"role": m.role, "content": m.content} for m in messages],
        candidates=candidates,
        params=params.model_dump(mode="json"),
        use_case=use_case or None,
        tags=list(tags),
    )
    with db.session() as session:
        session.add(item)
    return item


def _check_name(name: str) -> str:
    text = (name or "").strip()
    if not text:
        raise ValidationError("type your annotator name first (it identifies your judgements)", param="annotator")
    if len(text) > 100:
        raise ValidationError("an annotator name has at most 100 characters", param="annotator")
    return text


def _signed_in() -> Principal | None:
    """The signed-in user (None for the single user, the operator key, the CLI and jobs: no user behind them)."""
    principal = current_principal()
    return principal if principal is not None and principal.user_id else None


def signed_in_annotator() -> str | None:
    """The signed-in user's name, which is their annotator name (None for the single user: names are typed)."""
    user = _signed_in()
    return user.name if user is not None else None


def annotator_name(typed: str) -> str:
    """The name a judgement is recorded under: the signed-in user's (``typed`` is ignored), else ``typed``."""
    return signed_in_annotator() or _check_name(typed)


def _find_annotator(session: Session, typed: str) -> Annotator | None:
    user = _signed_in()
    if user is None:
        return session.exec(select(Annotator).where(col(Annotator.name) == _check_name(typed))).first()
    return session.exec(select(Annotator).where(col(Annotator.user_id) == user.user_id)).first()


def get_annotator(db: Database, name: str, *, create: bool = True) -> Annotator:
    """The annotator called ``name`` (created on first use unless ``create`` is False). With users it is the
    signed-in user's annotator, named after the user and linked by ``user_id``, whatever ``name`` says; an
    annotator of the user's name typed before there were users becomes the user's."""
    user = _signed_in()
    text = annotator_name(name)
    with db.session() as session:
        found = _find_annotator(session, name)
        if found is None and user is not None:
            found = session.exec(select(Annotator).where(col(Annotator.name) == text)).first()
            if found is not None and found.user_id is not None:
                raise ConflictError(  # a removed user's judgements keep their name
                    f"the annotator name {text!r} already holds another user's judgements", param="annotator"
                )
            if found is not None:
                found.user_id = user.user_id
                session.add(found)
        if found is not None:
            return found
        if not create:
            raise NotFoundError(f"no annotator called {text!r} yet", param="annotator")
        annotator = Annotator(name=text, user_id=user.user_id if user is not None else None)
        session.add(annotator)
        session.flush()
        return annotator


def get_item(db: Database, item_id: str) -> RankingItem:
    """One ranking item by id."""
    with db.session() as session:
        item = session.get(RankingItem, item_id)
    if item is None:
        raise NotFoundError(f"ranking item {item_id!r} not found", param="item_id")
    return item


def submit_annotation(
    db: Database,
    item_id: str,
    annotator: str,
    *,
    order: Sequence[int] | None = None,
    scores: Sequence[int] | None = None,
    note: str = "",
) -> RankingAnnotation:
    """Store ``annotator``'s judgement of an item: ``order`` (0-based candidate indices, best first) or
    ``scores`` (one per candidate, 1-7). A second judgement of the same item by the same person replaces it.
    With users the judgement is the signed-in user's, whatever ``annotator`` says (see :func:`get_annotator`)."""
    item = get_item(db, item_id)
    n = len(item.candidates)
    limits = compare_defaults().ranking
    if (order is None) == (scores is None):
        raise ValidationError("give either an order or scores", param="order")
    if order is not None:
        order = [int(x) for x in order]
        if sorted(order) != list(range(n)):
            raise ValidationError(
                f"the order must name each of the {n} candidates exactly once (1-{n}); got {[x + 1 for x in order]}",
                param="order",
            )
    if scores is not None:
        scores = [int(x) for x in scores]
        if len(scores) != n or not all(limits.score_min <= s <= limits.score_max for s in scores):
            raise ValidationError(
                f"give each of the {n} candidates a score from {limits.score_min} to {limits.score_max}",
                param="scores",
            )
    person = get_annotator(db, annotator)
    with db.session() as session:
        row = session.exec(
            select(RankingAnnotation).where(
                col(RankingAnnotation.item_id) == item_id, col(RankingAnnotation.annotator_id) == person.id
            )
        ).first()
        row = row or RankingAnnotation(item_id=item_id, annotator_id=person.id or 0, kind="order")
        row.kind = "order" if order is not None else "score"
        row.order = list(order) if order is not None else None
        row.scores = list(scores) if scores is not None else None
        row.note = (note or "").strip()
        session.add(row)
        session.flush()
        return row


def order_from_ranks(ranks: Sequence[int | str | None]) -> list[int]:
    """Per-candidate ranks (1 = best, as a form gives them) → the order (candidate indices, best first)."""
    values = []
    for i, r in enumerate(ranks):
        if r in (None, ""):
            raise ValidationError(f"give candidate {i + 1} a rank", param="order")
        values.append((int(r), i))  # type: ignore[arg-type]
    if sorted(v for v, _ in values) != list(range(1, len(values) + 1)):
        raise ValidationError(f"use each rank 1-{len(values)} exactly once", param="order")
    return [i for _, i in sorted(values)]


def next_item_for(db: Database, annotator: str) -> RankingItem | None:
    """The oldest item this annotator (with users: the signed-in user) has not judged yet (others' items
    included: shared items give agreement)."""
    with db.session() as session:
        person = _find_annotator(session, annotator)
        done: set[str] = set()
        if person is not None:
            done = set(
                session.exec(
                    select(RankingAnnotation.item_id).where(col(RankingAnnotation.annotator_id) == person.id)
                ).all()
            )
        for item in session.exec(select(RankingItem).order_by(col(RankingItem.created_at))).all():
            if item.id not in done:
                return item
    return None


@dataclass(frozen=True)
class HistoryRow:
    """One judgement in an annotator's history."""

    when: str
    item_id: str
    prompt: str
    kind: str
    judgement: str
    note: str

    def cells(self) -> list[Any]:
        """The row as the history table shows it."""
        return [self.when, self.item_id[:8], self.prompt, self.kind, self.judgement, self.note]


HISTORY_COLUMNS = ["When (UTC)", "Item", "Prompt", "Kind", "Judgement", "Note"]


def annotator_history(db: Database, annotator: str) -> list[HistoryRow]:
    """Every judgement of ``annotator`` (with users: the signed-in user's), newest first (empty for an annotator
    who has none)."""
    with db.session() as session:
        person = _find_annotator(session, annotator)
        if person is None:
            return []
        rows = session.exec(
            select(RankingAnnotation, RankingItem)
            .join(RankingItem, col(RankingItem.id) == col(RankingAnnotation.item_id))
            .where(col(RankingAnnotation.annotator_id) == person.id)
            .order_by(col(RankingAnnotation.created_at).desc())
        ).all()
    out = []
    for ann, item in rows:
        if ann.order is not None:
            judgement = " > ".join(f"#{i + 1}" for i in ann.order)
        else:
            judgement = ", ".join(f"#{i + 1}: {s}" for i, s in enumerate(ann.scores or []))
        prompt = item.prompt if len(item.prompt) <= 80 else item.prompt[:79] + "…"
        out.append(
            HistoryRow(ann.created_at.strftime("%Y-%m-%d %H:%M"), item.id, prompt, ann.kind, judgement, ann.note)
        )
    return out


@dataclass(frozen=True)
class AgreementReport:
    """Agreement between annotators on shared items (pairwise preferences; see :mod:`studio.compare.agreement`)."""

    per_annotator: list[list[Any]]  # name, judgements, shared units, mean Cohen's kappa
    pairs: list[list[Any]]  # annotator, annotator, shared units, Cohen's kappa
    alpha: float | None  # Krippendorff's alpha (nominal), all annotators
    annotators: int

    def summary(self) -> str:
        """The overall agreement in one line."""
        alpha = f"{self.alpha:.3f}" if self.alpha is not None else "not defined yet (needs shared, varied judgements)"
        return f"{self.annotators} annotator(s) · Krippendorff's alpha (nominal, pairwise preferences): {alpha}"


PER_ANNOTATOR_COLUMNS = ["Annotator", "Judgements", "Shared preferences", "Mean Cohen's kappa"]
PAIR_COLUMNS = ["Annotator", "Annotator", "Shared preferences", "Cohen's kappa"]


def _fmt(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "–"


def agreement_report(db: Database) -> AgreementReport:
    """Cohen's kappa per pair and per annotator, Krippendorff's alpha overall."""
    with db.session() as session:
        rows = session.exec(
            select(RankingAnnotation, Annotator.name, RankingItem.candidates)
            .join(Annotator, col(Annotator.id) == col(RankingAnnotation.annotator_id))
            .join(RankingItem, col(RankingItem.id) == col(RankingAnnotation.item_id))
        ).all()
    labels: dict[str, dict[tuple[str, int, int], int]] = {}
    counts: dict[str, int] = {}
    for ann, name, candidates in rows:
        prefs = pairwise_preferences(len(candidates), order=ann.order, scores=ann.scores)
        mine = labels.setdefault(name, {})
        for (i, j), label in prefs.items():
            mine[(ann.item_id, i, j)] = label
        counts[name] = counts.get(name, 0) + 1
    pairs, per, alpha = agreement_by_annotator(labels)
    return AgreementReport(
        per_annotator=[[n, counts[n], per[n][1], _fmt(per[n][0])] for n in sorted(per)],
        pairs=[[a, b, shared, _fmt(k)] for (a, b), (k, shared) in pairs.items()],
        alpha=alpha,
        annotators=len(labels),
    )
