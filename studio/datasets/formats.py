"""Dataset formats: detect which one a file uses, and normalise every row to one canonical form.

Accepted input formats (``DatasetFormat``), with the columns each reads by default:

=================== ============================================== ==========
format              columns                                         kind
=================== ============================================== ==========
``messages``        ``messages``: [{role, content}, ...]            supervised
``prompt_completion`` ``prompt``, ``completion``                    supervised
``alpaca``          ``instruction``, ``input`` (optional), ``output`` supervised
``sharegpt``        ``conversations``: [{from, value}, ...]         supervised
``preference``      ``prompt``, ``chosen``, ``rejected``            preference
=================== ============================================== ==========

Every format may also take a ``system`` column (a system prompt per row) through ``ColumnMapping.system``.

Canonical forms (what is stored, hashed, trained on):

* supervised: ``{"messages": [{"role": ..., "content": ...}, ...]}`` — an optional ``system`` message first,
  then ``user`` and ``assistant`` turns alternating, starting with ``user`` and ending with the ``assistant``
  reply the model learns.
* preference: ``{"prompt": [messages...], "chosen": str, "rejected": str}`` — ``prompt`` is a conversation
  (optional system first, alternating turns, ending with ``user``); ``chosen`` and ``rejected`` are the texts
  of the preferred and the dispreferred assistant reply. Keeping the replies as plain text makes "the same
  prompt, two answers" explicit and lets a trainer wrap them as assistant messages (``to_trl_record``).

A problem with one row raises ``RowProblem`` (the validator turns it into a row-level error); a problem with the
whole file (no known format) raises ``ValidationError``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from studio.errors import ValidationError

DatasetFormat = Literal["messages", "prompt_completion", "alpaca", "sharegpt", "preference"]
DatasetKind = Literal["supervised", "preference"]
FORMATS: tuple[str, ...] = get_args(DatasetFormat)
KINDS: tuple[str, ...] = get_args(DatasetKind)
FORMAT_KIND: dict[str, DatasetKind] = {
    "messages": "supervised",
    "prompt_completion": "supervised",
    "alpaca": "supervised",
    "sharegpt": "supervised",
    "preference": "preference",
}
FORMAT_LABELS: dict[str, str] = {
    "messages": "Chat messages",
    "prompt_completion": "Prompt / completion",
    "alpaca": "Instruction / input / output (Alpaca)",
    "sharegpt": "ShareGPT conversations",
    "preference": "Preference pairs (prompt / chosen / rejected)",
}
ROLES: tuple[str, ...] = ("system", "user", "assistant")
# ShareGPT speakers; "user"/"assistant" appear in many ShareGPT-style exports too
SHAREGPT_ROLES: dict[str, str] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
# the mapping fields each format reads (``system`` is optional for every format)
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "input", "output"),
    "sharegpt": ("conversations",),
    "preference": ("prompt", "chosen", "rejected"),
}
OPTIONAL_FIELDS: frozenset[str] = frozenset({"input", "system"})
# column names that are guessed for a prompt/completion file when the standard names are absent
PROMPT_SYNONYMS: tuple[str, ...] = ("prompt", "question", "query", "input")
COMPLETION_SYNONYMS: tuple[str, ...] = ("completion", "answer", "response", "output")
DETECT_SAMPLE = 200  # rows looked at to detect the format

Message = dict[str, str]


class RowProblem(ValueError):
    """One row cannot be read as the chosen format; ``field`` names the offending column or path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ColumnMapping(BaseModel):
    """Which format a file has and which of its columns play which part.

    Detection proposes one; the user may correct it (e.g. ``{"format": "prompt_completion", "prompt":
    "question", "completion": "answer"}``). Only the fields of the chosen format are read.
    """

    model_config = ConfigDict(extra="forbid")

    format: DatasetFormat = Field(description="The layout of each row: " + ", ".join(FORMATS) + ".")
    messages: str = Field(default="messages", description="Column with a list of {role, content} messages.")
    conversations: str = Field(
        default="conversations", description="Column with a ShareGPT list of {from, value} turns."
    )
    prompt: str = Field(default="prompt", description="Column with the prompt (text, or a list of messages).")
    completion: str = Field(default="completion", description="Column with the desired reply.")
    instruction: str = Field(default="instruction", description="Alpaca: column with the instruction.")
    input: str = Field(default="input", description="Alpaca: column with optional extra input for the instruction.")
    output: str = Field(default="output", description="Alpaca: column with the desired reply.")
    chosen: str = Field(default="chosen", description="Preference: column with the preferred reply.")
    rejected: str = Field(default="rejected", description="Preference: column with the dispreferred reply.")
    system: str | None = Field(default=None, description="Optional column with a per-row system prompt.")

    @property
    def kind(self) -> DatasetKind:
        """``supervised`` or ``preference``."""
        return FORMAT_KIND[self.format]

    def columns(self) -> dict[str, str]:
        """The mapping fields this format reads → the file's column names (for display)."""
        out = {name: str(getattr(self, name)) for name in FORMAT_FIELDS[self.format]}
        if self.system:
            out["system"] = self.system
        return out

    def describe(self) -> str:
        """One line for the UI, e.g. ``Prompt / completion: prompt ← question, completion ← answer``."""
        parts = [f"{field} ← {column}" for field, column in self.columns().items()]
        return f"{FORMAT_LABELS[self.format]}: {', '.join(parts)}"


# -- detection ---------------------------------------------------------------------------------------------------
def _match(keys: set[str]) -> ColumnMapping | None:
    """The format a row with these columns most plausibly has, or None."""
    system = "system" if "system" in keys else None
    if "chosen" in keys and "rejected" in keys:
        return ColumnMapping(format="preference", system=system)
    if "messages" in keys:
        return ColumnMapping(format="messages")
    if "conversations" in keys:
        return ColumnMapping(format="sharegpt")
    if "instruction" in keys and "output" in keys:
        return ColumnMapping(format="alpaca", system=system)
    prompt = next((k for k in PROMPT_SYNONYMS if k in keys), None)
    completion = next((k for k in COMPLETION_SYNONYMS if k in keys and k != prompt), None)
    if prompt and completion:
        return ColumnMapping(format="prompt_completion", prompt=prompt, completion=completion, system=system)
    return None


def detect_format(records: Sequence[Mapping[str, Any]]) -> ColumnMapping:
    """Guess the format of parsed rows from their columns (the most common match among the first rows).

    Raises ``ValidationError`` naming the columns found and the accepted formats when no row matches.
    """
    if not records:
        raise ValidationError("the file holds no rows; it needs at least one labelled example", param="file")
    votes: Counter[str] = Counter()
    first: dict[str, ColumnMapping] = {}
    for record in records[:DETECT_SAMPLE]:
        mapping = _match(set(record.keys()))
        if mapping is not None:
            key = mapping.model_dump_json()
            votes[key] += 1
            first.setdefault(key, mapping)
    if not votes:
        seen = sorted({str(k) for r in records[:DETECT_SAMPLE] for k in r})
        raise ValidationError(
            f"could not detect the dataset format from the columns {', '.join(seen) or '(none)'}; "
            "use one of: messages [{role, content}]; prompt + completion; instruction + input + output (alpaca); "
            "conversations [{from, value}] (ShareGPT); prompt + chosen + rejected (preference) — "
            "or give a column mapping",
            param="mapping",
        )
    return first[votes.most_common(1)[0][0]]


# -- normalisation -----------------------------------------------------------------------------------------------
def _get(record: Mapping[str, Any], column: str, field: str, *, required: bool = True) -> Any:
    if column not in record or record[column] is None:
        if required:
            raise RowProblem(column, f"column {column!r} ({field}) is missing")
        return None
    return record[column]


def _text(value: Any, where: str, *, allow_empty: bool = False) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowProblem(where, f"{where} must be text, not {_type_name(value)}")
    text = value if isinstance(value, str) else str(value)
    if not allow_empty and not text.strip():
        raise RowProblem(where, f"{where} is empty")
    if "\x00" in text:
        raise RowProblem(where, f"{where} contains a NUL character (\\x00)")
    return text


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "true/false", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _as_list(value: Any, where: str) -> list[Any]:
    # CSV cells hold text: a JSON list written into a cell is read as that list
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            raise RowProblem(where, f"{where} is text that is not a valid JSON list") from None
    if not isinstance(value, list):
        raise RowProblem(where, f"{where} must be a list of messages, not {_type_name(value)}")
    if not value:
        raise RowProblem(where, f"{where} is an empty list")
    return value


def _messages(value: Any, where: str, *, role_key: str = "role", content_key: str = "content") -> list[Message]:
    """A list of {role, content} (or ShareGPT {from, value}) dicts → canonical messages (roles unchecked)."""
    out: list[Message] = []
    for i, item in enumerate(_as_list(value, where)):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise RowProblem(
                at, f"{at} must be an object with {role_key!r} and {content_key!r}, not {_type_name(item)}"
            )
        if role_key not in item:
            raise RowProblem(f"{at}.{role_key}", f"{at} has no {role_key!r}")
        if content_key not in item:
            raise RowProblem(f"{at}.{content_key}", f"{at} has no {content_key!r}")
        raw_role = item[role_key]
        if not isinstance(raw_role, str):
            raise RowProblem(f"{at}.{role_key}", f"{at}.{role_key} must be text, not {_type_name(raw_role)}")
        if role_key == "from":
            role = SHAREGPT_ROLES.get(raw_role.strip().lower())
            if role is None:
                raise RowProblem(
                    f"{at}.from", f"{at}.from is {raw_role!r}; use one of {', '.join(sorted(set(SHAREGPT_ROLES)))}"
                )
        else:
            role = raw_role
            if role not in ROLES:
                raise RowProblem(f"{at}.role", f"{at}.role is {raw_role!r}; use one of {', '.join(ROLES)}")
        out.append({"role": role, "content": _text(item[content_key], f"{at}.{content_key}")})
    return out


def check_conversation(messages: Sequence[Message], where: str, *, ends_with: str) -> None:
    """Roles in order: an optional system message first, then user/assistant alternating from ``user``, the
    last one being ``ends_with``. Raises ``RowProblem`` naming the first message out of place."""
    if not messages:
        raise RowProblem(where, f"{where} has no messages")
    start = 1 if messages[0]["role"] == "system" else 0
    turns = messages[start:]
    for i, msg in enumerate(messages):
        if msg["role"] not in ROLES:
            raise RowProblem(
                f"{where}[{i}].role", f"{where}[{i}].role is {msg['role']!r}; use one of {', '.join(ROLES)}"
            )
        if not msg["content"].strip():
            raise RowProblem(f"{where}[{i}].content", f"{where}[{i}].content is empty")
    if not turns:
        raise RowProblem(where, f"{where} holds only a system message; it needs a user message and a reply")
    for offset, msg in enumerate(turns):
        i = start + offset
        expected = "user" if offset % 2 == 0 else "assistant"
        if msg["role"] == "system":
            raise RowProblem(f"{where}[{i}].role", f"{where}[{i}] is a system message; only the first may be system")
        if msg["role"] != expected:
            raise RowProblem(
                f"{where}[{i}].role",
                f"{where}[{i}] is a {msg['role']!r} message where a {expected!r} one belongs; after an optional "
                "system message, turns alternate user, assistant, user, ...",
            )
    if turns[-1]["role"] != ends_with:
        if ends_with == "assistant":
            raise RowProblem(where, f"{where} ends with a user message: there is no assistant reply to learn")
        raise RowProblem(where, f"{where} must end with the user message the replies answer")


def _with_system(record: Mapping[str, Any], mapping: ColumnMapping, messages: list[Message]) -> list[Message]:
    if not mapping.system:
        return messages
    value = record.get(mapping.system)
    if value is None or (isinstance(value, str) and not value.strip()):
        return messages
    text = _text(value, mapping.system)
    if messages and messages[0]["role"] == "system":
        raise RowProblem(mapping.system, f"column {mapping.system!r} gives a system prompt but the row already has one")
    return [{"role": "system", "content": text}, *messages]


def _prompt_messages(value: Any, where: str) -> list[Message]:
    if isinstance(value, list):
        return _messages(value, where)
    return [{"role": "user", "content": _text(value, where)}]


def _reply(value: Any, where: str) -> tuple[str, list[Message]]:
    """A preference reply: text, or a message list whose last message is the assistant's reply (earlier
    messages, if any, are an implicit prompt)."""
    if isinstance(value, list):
        msgs = _messages(value, where)
        if msgs[-1]["role"] != "assistant":
            raise RowProblem(where, f"{where} must end with an assistant message (the reply)")
        return msgs[-1]["content"], msgs[:-1]
    return _text(value, where), []


def normalise(record: Mapping[str, Any], mapping: ColumnMapping) -> dict[str, Any]:
    """One parsed row → its canonical example (see the module docstring). Raises ``RowProblem``."""
    fmt = mapping.format
    if fmt == "messages":
        messages = _messages(_get(record, mapping.messages, "messages"), mapping.messages)
        messages = _with_system(record, mapping, messages)
        check_conversation(messages, mapping.messages, ends_with="assistant")
        return {"messages": messages}
    if fmt == "sharegpt":
        col = mapping.conversations
        messages = _messages(_get(record, col, "conversations"), col, role_key="from", content_key="value")
        messages = _with_system(record, mapping, messages)
        check_conversation(messages, col, ends_with="assistant")
        return {"messages": messages}
    if fmt == "prompt_completion":
        prompt = _prompt_messages(_get(record, mapping.prompt, "prompt"), mapping.prompt)
        completion = _text(_get(record, mapping.completion, "completion"), mapping.completion)
        messages = _with_system(record, mapping, [*prompt, {"role": "assistant", "content": completion}])
        check_conversation(messages, mapping.prompt, ends_with="assistant")
        return {"messages": messages}
    if fmt == "alpaca":
        instruction = _text(_get(record, mapping.instruction, "instruction"), mapping.instruction)
        extra = _get(record, mapping.input, "input", required=False)
        extra_text = "" if extra is None else _text(extra, mapping.input, allow_empty=True).strip()
        user = f"{instruction}\n\n{extra_text}" if extra_text else instruction
        output = _text(_get(record, mapping.output, "output"), mapping.output)
        messages = _with_system(
            record, mapping, [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
        )
        return {"messages": messages}
    # preference
    chosen, chosen_prefix = _reply(_get(record, mapping.chosen, "chosen"), mapping.chosen)
    rejected, rejected_prefix = _reply(_get(record, mapping.rejected, "rejected"), mapping.rejected)
    raw_prompt = _get(record, mapping.prompt, "prompt", required=not (chosen_prefix or rejected_prefix))
    if raw_prompt is not None:
        prompt = _prompt_messages(raw_prompt, mapping.prompt)
        for prefix, col in ((chosen_prefix, mapping.chosen), (rejected_prefix, mapping.rejected)):
            if prefix and prefix != prompt:
                raise RowProblem(col, f"{col} repeats a conversation that differs from {mapping.prompt!r}")
    else:
        if chosen_prefix != rejected_prefix:
            raise RowProblem(
                mapping.rejected, f"{mapping.chosen} and {mapping.rejected} must answer the same conversation"
            )
        prompt = chosen_prefix
    prompt = _with_system(record, mapping, prompt)
    check_conversation(prompt, mapping.prompt, ends_with="user")
    if chosen == rejected:
        raise RowProblem(mapping.rejected, f"{mapping.chosen} and {mapping.rejected} are identical")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def check_canonical(example: Any, kind: DatasetKind) -> None:
    """Check an example already in canonical form (as producers such as edits hand them in); ``RowProblem``
    names what is wrong."""
    if not isinstance(example, Mapping):
        raise RowProblem("example", f"an example must be an object, not {_type_name(example)}")
    expected = {"messages"} if kind == "supervised" else {"prompt", "chosen", "rejected"}
    if set(example) != expected:
        raise RowProblem(
            "example",
            f"a {kind} example has exactly the keys {', '.join(sorted(expected))}; got {', '.join(sorted(example))}",
        )
    mapping = ColumnMapping(format="messages" if kind == "supervised" else "preference")
    if kind == "preference" and not isinstance(example["prompt"], list):
        raise RowProblem("prompt", "prompt must be a list of messages")
    if kind == "preference" and not (isinstance(example["chosen"], str) and isinstance(example["rejected"], str)):
        raise RowProblem("chosen", "chosen and rejected must be text")
    if normalise(example, mapping) != example:
        raise RowProblem("example", "the example is not in canonical form (only role and content per message)")


def kind_of(example: Mapping[str, Any]) -> DatasetKind:
    """The kind of a canonical example."""
    return "preference" if "chosen" in example else "supervised"


def conversation_of(example: Mapping[str, Any], which: Literal["chosen", "rejected"] = "chosen") -> list[Message]:
    """The full conversation of a canonical example (for a preference pair: prompt + the ``which`` reply)."""
    if "messages" in example:
        return list(example["messages"])
    return [*example["prompt"], {"role": "assistant", "content": example[which]}]


def to_trl_record(example: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical example in TRL's conversational shape.

    Supervised → ``{"prompt": [...], "completion": [last assistant message]}`` so that SFTTrainer masks the
    prompt from the loss; preference → ``{"prompt": [...], "chosen": [assistant msg], "rejected": [assistant msg]}``.
    """
    if "messages" in example:
        messages = list(example["messages"])
        return {"prompt": messages[:-1], "completion": messages[-1:]}
    return {
        "prompt": list(example["prompt"]),
        "chosen": [{"role": "assistant", "content": example["chosen"]}],
        "rejected": [{"role": "assistant", "content": example["rejected"]}],
    }
