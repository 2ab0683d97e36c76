"""Saved Playground conversations: create, append turns, list with filters, open, rename, delete.

A conversation is a ``Conversation`` row plus its turns as ``ConversationMessage`` rows (role, content, time,
model, sampling parameters, generation figures). Every function here is one transaction: it either does all
of its work or none of it. Functions return ``...Public`` / ``...Detail`` shapes, never live table rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, delete, func, select, update

from studio.db.engine import Database
from studio.db.tables import Conversation, ConversationMessage, utcnow
from studio.errors import NotFoundError, ValidationError
from studio.inference.stats import GenerationStats
from studio.users.acting import current_user_id

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")
TITLE_CHARS = 60  # an automatic title is the first user message cut to about this many characters
MAX_TITLE = 200
MAX_MODEL = 512
MAX_USE_CASE = 128
MAX_LIMIT = 1000


class MessageCreate(BaseModel):
    """One turn to store. ``role`` is checked by the functions below (so that a bad turn in a batch is named
    by its place in the batch), hence a plain string here."""

    model_config = ConfigDict(extra="forbid")

    role: str = Field(description="Who spoke: system, user or assistant.", json_schema_extra={"enum": list(ROLES)})
    content: str = Field(description="The text of the turn; a user turn must not be empty.")
    model: str | None = Field(
        default=None, description="The model that produced (or was asked) this turn; defaults to the conversation's."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Sampling parameters used for this turn (temperature, top_p, ...)."
    )
    stats: dict[str, Any] | None = Field(
        default=None, description="Figures of the generation (tokens, TTFT, tokens/s, finish reason), if any."
    )


class MessagePublic(BaseModel):
    """One stored turn."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    position: int = Field(description="0-based place of the turn in its conversation.")
    role: Role
    content: str
    created_at: datetime
    model: str | None
    params: dict[str, Any]
    stats: dict[str, Any] | None


class ConversationPublic(BaseModel):
    """One conversation as the history sidebar shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    title: str = Field(description="The given title, or the first user message cut short; '' before any.")
    model: str = Field(description="The model of the latest saved exchange.")
    use_case: str | None
    created_at: datetime
    updated_at: datetime = Field(description="When a turn was last added, or the title changed.")
    message_count: int = 0


class ConversationDetail(ConversationPublic):
    """A conversation with all its turns, in order."""

    messages: list[MessagePublic] = Field(default_factory=list)


class ConversationFacets(BaseModel):
    """The values the history can be filtered by."""

    models: list[str]
    use_cases: list[str]


# -- validation ------------------------------------------------------------------------------------------------
def _no_nul(text: str, param: str) -> str:
    # PostgreSQL text columns cannot hold NUL; refuse it everywhere so both databases behave alike
    if "\x00" in text:
        raise ValidationError(f"{param} contains a NUL character (\\x00), which cannot be stored", param=param)
    return text


def _name(value: str | None, param: str, max_len: int) -> str | None:
    """A stripped one-line field, or None when blank; too long or holding NUL is a ``ValidationError``."""
    text = (value or "").strip()
    if not text:
        return None
    if len(text) > max_len:
        raise ValidationError(f"{param} is {len(text)} characters long; at most {max_len} are allowed", param=param)
    return _no_nul(text, param)


def _required_name(value: str | None, param: str, max_len: int) -> str:
    text = _name(value, param, max_len)
    if text is None:
        raise ValidationError(f"{param} must not be empty", param=param)
    return text


def _json_object(value: Mapping[str, Any] | GenerationStats | None, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    data = value.to_dict() if isinstance(value, GenerationStats) else value
    if not isinstance(data, Mapping):
        raise ValidationError(f"{param} must be an object, not {type(data).__name__}", param=param)
    try:
        # round-trip so that what we return is exactly what the database will give back later
        out = json.loads(json.dumps(dict(data), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{param} must hold only JSON values (finite numbers, text, lists, objects): {exc}", param=param
        ) from None
    assert isinstance(out, dict)
    return out


def _check_message(msg: MessageCreate, where: str) -> MessageCreate:
    """Validate one turn; ``where`` prefixes field names in errors ('' or 'messages.2.', as the REST layer
    names fields)."""
    if msg.role not in ROLES:
        raise ValidationError(
            f"{where}role {msg.role!r} is not a chat role; use one of {', '.join(ROLES)}", param=f"{where}role"
        )
    if msg.role == "user" and not msg.content.strip():
        raise ValidationError(f"{where}content of a user message must not be empty", param=f"{where}content")
    _no_nul(msg.content, f"{where}content")
    return msg.model_copy(
        update={
            "model": _name(msg.model, f"{where}model", MAX_MODEL),
            "params": _json_object(msg.params, f"{where}params") or {},
            "stats": _json_object(msg.stats, f"{where}stats"),
        }
    )


def auto_title(text: str, limit: int = TITLE_CHARS) -> str:
    """A one-line title from a message: whitespace collapsed, cut at a word boundary near ``limit`` with '…'."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[:limit]
    space = cut.rfind(" ")
    if space >= limit // 2:  # don't cut a long first word into a stub
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


# -- shared steps (inside one session) ---------------------------------------------------------------------------
def _not_found(conversation_id: str) -> NotFoundError:
    return NotFoundError(
        f"conversation {conversation_id!r} not found (it may have been deleted)",
        param="conversation_id",
        code="conversation_not_found",
    )


def _mine(stmt: Any) -> Any:
    """Only the signed-in user's conversations (issue 19); everything for the single user, the CLI and jobs."""
    owner = current_user_id()
    return stmt if owner is None else stmt.where(col(Conversation.owner_id) == owner)


def _lock(session: Session, conversation_id: str) -> Conversation:
    """Bump ``updated_at`` and return the row. Writing first takes the write lock (SQLite) or the row lock
    (PostgreSQL) before we read the last position, so concurrent appends queue up instead of colliding.
    Another user's conversation is not found."""
    bumped = session.exec(
        _mine(update(Conversation).where(col(Conversation.id) == conversation_id)).values(updated_at=utcnow())
    )
    if bumped.rowcount == 0:
        raise _not_found(conversation_id)
    conv = session.get(Conversation, conversation_id, populate_existing=True)
    assert conv is not None
    return conv


def _message_count(session: Session, conversation_id: str) -> int:
    stmt = select(func.count()).where(col(ConversationMessage.conversation_id) == conversation_id)
    return int(session.exec(stmt).one())


def _append(session: Session, conv: Conversation, msg: MessageCreate, position: int) -> ConversationMessage:
    row = ConversationMessage(
        conversation_id=conv.id,
        position=position,
        role=msg.role,
        content=msg.content,
        model=msg.model or conv.model,
        params=msg.params,
        stats=msg.stats,
    )
    session.add(row)
    if msg.role == "user" and not conv.title:
        conv.title = auto_title(msg.content)
        session.add(conv)
    return row


def _next_position(session: Session, conversation_id: str) -> int:
    stmt = select(func.max(ConversationMessage.position)).where(
        col(ConversationMessage.conversation_id) == conversation_id
    )
    last = session.exec(stmt).one()
    return 0 if last is None else int(last) + 1


def _new(session: Session, model: str | None, use_case: str | None, title: str | None) -> Conversation:
    conv = Conversation(
        model=_required_name(model, "model", MAX_MODEL),
        use_case=_name(use_case, "use_case", MAX_USE_CASE),
        title=_name(title, "title", MAX_TITLE) or "",
        owner_id=current_user_id(),
    )
    session.add(conv)
    return conv


def _detail(session: Session, conv: Conversation) -> ConversationDetail:
    session.flush()
    rows = session.exec(
        select(ConversationMessage)
        .where(col(ConversationMessage.conversation_id) == conv.id)
        .order_by(col(ConversationMessage.position))
    ).all()
    messages = [MessagePublic.model_validate(r) for r in rows]
    public = ConversationPublic.model_validate(conv).model_copy(update={"message_count": len(messages)})
    return ConversationDetail(**public.model_dump(), messages=messages)


# -- public functions --------------------------------------------------------------------------------------------
def create_conversation(
    db: Database, *, model: str, use_case: str | None = None, title: str | None = None
) -> ConversationPublic:
    """Start an empty conversation with ``model``. Without a ``title`` the first user message names it."""
    with db.session() as session:
        conv = _new(session, model, use_case, title)
        session.flush()
        return ConversationPublic.model_validate(conv)


def append_message(
    db: Database,
    conversation_id: str,
    *,
    role: str,
    content: str,
    model: str | None = None,
    params: Mapping[str, Any] | None = None,
    stats: Mapping[str, Any] | GenerationStats | None = None,
) -> MessagePublic:
    """Add one turn at the end of a conversation and bump its ``updated_at``.

    ``model`` defaults to the conversation's model. Raises ``ValidationError`` for an unknown role, an empty
    user message or parameters that are not JSON, and ``NotFoundError`` for an unknown conversation.
    """
    msg = _check_message(
        MessageCreate.model_construct(
            role=role,
            content=content,
            model=model,
            params=_json_object(params, "params") or {},
            stats=_json_object(stats, "stats"),
        ),
        "",
    )
    with db.session() as session:
        conv = _lock(session, conversation_id)
        row = _append(session, conv, msg, _next_position(session, conversation_id))
        session.flush()
        return MessagePublic.model_validate(row)


def save_exchange(
    db: Database,
    conversation_id: str | None,
    messages: Sequence[MessageCreate],
    *,
    model: str,
    use_case: str | None = None,
    title: str | None = None,
) -> ConversationDetail:
    """Store several turns at once (typically the user's message and the reply) and return the conversation.

    With ``conversation_id=None`` a new conversation is created; otherwise the turns go at the end of that one,
    whose ``model`` becomes ``model`` and whose ``use_case``/``title`` change when given. Either every turn is
    stored or none is: a bad turn (named ``messages.<i>.<field>`` in the error) leaves the database as it was.
    """
    if not messages:
        raise ValidationError("messages must hold at least one message", param="messages")
    checked = [_check_message(m, f"messages.{i}.") for i, m in enumerate(messages)]
    with db.session() as session:
        if conversation_id is None:
            conv = _new(session, model, use_case, title)
            session.flush()
            position = 0
        else:
            conv = _lock(session, conversation_id)
            conv.model = _required_name(model, "model", MAX_MODEL)
            conv.use_case = _name(use_case, "use_case", MAX_USE_CASE) or conv.use_case
            conv.title = _name(title, "title", MAX_TITLE) or conv.title
            session.add(conv)
            position = _next_position(session, conv.id)
        for offset, msg in enumerate(checked):
            _append(session, conv, msg, position + offset)
        return _detail(session, conv)


def get_conversation(db: Database, conversation_id: str) -> ConversationDetail:
    """A conversation with every turn in order; ``NotFoundError`` if there is none with this id."""
    with db.session() as session:
        conv = session.exec(_mine(select(Conversation).where(col(Conversation.id) == conversation_id))).first()
        if conv is None:
            raise _not_found(conversation_id)
        return _detail(session, conv)


def list_conversations(
    db: Database, *, model: str | None = None, use_case: str | None = None, limit: int = 100
) -> list[ConversationPublic]:
    """Conversations, most recently updated first, optionally only those of one model and/or use case."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}", param="limit")
    count = (
        select(func.count(col(ConversationMessage.id)))
        .where(col(ConversationMessage.conversation_id) == col(Conversation.id))
        .scalar_subquery()
    )
    stmt = _mine(select(Conversation, count))
    if model:
        stmt = stmt.where(col(Conversation.model) == model)
    if use_case:
        stmt = stmt.where(col(Conversation.use_case) == use_case)
    stmt = stmt.order_by(col(Conversation.updated_at).desc(), col(Conversation.created_at).desc()).limit(limit)
    with db.session() as session:
        rows = session.exec(stmt).all()
        return [
            ConversationPublic.model_validate(conv).model_copy(update={"message_count": int(n)}) for conv, n in rows
        ]


def conversation_facets(db: Database) -> ConversationFacets:
    """Every model and use case that some saved conversation has, sorted: the choices of the history filters."""
    with db.session() as session:
        models = session.exec(_mine(select(Conversation.model)).distinct().order_by(col(Conversation.model))).all()
        use_cases = session.exec(
            _mine(select(Conversation.use_case))
            .where(col(Conversation.use_case).is_not(None))
            .distinct()
            .order_by(col(Conversation.use_case))
        ).all()
    return ConversationFacets(models=list(models), use_cases=[u for u in use_cases if u is not None])


def rename_conversation(db: Database, conversation_id: str, title: str) -> ConversationPublic:
    """Give a conversation a new (non-empty) title; ``NotFoundError`` for an unknown id."""
    new_title = _required_name(title, "title", MAX_TITLE)
    with db.session() as session:
        conv = _lock(session, conversation_id)
        conv.title = new_title
        session.add(conv)
        session.flush()
        return ConversationPublic.model_validate(conv).model_copy(
            update={"message_count": _message_count(session, conversation_id)}
        )


def delete_conversation(db: Database, conversation_id: str) -> None:
    """Delete a conversation and all its turns; ``NotFoundError`` if there is none with this id."""
    with db.session() as session:
        if session.exec(_mine(select(Conversation.id).where(col(Conversation.id) == conversation_id))).first() is None:
            raise _not_found(conversation_id)
        # the foreign key cascades too, but deleting the turns first does not depend on it being enforced
        session.exec(delete(ConversationMessage).where(col(ConversationMessage.conversation_id) == conversation_id))
        gone = session.exec(delete(Conversation).where(col(Conversation.id) == conversation_id))
        if gone.rowcount == 0:
            raise _not_found(conversation_id)
