"""Messages of a conversation as datasets write them, read into the canonical message form.

Two list styles are read: OpenAI's ``{"role", "content"}`` and ShareGPT's ``{"from", "value"}`` (with
LLaMA-Factory's role names, or the tags a ``dataset_info.json`` gives). Canonical messages are::

    {"role": "system" | "user" | "assistant" | "tool", "content": str}
    + on an assistant message that calls tools: "tool_calls": [{"type": "function",
          "function": {"name": str, "arguments": {...}}, "id"?: str}]   (content may then be "")
    + on a tool result: "tool_call_id"?: str, "name"?: str
    + on an assistant message the studio must not learn: "weight": 0 (OpenAI's fine-tuning ``weight``)

``arguments`` is always a JSON object (the form Hugging Face chat templates render), also where a file
writes it as a JSON string (OpenAI) or the whole call as a JSON string (LLaMA-Factory's ``function_call``).
OpenAI content part lists (``[{"type": "text", "text": ...}]``) become their texts joined as chat templates
join them (no separator); a non-text part (an image, audio, a file) is refused: the studio trains text models.

Tool definitions (a row's ``tools``) become ``[{"type": "function", "function": {"name", "description"?,
"parameters"?}}]`` whether the file writes them wrapped like that, bare (LLaMA-Factory), or as a JSON string.

A problem raises ``RowProblem`` naming the path (``messages[2].tool_calls[0].function.name``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Message = dict[str, Any]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


class RowProblem(ValueError):
    """One row cannot be read as the chosen format; ``field`` names the offending column or path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ShareGptTags(BaseModel):
    """The keys and role names of a ShareGPT-style message list (LLaMA-Factory's ``tags``)."""

    model_config = ConfigDict(extra="forbid")

    role_tag: str = Field(default="from", description="The key that names the speaker.")
    content_tag: str = Field(default="value", description="The key that holds the text.")
    user_tag: str = Field(default="human", description="The speaker name of the user.")
    assistant_tag: str = Field(default="gpt", description="The speaker name of the assistant.")
    observation_tag: str = Field(default="observation", description="The speaker name of a tool result.")
    function_tag: str = Field(default="function_call", description="The speaker name of a tool call.")
    system_tag: str = Field(default="system", description="The speaker name of the system prompt.")

    def roles(self) -> dict[str, str]:
        """Speaker name → what it is: a canonical role, or ``function_call``."""
        out = {
            self.system_tag: "system",
            self.user_tag: "user",
            self.assistant_tag: "assistant",
            self.observation_tag: "tool",
            self.function_tag: "function_call",
        }
        if self == DEFAULT_TAGS:  # many ShareGPT-style exports write OpenAI's role names instead
            for name, role in (("user", "user"), ("assistant", "assistant"), ("tool", "tool")):
                out.setdefault(name, role)
        return out


DEFAULT_TAGS = ShareGptTags()
OPENAI_TAGS = ShareGptTags(
    role_tag="role",
    content_tag="content",
    user_tag="user",
    assistant_tag="assistant",
    observation_tag="tool",
    function_tag="function_call",
    system_tag="system",
)


def type_name(value: Any) -> str:
    """``an object``, ``a list``, ``true/false``, ``null`` or the Python type's name (for messages)."""
    return {dict: "an object", list: "a list", bool: "true/false", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def text(value: Any, where: str, *, allow_empty: bool = False) -> str:
    """A text cell (numbers are read as their text); empty and NUL-containing text is refused."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowProblem(where, f"{where} must be text, not {type_name(value)}")
    out = value if isinstance(value, str) else str(value)
    if not allow_empty and not out.strip():
        raise RowProblem(where, f"{where} is empty")
    if "\x00" in out:
        raise RowProblem(where, f"{where} contains a NUL character (\\x00)")
    return out


def content_text(value: Any, where: str, *, allow_empty: bool = False) -> str:
    """A message's content: text, or an OpenAI list of ``{"type": "text", "text": ...}`` parts."""
    if not isinstance(value, list):
        return text(value, where, allow_empty=allow_empty)
    parts: list[str] = []
    for i, part in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(part, Mapping):
            raise RowProblem(
                where, f"{where} must be text or a list of {{type: text, text}} parts; {at} is {type_name(part)}"
            )
        kind = part.get("type")
        if kind != "text":
            raise RowProblem(
                at,
                f"{at} is a {kind!r} part: this studio trains text-only models, so only text parts are read — "
                "remove the other parts or the rows that hold them",
            )
        parts.append(text(part.get("text"), f"{at}.text", allow_empty=True))
    joined = "".join(parts)
    if not allow_empty and not joined.strip():
        raise RowProblem(where, f"{where} is empty")
    return joined


def _json_value(value: Any, where: str, what: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise RowProblem(where, f"{where} is text that is not valid JSON ({what})") from None
    return value


def _arguments(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    parsed = _json_value(value, where, "a tool call's arguments must be a JSON object")
    if not isinstance(parsed, dict):
        raise RowProblem(where, f"{where} must be a JSON object of argument names and values, not {type_name(parsed)}")
    return parsed


def tool_call(value: Any, where: str) -> dict[str, Any]:
    """One tool call: OpenAI's ``{"type": "function", "function": {name, arguments}, "id"}`` or a bare
    ``{name, arguments}`` (LLaMA-Factory's ``function_call`` value)."""
    if not isinstance(value, Mapping):
        raise RowProblem(where, f"{where} must be an object with a name and arguments, not {type_name(value)}")
    function = value.get("function") if "function" in value else value
    at = f"{where}.function" if "function" in value else where
    if not isinstance(function, Mapping):
        raise RowProblem(at, f"{at} must be an object with a name and arguments, not {type_name(function)}")
    kind = value.get("type", "function")
    if kind != "function":
        raise RowProblem(f"{where}.type", f"{where}.type is {kind!r}; only function calls are read")
    name = text(function.get("name"), f"{at}.name")
    call: dict[str, Any] = {
        "type": "function",
        "function": {"name": name, "arguments": _arguments(function.get("arguments"), f"{at}.arguments")},
    }
    if isinstance(value.get("id"), str) and value["id"]:
        call["id"] = value["id"]
    return call


def tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    """A list of tool calls (or one call, or either as a JSON string)."""
    parsed = _json_value(value, where, "tool calls must be JSON")
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not calls:
        raise RowProblem(where, f"{where} is an empty list of tool calls")
    return [tool_call(c, f"{where}[{i}]" if isinstance(parsed, list) else where) for i, c in enumerate(calls)]


def tools(value: Any, where: str) -> list[dict[str, Any]]:
    """Tool definitions: a list (or a JSON string of one) of OpenAI ``{"type": "function", "function": {...}}``
    or bare ``{name, description, parameters}`` objects. Empty (``[]``, ``""``) → ``[]``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    parsed = _json_value(value, where, "tool definitions must be a JSON list")
    if isinstance(parsed, Mapping):
        parsed = [parsed]
    if not isinstance(parsed, list):
        raise RowProblem(where, f"{where} must be a list of tool definitions, not {type_name(parsed)}")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(parsed):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise RowProblem(at, f"{at} must be a tool definition object, not {type_name(item)}")
        if item.get("type", "function") != "function":
            raise RowProblem(f"{at}.type", f"{at}.type is {item.get('type')!r}; only function tools are read")
        function = item.get("function", item)
        if not isinstance(function, Mapping):
            raise RowProblem(f"{at}.function", f"{at}.function must be an object, not {type_name(function)}")
        defined = {k: v for k, v in function.items() if k != "type"}
        text(defined.get("name"), f"{at}.name")
        out.append({"type": "function", "function": defined})
    return out


def _weight(item: Mapping[str, Any], at: str, role: str) -> int | None:
    if "weight" not in item or item["weight"] is None:
        return None
    weight = item["weight"]
    if role != "assistant":
        raise RowProblem(f"{at}.weight", f"{at}.weight: only assistant messages take a weight")
    if isinstance(weight, bool) or weight not in (0, 1):
        raise RowProblem(f"{at}.weight", f"{at}.weight is {weight!r}; OpenAI's weight is 0 (do not learn) or 1")
    return int(weight)


def message(item: Any, at: str, tags: ShareGptTags) -> Message:
    """One message of a list, in OpenAI (``tags.role_tag == "role"``) or ShareGPT style."""
    role_key, content_key = tags.role_tag, tags.content_tag
    if not isinstance(item, Mapping):
        raise RowProblem(at, f"{at} must be an object with {role_key!r} and {content_key!r}, not {type_name(item)}")
    if role_key not in item:
        raise RowProblem(f"{at}.{role_key}", f"{at} has no {role_key!r}")
    raw = item[role_key]
    if not isinstance(raw, str):
        raise RowProblem(f"{at}.{role_key}", f"{at}.{role_key} must be text, not {type_name(raw)}")
    roles = tags.roles()
    if role_key == "role" and raw in ("function", "developer"):  # OpenAI's legacy function result, new system
        role = "tool" if raw == "function" else "system"
    else:
        found = roles.get(raw) if role_key == "role" else roles.get(raw.strip().lower(), roles.get(raw))
        if found is None:
            names = ", ".join(dict.fromkeys(roles)) if role_key != "role" else ", ".join(ROLES)
            raise RowProblem(f"{at}.{role_key}", f"{at}.{role_key} is {raw!r}; use one of {names}")
        role = found
    calls_value = item.get("tool_calls") or None
    legacy_call = item.get("function_call") or None
    if role == "function_call":  # LLaMA-Factory: the content is the call itself
        if content_key not in item:
            raise RowProblem(f"{at}.{content_key}", f"{at} has no {content_key!r}")
        out: Message = {"role": "assistant", "content": ""}
        out["tool_calls"] = tool_calls(item[content_key], f"{at}.{content_key}")
        return out
    if content_key not in item and not (role == "assistant" and (calls_value or legacy_call)):
        raise RowProblem(f"{at}.{content_key}", f"{at} has no {content_key!r}")
    raw_content = item.get(content_key)
    calls: list[dict[str, Any]] = []
    if calls_value is not None or legacy_call is not None:
        if role != "assistant":
            raise RowProblem(f"{at}.tool_calls", f"{at}: only assistant messages make tool calls")
        if calls_value is not None:
            calls = tool_calls(calls_value, f"{at}.tool_calls")
        if legacy_call is not None:
            calls.append(tool_call(legacy_call, f"{at}.function_call"))
    allow_empty = bool(calls) or role == "tool"
    content = "" if raw_content is None and allow_empty else content_text(raw_content, f"{at}.{content_key}",
                                                                           allow_empty=allow_empty)  # fmt: skip
    out = {"role": role, "content": content}
    if calls:
        out["tool_calls"] = calls
    if role == "tool":
        for key in ("tool_call_id", "name"):
            if isinstance(item.get(key), str) and item[key]:
                out[key] = item[key]
    weight = _weight(item, at, role)
    if weight == 0:
        out["weight"] = 0
    return out


def messages(value: Any, where: str, tags: ShareGptTags = OPENAI_TAGS) -> list[Message]:
    """A list of messages (or a CSV cell holding one as JSON) → canonical messages (order unchecked)."""
    return [message(item, f"{where}[{i}]", tags) for i, item in enumerate(as_list(value, where))]


def as_list(value: Any, where: str) -> list[Any]:
    """A non-empty list; a CSV cell holding a JSON list is read as that list."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            raise RowProblem(where, f"{where} is text that is not a valid JSON list") from None
    if not isinstance(value, list):
        raise RowProblem(where, f"{where} must be a list of messages, not {type_name(value)}")
    if not value:
        raise RowProblem(where, f"{where} is an empty list")
    return value


def tags_for(items: Sequence[Any]) -> ShareGptTags:
    """OpenAI tags when the list's first object has ``role``, else ShareGPT's default tags."""
    first = next((i for i in items if isinstance(i, Mapping)), None)
    return OPENAI_TAGS if first is not None and "role" in first and "from" not in first else DEFAULT_TAGS


def check_conversation(msgs: Sequence[Message], where: str, *, ends_with: str, role_key: str = "role") -> None:
    """Roles in order: an optional system message first, then a user message; after a user message an assistant
    reply; after an assistant reply the next user message, or — when it called tools — the tool results, then
    the assistant again. The last message is ``ends_with`` (``assistant`` for a supervised example, ``user``
    for the prompt of a preference pair). Raises ``RowProblem`` naming the first message out of place (its
    ``role_key``: the file's own name for the speaker key)."""
    if not msgs:
        raise RowProblem(where, f"{where} has no messages")
    start = 1 if msgs[0]["role"] == "system" else 0
    for i, msg in enumerate(msgs):
        if msg["role"] not in ROLES:
            raise RowProblem(
                f"{where}[{i}].{role_key}", f"{where}[{i}].role is {msg['role']!r}; use one of {', '.join(ROLES)}"
            )
        empty_ok = msg["role"] == "tool" or bool(msg.get("tool_calls"))
        if not empty_ok and not str(msg["content"]).strip():
            raise RowProblem(f"{where}[{i}].content", f"{where}[{i}].content is empty")
    if start == len(msgs):
        raise RowProblem(where, f"{where} holds only a system message; it needs a user message and a reply")
    previous: Message | None = None
    for i in range(start, len(msgs)):
        msg, role = msgs[i], msgs[i]["role"]
        if role == "system":
            raise RowProblem(
                f"{where}[{i}].{role_key}", f"{where}[{i}] is a system message; only the first may be system"
            )
        if previous is None or previous["role"] == "user":
            expected: tuple[str, ...] = ("user",) if previous is None else ("assistant",)
        elif previous["role"] == "assistant":
            expected = ("tool",) if previous.get("tool_calls") else ("user",)
        else:  # after a tool result: another result, or the assistant goes on
            expected = ("tool", "assistant")
        if role not in expected:
            if role == "tool":
                raise RowProblem(
                    f"{where}[{i}].{role_key}",
                    f"{where}[{i}] is a tool result (observation) but the message before it makes no tool call",
                )
            if expected == ("tool",):
                raise RowProblem(
                    f"{where}[{i}].{role_key}",
                    f"{where}[{i}] is a {role!r} message where the result of the tool call before it belongs "
                    "(a tool / observation message)",
                )
            raise RowProblem(
                f"{where}[{i}].{role_key}",
                f"{where}[{i}] is a {role!r} message where a {expected[-1]!r} one belongs; after an optional "
                "system message, turns alternate user, assistant, user, ...",
            )
        previous = msg
    last = msgs[-1]["role"]
    if ends_with == "assistant" and last != "assistant":
        what = "a tool result" if last == "tool" else "a user message"
        raise RowProblem(where, f"{where} ends with {what}: there is no assistant reply to learn")
    if ends_with == "user" and last != "user":
        raise RowProblem(where, f"{where} must end with the user message the replies answer")
    if ends_with == "assistant" and all(m.get("weight") == 0 for m in msgs if m["role"] == "assistant"):
        raise RowProblem(where, f"{where}: every assistant message has weight 0, so there is nothing to learn")


def uses_tools(msgs: Sequence[Message]) -> bool:
    """Whether a conversation calls tools or holds tool results."""
    return any(m["role"] == "tool" or m.get("tool_calls") for m in msgs)
