"""Battles: named side-by-side conversations, blind battles with votes, and batch A/B runs.

Everything a battle needs to become a preference pair later is stored when its replies are complete (the exact
chats each side answered, both replies, both contenders, the sampling parameters, the figures, the time);
the vote fills in ``winner`` and ``note``. In blind mode the contenders' names stay in server-side state
(:class:`BlindBattle`) and in the database until the vote: the browser only ever sees "Model A" and "Model B".

Battles belong to the user who ran them (issue 19): ``Battle.user_id`` is the signed-in user's id (None for the single
user, the CLI and jobs). With users, :func:`get_battle`, :func:`cast_vote`, :func:`batch_battles` and
:func:`next_unvoted` see only the signed-in user's own battles -- another user's battle is not found, as if it did
not exist -- while the single user sees every battle. The leaderboard and the preference export
(``studio.compare.leaderboard``, ``studio.compare.export``) read the whole team's votes.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from studio.compare.stream import (
    ContenderSpec,
    SideView,
    parse_contenders,
    start_sides,
    stream_sides,
)
from studio.compare.tables import Battle
from studio.db.engine import Database
from studio.db.tables import new_id, utcnow
from studio.errors import ConflictError, GenerationError, NotFoundError, ValidationError
from studio.inference.base import ChatMessage
from studio.inference.manager import EngineManager
from studio.inference.params import SamplingParams
from studio.inference.stats import GenerationResult
from studio.settings import BUNDLED_MODEL_ID, Settings
from studio.users.acting import current_user_id

log = logging.getLogger(__name__)

WINNERS: tuple[str, ...] = ("a", "b", "tie", "both_bad")
VOTE_CHOICES: dict[str, str] = {"A is better": "a", "B is better": "b", "Tie": "tie", "Both are bad": "both_bad"}
MAX_BATCH_PROMPTS = 200
MAX_NOTE = 2000


# -- contenders ------------------------------------------------------------------------------------------------
def adapter_base_model(adapter_dir: Path) -> str | None:
    """The base model an adapter was trained on, from its ``whetstone-run.json`` (None when unknown)."""
    try:
        data = json.loads((adapter_dir / "whetstone-run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    base = data.get("base_model") if isinstance(data, dict) else None
    return str(base) if base else None


def contender_choices(engines: EngineManager, settings: Settings) -> list[str]:
    """What the pickers offer: aliases and models, then every adapter under STUDIO_HOME/adapters on its base
    model (``"<base> + <adapter>"``; the bundled model when the adapter does not say)."""
    models: list[str] = []
    for view in engines.resolver.list_aliases():
        if view.entry is not None and view.config.alias not in models:
            models.append(view.config.alias)
    if not models:
        models.append("default")
    adapters = []
    folder = settings.home / "adapters"
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not (path / "adapter_config.json").is_file():
                continue
            base = adapter_base_model(path) or BUNDLED_MODEL_ID
            adapters.append(ContenderSpec(base, path.name).label)
    return models + adapters


def _conversation(system: str | None, history: Sequence[ChatMessage], prompt: str) -> list[ChatMessage]:
    base = list(history)
    if system and system.strip() and not base:
        base.append(ChatMessage("system", system.strip()))
    return [*base, ChatMessage("user", prompt)]


def _check_prompt(prompt: str) -> str:
    text = (prompt or "").strip()
    if not text:
        raise ValidationError("type a prompt first", param="prompt")
    return text


def _dicts(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def record_battle(
    db: Database,
    *,
    mode: str,
    specs: tuple[ContenderSpec, ContenderSpec],
    conversations: tuple[Sequence[ChatMessage], Sequence[ChatMessage]],
    results: tuple[GenerationResult, GenerationResult],
    params: SamplingParams,
    use_case: str | None = None,
    tags: Sequence[str] = (),
    batch_id: str | None = None,
    position: int = 0,
) -> Battle:
    """Store a battle whose two replies are complete (``winner`` stays None until a vote), as the signed-in
    user's (``user_id``; None for the single user)."""
    prompt = next((m.content for m in reversed(conversations[0]) if m.role == "user"), "")
    battle = Battle(
        mode=mode,
        batch_id=batch_id,
        position=position,
        model_a=specs[0].label,
        model_b=specs[1].label,
        config_a=specs[0].to_dict(),
        config_b=specs[1].to_dict(),
        params=params.model_dump(mode="json"),
        prompt=prompt,
        messages_a=_dicts(conversations[0]),
        messages_b=_dicts(conversations[1]),
        reply_a=results[0].text,
        reply_b=results[1].text,
        stats_a=results[0].stats.to_dict(),
        stats_b=results[1].stats.to_dict(),
        use_case=use_case or None,
        tags=[t for t in tags if t],
        user_id=current_user_id(),
    )
    with db.session() as session:
        session.add(battle)
    return battle


def _mine(stmt: Any) -> Any:
    """Only the signed-in user's battles; every battle for the single user, the CLI and jobs."""
    owner = current_user_id()
    return stmt if owner is None else stmt.where(col(Battle.user_id) == owner)


def _own_battle(session: Session, battle_id: str) -> Battle:
    """The battle ``battle_id`` if the signed-in user may see it; another user's battle is not found."""
    battle = session.exec(_mine(select(Battle).where(col(Battle.id) == battle_id))).first()
    if battle is None:
        raise NotFoundError(f"battle {battle_id!r} not found", param="battle_id")
    return battle  # type: ignore[no-any-return]


def parse_tags(text: str | Sequence[str] | None) -> list[str]:
    """``"a, b"`` or ``["a", "b"]`` → ``["a", "b"]`` (trimmed, empty ones dropped, order kept, no repeats)."""
    items = text.split(",") if isinstance(text, str) else list(text or [])
    out: list[str] = []
    for item in items:
        tag = item.strip()
        if tag and tag not in out:
            out.append(tag[:64])
    return out


# -- named mode ------------------------------------------------------------------------------------------------
@dataclass
class NamedSession:
    """One browser session's side-by-side conversation: the contenders and each side's own history."""

    specs: list[ContenderSpec] = field(default_factory=list)
    histories: list[list[ChatMessage]] = field(default_factory=list)
    last: list[SideView] = field(default_factory=list)

    def transcript(
        self, index: int, live: SideView | None = None, pending: list[ChatMessage] | None = None
    ) -> list[dict[str, str]]:
        """Side ``index``'s chat for display: its history, then the turn being generated (if any)."""
        messages = pending if pending is not None else (self.histories[index] if index < len(self.histories) else [])
        out = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
        if live is not None:
            out.append({"role": "assistant", "content": live.text or ("Error: " + live.error if live.error else "")})
        return out

    def reset(self, specs: Sequence[ContenderSpec] = ()) -> None:
        """Start a new conversation with these contenders."""
        self.specs = list(specs)
        self.histories = [[] for _ in self.specs]
        self.last = []


def named_turn(
    engines: EngineManager,
    session: NamedSession,
    contenders: Sequence[str],
    prompt: str,
    params: SamplingParams,
    *,
    system: str | None = None,
    owner: str | None = None,
) -> Iterator[tuple[list[SideView], list[list[ChatMessage]]]]:
    """Send ``prompt`` to every contender (2-4) at once and stream all replies; the conversation continues on
    every side (each side sees its own earlier replies). Changing the contenders starts a new conversation.

    Yields (one view per side, the chat each side is answering); the session's histories grow at the end."""
    specs = parse_contenders(contenders)
    text = _check_prompt(prompt)
    if specs != session.specs:
        session.reset(specs)
    conversations = [_conversation(system, h, text) for h in session.histories]
    handles = start_sides(engines, specs, conversations, params, owner=owner, endpoint="compare.named")
    views: list[SideView] = []
    for views in stream_sides(handles):
        yield views, conversations
    for i, (handle, conv) in enumerate(zip(handles, conversations, strict=True)):
        if not isinstance(handle, Exception) and views and views[i].error is None:
            session.histories[i] = [*conv, ChatMessage("assistant", handle.result.text)]
    session.last = views


def regenerate_side(
    engines: EngineManager,
    session: NamedSession,
    index: int,
    params: SamplingParams,
    *,
    owner: str | None = None,
) -> Iterator[tuple[list[SideView], list[list[ChatMessage]]]]:
    """Generate side ``index``'s last reply again; the other sides keep theirs. Yields as :func:`named_turn`."""
    if not session.specs or not 0 <= index < len(session.specs):
        raise ValidationError(
            f"there is no side {index + 1} to regenerate; send a prompt to {len(session.specs) or 2}+ models first",
            param="side",
        )
    history = session.histories[index]
    if not history or history[-1].role != "assistant":
        raise ValidationError("this side has no reply to regenerate yet", param="side")
    conversation = history[:-1]
    others = list(session.last) or [SideView(i, "", False) for i in range(len(session.specs))]
    handles = start_sides(
        engines, [session.specs[index]], [conversation], params, owner=owner, endpoint="compare.named"
    )
    conversations = [conversation if i == index else h[:-1] for i, h in enumerate(session.histories)]
    view = others[index]
    for (view,) in stream_sides(handles):
        merged = [
            SideView(index, view.text, view.running, view.error, view.stats, view.stats_text) if i == index else v
            for i, v in enumerate(others)
        ]
        yield merged, conversations
    handle = handles[0]
    if not isinstance(handle, Exception) and view.error is None:
        session.histories[index] = [*conversation, ChatMessage("assistant", handle.result.text)]
        session.last = [
            SideView(index, view.text, False, None, view.stats, view.stats_text) if i == index else v
            for i, v in enumerate(others)
        ]


# -- blind mode ------------------------------------------------------------------------------------------------
@dataclass
class BlindBattle:
    """A blind battle in progress. Kept server-side only (``gr.State``): it holds the hidden names."""

    specs: tuple[ContenderSpec, ContenderSpec]
    battle_id: str | None = None
    voted: bool = False


def pick_pair(pool: Sequence[str], rng: random.Random) -> tuple[ContenderSpec, ContenderSpec]:
    """Two different contenders from ``pool``, in random order."""
    specs: list[ContenderSpec] = []
    for value in pool:
        if value and value.strip():
            spec = ContenderSpec.parse(value)
            if spec not in specs:
                specs.append(spec)
    if len(specs) < 2:
        raise ValidationError("a blind battle needs a pool of at least two different contenders", param="pool")
    a, b = rng.sample(specs, 2)
    return a, b


def blind_battle(
    engines: EngineManager,
    db: Database,
    pool: Sequence[str],
    prompt: str,
    params: SamplingParams,
    *,
    use_case: str | None = None,
    tags: Sequence[str] = (),
    system: str | None = None,
    rng: random.Random | None = None,
    owner: str | None = None,
) -> Iterator[tuple[list[SideView], BlindBattle]]:
    """Pick two contenders from ``pool``, stream both replies to ``prompt`` and store the battle for a vote.

    The views carry only replies and figures, never names; the :class:`BlindBattle` (names, battle id) is
    for server-side state. Raises ``GenerationError`` at the end when a side failed (nothing is stored)."""
    text = _check_prompt(prompt)
    specs = pick_pair(pool, rng or random.Random())
    battle = BlindBattle(specs)
    conversation = _conversation(system, [], text)
    handles = start_sides(engines, specs, [conversation, conversation], params, owner=owner, endpoint="compare.blind")
    views: list[SideView] = []
    for views in stream_sides(handles):
        yield views, battle
    failed = [v.error for v in views if v.error]
    if failed or any(isinstance(h, Exception) for h in handles):
        raise GenerationError(f"the battle could not be completed: {failed[0] if failed else 'a side failed'}")
    results = (handles[0].result, handles[1].result)  # type: ignore[union-attr]
    row = record_battle(
        db, mode="blind", specs=specs, conversations=(conversation, conversation), results=results, params=params,
        use_case=use_case, tags=tags,
    )  # fmt: skip
    battle.battle_id = row.id
    yield views, battle


def cast_vote(db: Database, battle_id: str, winner: str, note: str = "") -> Battle:
    """Record the verdict on a battle (a, b, tie or both_bad, plus an optional note); returns the battle with
    its contenders' names (the reveal). A battle takes one vote: a second raises ``ConflictError``. Only the user
    who ran a battle votes on it: another user's battle raises ``NotFoundError``."""
    verdict = VOTE_CHOICES.get(winner, winner)
    if verdict not in WINNERS:
        raise ValidationError(
            f"a vote is one of {', '.join(WINNERS)} (or {', '.join(VOTE_CHOICES)}); got {winner!r}", param="vote"
        )
    if len(note or "") > MAX_NOTE:
        raise ValidationError(f"the note has {len(note)} characters; at most {MAX_NOTE}", param="note")
    with db.session() as session:
        battle = _own_battle(session, battle_id)
        if battle.winner is not None:
            raise ConflictError(f"battle {battle_id} already has a vote ({battle.winner})", param="battle_id")
        battle.winner = verdict
        battle.note = (note or "").strip()
        battle.voted_at = utcnow()
        session.add(battle)
    return battle


def get_battle(db: Database, battle_id: str) -> Battle:
    """One of the signed-in user's battles by id (any battle for the single user)."""
    with db.session() as session:
        return _own_battle(session, battle_id)


def reveal_text(battle: Battle) -> str:
    """The line shown after a vote: who was A, who was B, and what the vote said."""
    verdict = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}.get(
        battle.winner or "", "not voted"
    )
    return f"Model A was **{battle.model_a}** · Model B was **{battle.model_b}** · your vote: {verdict}"


# -- batch A/B -------------------------------------------------------------------------------------------------
def parse_prompts(text: str) -> list[str]:
    """One prompt per non-empty line (at most ``MAX_BATCH_PROMPTS``)."""
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not prompts:
        raise ValidationError("give at least one prompt, one per line", param="prompts")
    if len(prompts) > MAX_BATCH_PROMPTS:
        raise ValidationError(f"{len(prompts)} prompts; at most {MAX_BATCH_PROMPTS} per batch", param="prompts")
    return prompts


@dataclass(frozen=True)
class BatchProgress:
    """After each prompt of a batch: how far it is and the battle just stored."""

    batch_id: str
    done: int
    total: int
    battle: Battle


def run_batch(
    engines: EngineManager,
    db: Database,
    contender_a: str,
    contender_b: str,
    prompts: Sequence[str],
    params: SamplingParams,
    *,
    use_case: str | None = None,
    tags: Sequence[str] = (),
    owner: str | None = None,
) -> Iterator[BatchProgress]:
    """Run every prompt through both contenders (both sides at once per prompt), storing one battle per
    prompt under one batch id, to be voted on in sequence."""
    specs = (ContenderSpec.parse(contender_a), ContenderSpec.parse(contender_b))
    batch_id = new_id()
    for position, prompt in enumerate(prompts):
        conversation = [ChatMessage("user", _check_prompt(prompt))]
        handles = start_sides(
            engines, specs, [conversation, conversation], params, owner=owner, endpoint="compare.batch"
        )
        views: list[SideView] = []
        for snapshot in stream_sides(handles, min_interval=1.0):
            views = snapshot
        errors = [v.error for v in views if v.error]
        if errors or any(isinstance(h, Exception) for h in handles):
            raise GenerationError(f"prompt {position + 1} failed: {errors[0] if errors else 'a side did not start'}")
        battle = record_battle(
            db, mode="batch", specs=specs, conversations=(conversation, conversation),
            results=(handles[0].result, handles[1].result), params=params,  # type: ignore[union-attr]
            use_case=use_case, tags=tags, batch_id=batch_id, position=position,
        )  # fmt: skip
        yield BatchProgress(batch_id, position + 1, len(prompts), battle)


def batch_battles(db: Database, batch_id: str) -> list[Battle]:
    """A batch's battles in prompt order (another user's batch is not found)."""
    with db.session() as session:
        stmt = _mine(select(Battle).where(col(Battle.batch_id) == batch_id))
        rows = session.exec(stmt.order_by(col(Battle.position))).all()
    if not rows:
        raise NotFoundError(f"batch {batch_id!r} not found", param="batch_id")
    return list(rows)


def next_unvoted(db: Database, batch_id: str) -> Battle | None:
    """The first battle of a batch that has no vote yet (None when all are voted)."""
    return next((b for b in batch_battles(db, batch_id) if b.winner is None), None)
