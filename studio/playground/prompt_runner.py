"""The Playground's Prompt view and conversation history, as plain functions the UI calls.

* **Prompt view**: :func:`start_prompt` frames a prompt with a template (few-shot pairs and, optionally, the
  Chat view's history) and starts the generation; :func:`prompt_count_line` and :func:`progress_line` are the
  live figures under the text box and the output.
* **History**: :func:`conversation_table` (the history table, filtered), :func:`conversation_to_chat` (a saved
  conversation as chat-widget messages), :func:`conversation_transcript` (turns with role and time) and
  :func:`sync_active_conversation` (the active-conversation indicator).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from studio.db.engine import Database
from studio.errors import NotFoundError, StudioError, ValidationError
from studio.inference.base import ChatMessage
from studio.inference.manager import EngineManager, GenerationHandle
from studio.inference.params import SamplingParams
from studio.inference.stats import GenerationResult
from studio.playground.chat import content_text
from studio.playground.conversations import (
    ConversationDetail,
    ConversationPublic,
    delete_conversation,
    get_conversation,
    list_conversations,
)
from studio.playground.prompts import (
    PROMPT_TEMPLATES,
    BuiltPrompt,
    FewShotExample,
    PromptTemplate,
    Tokenizer,
    build_prompt,
    count_chars_and_tokens,
)
from studio.playground.session import PlaygroundSession

CONVERSATION_COLUMNS: tuple[str, ...] = ("title", "model", "use case", "messages", "updated", "id")
NEW_CONVERSATION_LABEL = "New conversation (not saved yet)"
_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}
# a fenced block, or the still-open last one while the reply streams
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)


# -- prompt view -------------------------------------------------------------------------------------------------
def chat_history_messages(history: Iterable[Mapping[str, Any]] | None) -> list[ChatMessage]:
    """The Chat view's messages (Gradio message dicts whose content may be a list of parts) as engine messages.

    Turns with no text (a file or an image on its own, the empty placeholder of a reply that never came) are
    skipped; a role other than system, user or assistant is a ``ValidationError``.
    """
    out: list[ChatMessage] = []
    for i, turn in enumerate(history or []):
        role = str(turn.get("role", ""))
        if role not in _ROLE_NAMES:
            raise ValidationError(f"chat history message {i} has unknown role {role!r}", param="history")
        text = content_text(turn.get("content"))
        if text.strip():
            out.append(ChatMessage(role, text))  # type: ignore[arg-type]
    return out


def _cell(value: Any) -> str:
    """A table cell as text: None and NaN (what an emptied spreadsheet cell becomes) are ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def examples_from_rows(rows: Iterable[Sequence[Any]] | None) -> list[FewShotExample]:
    """Few-shot pairs from the examples table's rows ``[input, output]``.

    Rows left blank are skipped; a row with only one side filled is a ``ValidationError`` naming the row
    (counted from 1, as the table shows it).
    """
    examples: list[FewShotExample] = []
    for n, row in enumerate(rows or [], start=1):
        cells = [_cell(v) for v in row]
        given, wanted = [*cells, "", ""][:2]
        if not given.strip() and not wanted.strip():
            continue
        if not given.strip() or not wanted.strip():
            missing = "input" if not given.strip() else "output"
            raise ValidationError(
                f"few-shot example row {n} has no {missing}; fill it or clear the row", param="examples"
            )
        examples.append(FewShotExample(input=given, output=wanted))
    return examples


def _history_transcript(turns: Sequence[ChatMessage]) -> str:
    """Earlier turns as plain text for the raw template, which has no roles of its own."""
    return "".join(f"{_ROLE_NAMES[t.role]}: {t.content}\n" for t in turns) + "\n" if turns else ""


def frame_prompt(
    template: str,
    prompt: str,
    *,
    system_prompt: str = "",
    examples: Iterable[FewShotExample] = (),
    history: Sequence[ChatMessage] = (),
) -> BuiltPrompt:
    """:func:`studio.playground.prompts.build_prompt`, plus history for the raw template: there the earlier
    turns go as ``User: …`` / ``Assistant: …`` lines right before the prompt (after the preamble and the
    few-shot pairs)."""
    if template not in PROMPT_TEMPLATES:
        raise ValidationError(
            f"unknown prompt template {template!r}; choose one of {', '.join(PROMPT_TEMPLATES)}", param="template"
        )
    tpl: PromptTemplate = template  # type: ignore[assignment]
    built = build_prompt(tpl, prompt, system_prompt=system_prompt, examples=examples, history=history)
    if tpl == "raw" and history and built.text is not None:
        head = built.text[: len(built.text) - len(prompt)]
        return BuiltPrompt(kind="completion", text=head + _history_transcript(history) + prompt)
    return built


@dataclass(frozen=True)
class PromptRun:
    """A running Prompt-view generation: the handle to iterate and what was sent."""

    handle: GenerationHandle
    built: BuiltPrompt

    @property
    def result(self) -> GenerationResult:
        """Filled as tokens arrive."""
        return self.handle.result

    def remember(self, session: PlaygroundSession) -> None:
        """Keep the reply in the browser session so the token and attention views can analyse it."""
        result = self.handle.result
        session.remember_reply(
            self.handle.model_id, result.tokens, result.text, messages=self.built.messages, prompt_text=self.built.text
        )


def start_prompt(
    engines: EngineManager,
    model: str,
    template: str,
    prompt: str,
    params: SamplingParams,
    *,
    system_prompt: str = "",
    examples: Iterable[FewShotExample] = (),
    history: Sequence[ChatMessage] = (),
    owner: str | None = None,
) -> PromptRun:
    """Frame ``prompt`` (:func:`frame_prompt`) and start generating: ``chat`` through the model's chat
    template, ``instruction`` and ``raw`` as a plain completion. ``owner`` lets
    :meth:`EngineManager.cancel_owner` stop it."""
    built = frame_prompt(template, prompt, system_prompt=system_prompt, examples=examples, history=history)
    name = model or "default"
    if built.messages is not None:
        handle = engines.start_chat(name, built.messages, params, endpoint="playground.prompt", owner=owner)
    else:
        handle = engines.start_completion(name, built.text or "", params, endpoint="playground.prompt", owner=owner)
    return PromptRun(handle, built)


def loaded_tokenizer(engines: EngineManager, model: str) -> Tokenizer | None:
    """The tokenizer of ``model`` if it is loaded (counting never loads a model), else None."""
    try:
        engine = engines.engine(model or "default")
    except StudioError:  # not loaded, or a name that does not resolve (yet): nothing to count with
        return None
    tokenizer: Tokenizer | None = getattr(engine, "tokenizer", None)
    return tokenizer


def prompt_count_line(engines: EngineManager, model: str, text: str) -> str:
    """'N characters · M tokens' for the prompt box, with the real tokenizer of the loaded model; without a
    loaded model the tokens part says how to get it."""
    chars, tokens = count_chars_and_tokens(text or "", loaded_tokenizer(engines, model))
    head = f"{chars} character{'' if chars == 1 else 's'}"
    if tokens is None:
        return f"{head} · load the model to count tokens"
    return f"{head} · {tokens} token{'' if tokens == 1 else 's'}"


def progress_line(result: GenerationResult) -> str:
    """The status under the output: waiting, 'Generating… N tokens · X tok/s' while running, then the final
    :meth:`GenerationStats.summary`."""
    if result.start is None:
        return "Waiting for the model (loading it on first use)…"
    stats = result.stats
    if result.finished:
        return stats.summary()
    speed = f" · {stats.tokens_per_s:.1f} tok/s" if stats.tokens_per_s else ""
    return f"Generating… {stats.completion_tokens} tokens{speed}"


def code_from_reply(text: str) -> str:
    """What the code view shows: the contents of the reply's fenced code blocks (the one still being written
    included), or the whole reply when it has none."""
    blocks = _FENCE.findall(text)
    return "\n\n".join(b.rstrip("\n") for b in blocks) if blocks else text


# -- conversation history ----------------------------------------------------------------------------------------
def _when(moment: datetime) -> str:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)  # SQLite drops the zone
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def model_label(model_id: str) -> str:
    """A model id as a table shows it: a remote model's ``name@http://host:port/v1`` (a deployment, an endpoint)
    as ``name @ host:port/v1``, so the cell can wrap between the name and the address (the whole id was one
    unbreakable word wider than its column)."""
    name, sep, url = model_id.partition("@")
    scheme, found, rest = url.partition("://")
    return f"{name} @ {rest}" if sep and found and scheme in ("http", "https") else model_id


def conversation_rows(conversations: Iterable[ConversationPublic]) -> list[list[Any]]:
    """Rows for the history table, in :data:`CONVERSATION_COLUMNS` order (the id last, to open or delete)."""
    return [
        [c.title or "(untitled)", model_label(c.model), c.use_case or "", c.message_count, _when(c.updated_at), c.id]
        for c in conversations
    ]


def conversation_table(
    db: Database, *, model: str | None = None, use_case: str | None = None, limit: int = 200
) -> list[list[Any]]:
    """The saved conversations, most recently updated first, optionally of one model and/or use case."""
    return conversation_rows(list_conversations(db, model=model or None, use_case=use_case or None, limit=limit))


def conversation_to_chat(detail: ConversationDetail) -> list[dict[str, str]]:
    """A saved conversation as chat-widget messages (``{"role", "content"}``). System turns are left out: the
    system prompt has its own box."""
    return [{"role": m.role, "content": m.content} for m in detail.messages if m.role != "system"]


def conversation_transcript(detail: ConversationDetail) -> str:
    """The conversation as Markdown: a header, then each turn with its role, time and (for replies) speed."""
    header = (
        f"### {detail.title or '(untitled)'}\n\n{detail.model} · {detail.use_case or 'no use case'} · "
        f"{detail.message_count} messages · started {_when(detail.created_at)}"
    )
    turns = []
    for m in detail.messages:
        speed = (m.stats or {}).get("tokens_per_s")
        extra = f" · {speed:.1f} tok/s" if isinstance(speed, int | float) else ""
        turns.append(f"**{_ROLE_NAMES[m.role]}** · {_when(m.created_at)}{extra}\n\n{m.content}")
    return "\n\n---\n\n".join([header, *turns])


def sync_active_conversation(db: Database, session: PlaygroundSession) -> str:
    """The active-conversation indicator's text: the saved conversation's title and size, or
    :data:`NEW_CONVERSATION_LABEL`. A conversation deleted meanwhile (elsewhere) is forgotten, so the next reply
    starts a new one instead of failing."""
    if not session.conversation_id:
        return NEW_CONVERSATION_LABEL
    try:
        detail = get_conversation(db, session.conversation_id)
    except NotFoundError:
        session.conversation_id = None
        return NEW_CONVERSATION_LABEL
    return active_label(detail)


def active_label(detail: ConversationPublic) -> str:
    """The indicator's text for an open conversation."""
    return f"Active: **{detail.title or '(untitled)'}** · {detail.model} · {detail.message_count} messages"


def new_conversation(session: PlaygroundSession) -> None:
    """Start afresh: the next Chat reply is saved as a new conversation."""
    session.conversation_id = None


def open_conversation(db: Database, session: PlaygroundSession, conversation_id: str | None) -> ConversationDetail:
    """Make a saved conversation the active one (the next Chat reply is appended to it) and return it."""
    cid = (conversation_id or "").strip()
    if not cid:
        raise ValidationError("pick a conversation in the table first (or give its id)", param="conversation_id")
    detail = get_conversation(db, cid)
    session.conversation_id = detail.id
    return detail


def delete_saved_conversation(db: Database, session: PlaygroundSession, conversation_id: str | None) -> bool:
    """Delete a saved conversation and its turns; return True when it was the active one (then forgotten, so
    the next Chat reply starts a new conversation)."""
    cid = (conversation_id or "").strip()
    if not cid:
        raise ValidationError("pick a conversation in the table first (or give its id)", param="conversation_id")
    delete_conversation(db, cid)
    was_active = session.conversation_id == cid
    if was_active:
        session.conversation_id = None
    return was_active
