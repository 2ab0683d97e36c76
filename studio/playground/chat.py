"""Playground conversations: turn what the chat widget holds into engine messages, and parse form fields."""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Mapping
from typing import Any

from studio.errors import ValidationError
from studio.inference.base import ChatMessage

_ROLES = {"system", "user", "assistant"}


def content_text(content: Any) -> str:
    """Text of one message's content: a string, a list of parts (``{"type": "text", "text": ...}``), or a
    part dict. Non-text parts (files, images) are skipped."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        text = content.get("text")
        return text if isinstance(text, str) else ""
    if isinstance(content, Iterable):
        return "".join(content_text(part) for part in content)
    return str(content)


def build_messages(system_prompt: str, history: Iterable[Mapping[str, Any]], message: str) -> list[ChatMessage]:
    """The conversation to send: optional system prompt, earlier turns, then the new user message."""
    out: list[ChatMessage] = []
    if system_prompt.strip():
        out.append(ChatMessage("system", system_prompt))
    for turn in history:
        role = str(turn.get("role", ""))
        if role not in _ROLES:
            raise ValidationError(f"history has a message with unknown role {role!r}", param="history")
        out.append(ChatMessage(role, content_text(turn.get("content"))))  # type: ignore[arg-type]
    if not message.strip():
        raise ValidationError("the message is empty; type something to send", param="message")
    out.append(ChatMessage("user", message))
    return out


def parse_stop_sequences(text: str | None) -> list[str]:
    """One stop sequence per line; escapes such as ``\\n`` are understood (so a line ``\\n\\n`` stops at a
    blank line)."""
    if not text:
        return []
    out: list[str] = []
    for line in text.splitlines():
        if not line:
            continue
        try:
            seq = codecs.decode(line, "unicode_escape") if "\\" in line else line
        except UnicodeDecodeError as exc:
            raise ValidationError(f"stop sequence {line!r} has a bad escape: {exc}", param="stop") from None
        out.append(seq)
    return out


def parse_seed(value: float | int | None) -> int | None:
    """The form's seed: empty or negative means random (None)."""
    if value is None:
        return None
    seed = int(value)
    return None if seed < 0 else seed
