"""Dataset formats: detect which one a file uses, and normalise every row to one canonical form.

Accepted layouts (``DatasetFormat``), with the columns each reads by default:

===================== ================================================== ==============================
format                columns                                            also reads (when present)
===================== ================================================== ==============================
``messages``          ``messages``: [{role, content}, ...] (OpenAI)      ``system``, ``tools``
``prompt_completion`` ``prompt``, ``completion``                         ``system``
``alpaca``            ``instruction``, ``input`` (optional), ``output``  ``system``, ``history``
``sharegpt``          ``conversations``: [{from, value}, ...]            ``system``, ``tools``
``preference``        ``prompt``, ``chosen``, ``rejected`` (TRL)         ``system``
===================== ================================================== ==============================

What a row teaches (``DatasetKind``) follows LLaMA-Factory's ``dataset_info.json`` model:

* **supervised** — the default: a conversation ending with the assistant's reply.
* **preference** — ``format: preference``, or any of messages / alpaca / sharegpt with ``ranking: true``:
  the conversation (alpaca: instruction + input) is the prompt, ``chosen`` / ``rejected`` are the replies (text,
  or a message object ``{"from": "gpt", "value": ...}`` / ``{"role": "assistant", "content": ...}``).
* **kto** — a ``label`` column (LLaMA-Factory's ``kto_tag``; TRL's ``label``) of true/false per row: the last
  assistant reply is desirable (true) or undesirable (false) for the prompt before it.

Messages (roles, tool calls, tool results, content part lists): see :mod:`studio.datasets.messages`. ShareGPT's
roles human / gpt / system / function_call / observation map to user / assistant / system / an assistant tool
call / a tool result; ``tags`` name other keys and roles. Alpaca's ``history`` ([[instruction, response], ...])
becomes earlier turns and its prompt is ``instruction + "\\n" + input``, as LLaMA-Factory documents.

Canonical forms (what is stored, hashed, trained on):

* supervised: ``{"messages": [...], "tools"?: [...]}`` — an optional system message first, then user turns
  each answered by the assistant (whose tool calls are followed by the tool results), ending with the assistant.
  ``tools`` (tool definitions) is present only when the row has some.
* preference: ``{"prompt": [messages...], "chosen": str, "rejected": str}`` — the prompt ends with ``user``;
  ``chosen`` and ``rejected`` are the texts of the two replies.
* kto: ``{"prompt": [messages...], "completion": str, "label": bool}``.

Refused with a message that says why and what to do: multimodal rows (``images`` / ``videos`` / ``audios``),
plain-text pre-training rows (only ``text``), non-text content parts, and tool calls inside preference or KTO rows.

A problem with one row raises ``RowProblem`` (the validator turns it into a row-level error); a problem with the
whole file (no known format, a refused kind of data) raises ``ValidationError``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from studio.datasets import messages as msg
from studio.datasets.messages import (
    ROLES,
    Message,
    RowProblem,
    ShareGptTags,
    check_conversation,
    uses_tools,
)
from studio.errors import ValidationError

__all__ = [
    "FORMATS",
    "KINDS",
    "ROLES",
    "ColumnMapping",
    "DatasetFormat",
    "DatasetKind",
    "Message",
    "RowProblem",
    "ShareGptTags",
    "check_canonical",
    "check_conversation",
    "conversation_of",
    "detect_format",
    "kind_of",
    "normalise",
    "to_trl_record",
]

DatasetFormat = Literal["messages", "prompt_completion", "alpaca", "sharegpt", "preference"]
DatasetKind = Literal["supervised", "preference", "kto"]
FORMATS: tuple[str, ...] = get_args(DatasetFormat)
KINDS: tuple[str, ...] = get_args(DatasetKind)
FORMAT_LABELS: dict[str, str] = {
    "messages": "Chat messages (OpenAI)",
    "prompt_completion": "Prompt / completion",
    "alpaca": "Instruction / input / output (Alpaca)",
    "sharegpt": "ShareGPT conversations",
    "preference": "Preference pairs (prompt / chosen / rejected)",
}
KIND_LABELS: dict[str, str] = {
    "supervised": "supervised",
    "preference": "preference pairs",
    "kto": "KTO (a reply labelled desirable or not)",
}
# the mapping fields each format reads (the optional ones are listed by ``ColumnMapping.columns``)
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "input", "output"),
    "sharegpt": ("conversations",),
    "preference": ("prompt", "chosen", "rejected"),
}
# the column of each layout that holds the conversation, for ``ranking`` and ``label`` variants
_RANKED_FIELDS: dict[str, tuple[str, ...]] = {
    "messages": ("messages", "chosen", "rejected"),
    "sharegpt": ("conversations", "chosen", "rejected"),
    "alpaca": ("instruction", "input", "chosen", "rejected"),
}
OPTIONAL_FIELDS: frozenset[str] = frozenset({"input", "system", "history", "tools", "label"})
# column names that are guessed for a prompt/completion file when the standard names are absent
PROMPT_SYNONYMS: tuple[str, ...] = ("prompt", "question", "query", "input")
COMPLETION_SYNONYMS: tuple[str, ...] = ("completion", "answer", "response", "output")
LABEL_COLUMNS: tuple[str, ...] = ("label", "kto_tag")
TOOLS_COLUMNS: tuple[str, ...] = ("tools", "functions")
MULTIMODAL_COLUMNS: tuple[str, ...] = ("images", "videos", "audios")
DETECT_SAMPLE = 200  # rows looked at to detect the format


class ColumnMapping(BaseModel):
    """Which format a file has and which of its columns play which part.

    Detection proposes one; the user may correct it (e.g. ``{"format": "prompt_completion", "prompt":
    "question", "completion": "answer"}``), or give LLaMA-Factory's ``dataset_info.json`` entry instead (see
    :mod:`studio.datasets.dataset_info`). Only the fields of the chosen format are read; every other column of
    the file is listed in the validation report as not used.
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
    history: str | None = Field(
        default=None, description="Alpaca: optional column with earlier [instruction, response] pairs."
    )
    tools: str | None = Field(default=None, description="Optional column with the tool definitions of a row.")
    label: str | None = Field(
        default=None, description="KTO: column with true (a desirable reply) or false (an undesirable one)."
    )
    ranking: bool = Field(
        default=False,
        description="messages / sharegpt / alpaca rows with chosen and rejected replies (a preference pair).",
    )
    tags: ShareGptTags | None = Field(
        default=None, description="ShareGPT: the keys and role names of its messages (LLaMA-Factory's tags)."
    )

    @model_validator(mode="after")
    def _check_combination(self) -> ColumnMapping:
        if self.ranking and self.format not in _RANKED_FIELDS and self.format != "preference":
            raise ValueError(f"ranking (chosen/rejected replies) works with {', '.join(_RANKED_FIELDS)}")
        if self.label and (self.ranking or self.format == "preference"):
            raise ValueError("a KTO label and chosen/rejected pairs exclude each other: give one or the other")
        if self.history and self.format != "alpaca":
            raise ValueError("history is read by the alpaca format only")
        if self.tags is not None and self.format != "sharegpt":
            raise ValueError("tags are read by the sharegpt format only")
        return self

    @property
    def kind(self) -> DatasetKind:
        """``supervised``, ``preference`` or ``kto``."""
        if self.format == "preference" or self.ranking:
            return "preference"
        return "kto" if self.label else "supervised"

    def columns(self) -> dict[str, str]:
        """The mapping fields this format reads → the file's column names (for display)."""
        names = _RANKED_FIELDS[self.format] if self.ranking else FORMAT_FIELDS[self.format]
        out = {name: str(getattr(self, name)) for name in names}
        for name in ("system", "history", "tools", "label"):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out

    def used_columns(self) -> set[str]:
        """Every column this mapping reads."""
        return set(self.columns().values())

    def describe(self) -> str:
        """One line for the UI, e.g. ``Prompt / completion: prompt ← question, completion ← answer``."""
        parts = [f"{field} ← {column}" for field, column in self.columns().items()]
        return f"{FORMAT_LABELS[self.format]}: {', '.join(parts)}"


# -- detection ---------------------------------------------------------------------------------------------------
def _is_label(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("true", "false"))


def _core(keys: set[str]) -> tuple[str, ...] | None:
    """The layout of a row with these columns: ``(format, ranking)`` plus the prompt/completion columns."""
    pair = "chosen" in keys and "rejected" in keys
    if pair:
        if "prompt" in keys:
            return ("preference", "")
        if "conversations" in keys:
            return ("sharegpt", "ranking")
        if "instruction" in keys:
            return ("alpaca", "ranking")
        if "messages" in keys:
            return ("messages", "ranking")
        return ("preference", "")
    if "messages" in keys:
        return ("messages", "")
    if "conversations" in keys:
        return ("sharegpt", "")
    if "instruction" in keys and "output" in keys:
        return ("alpaca", "")
    prompt = next((k for k in PROMPT_SYNONYMS if k in keys), None)
    completion = next((k for k in COMPLETION_SYNONYMS if k in keys and k != prompt), None)
    if prompt and completion:
        return ("prompt_completion", "", prompt, completion)
    return None


def _undetected(records: Sequence[Mapping[str, Any]]) -> ValidationError:
    seen = sorted({str(k) for r in records[:DETECT_SAMPLE] for k in r})
    if "text" in seen and not _core(set(seen) - {"text"}):
        return ValidationError(
            "the rows hold plain text in a 'text' column: that is a pre-training corpus (LLaMA-Factory's "
            "pre-training format), and this studio fine-tunes on conversations only. Turn each document into an "
            "example with a prompt and the reply to learn (e.g. prompt + completion columns)",
            param="mapping",
        )
    return ValidationError(
        f"could not detect the dataset format from the columns {', '.join(seen) or '(none)'}; "
        "use one of: messages [{role, content}]; prompt + completion; instruction + input + output (alpaca); "
        "conversations [{from, value}] (ShareGPT); prompt + chosen + rejected (preference); any of these with "
        "a true/false label (KTO) — or give a column mapping (or LLaMA-Factory's dataset_info.json entry)",
        param="mapping",
    )


def refuse_unsupported(records: Sequence[Mapping[str, Any]]) -> None:
    """Refuse data the studio cannot train correctly, whatever the mapping: multimodal rows."""
    for record in records[:DETECT_SAMPLE]:
        for column in MULTIMODAL_COLUMNS:
            if record.get(column):
                raise ValidationError(
                    f"the rows have a non-empty {column!r} column: this is a multimodal dataset (LLaMA-Factory's "
                    f"multimodal {column[:-1]} format) and this studio trains text-only models, so its <"
                    f"{column[:-1]}> placeholders would be learned as plain text. Remove the {column!r} column "
                    "and the placeholders, or use a multimodal trainer",
                    param="file",
                )


def detect_format(records: Sequence[Mapping[str, Any]], fmt: str | None = None) -> ColumnMapping:
    """Guess the format of parsed rows from their columns (the most common layout among the first rows), and
    which optional columns (system prompt, history, tools, KTO label) they have. ``fmt`` restricts the guess to
    that format (the user said which; the columns are still found).

    Raises ``ValidationError`` naming the columns found and the accepted formats when no row matches, and for
    data the studio refuses (plain-text pre-training rows, multimodal rows).
    """
    if not records:
        raise ValidationError("the file holds no rows; it needs at least one labelled example", param="file")
    if fmt is not None and fmt not in FORMATS:
        raise ValidationError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}", param="format")
    refuse_unsupported(records)
    sample = records[:DETECT_SAMPLE]
    votes: Counter[tuple[str, ...]] = Counter()
    for record in sample:
        core = _core(set(record.keys()))
        if core is not None and (fmt is None or core[0] == fmt):
            votes[core] += 1
    if not votes:
        if fmt is None:
            raise _undetected(records)
        votes[(fmt, "")] += 1  # the user's format with its default columns: rows name what is missing
    core = votes.most_common(1)[0][0]
    keys = {str(k) for r in sample for k in r}
    values: dict[str, Any] = {"format": core[0], "ranking": core[1] == "ranking"}
    if core[0] == "prompt_completion" and len(core) == 4:
        values.update(prompt=core[2], completion=core[3])
    if "system" in keys:
        values["system"] = "system"
    if core[0] == "alpaca" and "history" in keys:
        values["history"] = "history"
    tools = next((c for c in TOOLS_COLUMNS if c in keys), None)
    if tools and core[0] != "preference":
        values["tools"] = tools
    label = next((c for c in LABEL_COLUMNS if c in keys and all(_is_label(r[c]) for r in sample if c in r)), None)
    if label and not values["ranking"] and core[0] != "preference":
        values["label"] = label
    return ColumnMapping.model_validate(values)


# -- normalisation -----------------------------------------------------------------------------------------------
def _get(record: Mapping[str, Any], column: str, field: str, *, required: bool = True) -> Any:
    if column not in record or record[column] is None:
        if required:
            raise RowProblem(column, f"column {column!r} ({field}) is missing")
        return None
    return record[column]


def _with_system(record: Mapping[str, Any], mapping: ColumnMapping, messages: list[Message]) -> list[Message]:
    if not mapping.system:
        return messages
    value = record.get(mapping.system)
    if value is None or (isinstance(value, str) and not value.strip()):
        return messages
    system = msg.text(value, mapping.system)
    if messages and messages[0]["role"] == "system":
        raise RowProblem(mapping.system, f"column {mapping.system!r} gives a system prompt but the row already has one")
    return [{"role": "system", "content": system}, *messages]


def _list_messages(value: Any, where: str, tags: ShareGptTags | None = None) -> list[Message]:
    items = msg.as_list(value, where)
    return [msg.message(item, f"{where}[{i}]", tags or msg.tags_for(items)) for i, item in enumerate(items)]


def _prompt_messages(value: Any, where: str) -> list[Message]:
    if isinstance(value, list) or (isinstance(value, str) and value.lstrip().startswith("[")):
        return _list_messages(value, where)
    return [{"role": "user", "content": msg.text(value, where)}]


def _reply(value: Any, where: str) -> tuple[str, list[Message]]:
    """A preference reply: text, a message object, or a message list whose last message is the assistant's reply
    (earlier messages, if any, are an implicit prompt)."""
    if isinstance(value, Mapping):
        value = [value]
    if isinstance(value, list):
        msgs = _list_messages(value, where)
        last = msgs[-1]
        if last["role"] != "assistant":
            raise RowProblem(where, f"{where} must end with an assistant message (the reply)")
        if last.get("tool_calls"):
            raise RowProblem(where, f"{where} is a tool call: preference pairs take text replies only")
        return last["content"], msgs[:-1]
    return msg.text(value, where), []


def _label(record: Mapping[str, Any], column: str) -> bool:
    value = _get(record, column, "label")
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise RowProblem(column, f"{column} must be true or false (is the reply desirable?), not {value!r}")


def _tools(record: Mapping[str, Any], mapping: ColumnMapping) -> list[dict[str, Any]]:
    if not mapping.tools:
        return []
    return msg.tools(record.get(mapping.tools), mapping.tools)


def _no_tools(conversation: Sequence[Message], defined: Sequence[Any], where: str, kind: str) -> None:
    if defined or uses_tools(conversation):
        raise RowProblem(
            where,
            f"{where} uses tools, and tool calls are trained in supervised examples only, not in {kind} rows; "
            "drop these rows or import them as a supervised dataset",
        )


def _role_key(value: Any, tags: ShareGptTags | None) -> str:
    if tags is not None:
        return tags.role_tag
    items = value if isinstance(value, list) else []
    return msg.tags_for(items).role_tag


def _conversation_from(record: Mapping[str, Any], mapping: ColumnMapping) -> tuple[list[Message], str, str]:
    """The row's conversation, the column it came from and the key its messages name their speaker with."""
    fmt = mapping.format
    if fmt == "messages":
        value = _get(record, mapping.messages, "messages")
        conversation = _with_system(record, mapping, _list_messages(value, mapping.messages))
        return conversation, mapping.messages, _role_key(value, None)
    if fmt == "sharegpt":
        col = mapping.conversations
        value = _get(record, col, "conversations")
        return (
            _with_system(record, mapping, _list_messages(value, col, mapping.tags)),
            col,
            _role_key(value, mapping.tags),
        )
    if fmt == "alpaca":
        turns: list[Message] = []
        if mapping.history:
            turns = _history(record.get(mapping.history), mapping.history)
        instruction = msg.text(_get(record, mapping.instruction, "instruction"), mapping.instruction)
        extra = _get(record, mapping.input, "input", required=False)
        extra_text = "" if extra is None else msg.text(extra, mapping.input, allow_empty=True)
        user = f"{instruction}\n{extra_text}" if extra_text.strip() else instruction  # LLaMA-Factory: "prompt\nquery"
        turns.append({"role": "user", "content": user})
        if not mapping.ranking:
            turns.append({"role": "assistant", "content": msg.text(_get(record, mapping.output, "output"),
                                                                   mapping.output)})  # fmt: skip
        return _with_system(record, mapping, turns), mapping.instruction, "role"
    if fmt == "prompt_completion":
        raw = _get(record, mapping.prompt, "prompt")
        prompt = _prompt_messages(raw, mapping.prompt)
        completion = msg.text(_get(record, mapping.completion, "completion"), mapping.completion)
        conversation = _with_system(record, mapping, [*prompt, {"role": "assistant", "content": completion}])
        return conversation, mapping.prompt, _role_key(raw, None)
    raise AssertionError(fmt)  # preference is read by _preference


def _history(value: Any, where: str) -> list[Message]:
    """Alpaca's history: a list of ``[instruction, response]`` pairs → earlier turns."""
    if value is None or value == [] or (isinstance(value, str) and not value.strip()):
        return []
    out: list[Message] = []
    for i, pair in enumerate(msg.as_list(value, where)):
        at = f"{where}[{i}]"
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise RowProblem(at, f"{at} must be a [instruction, response] pair, not {msg.type_name(pair)}")
        out.append({"role": "user", "content": msg.text(pair[0], f"{at}[0]")})
        out.append({"role": "assistant", "content": msg.text(pair[1], f"{at}[1]")})
    return out


def _preference(record: Mapping[str, Any], mapping: ColumnMapping) -> dict[str, Any]:
    chosen, chosen_prefix = _reply(_get(record, mapping.chosen, "chosen"), mapping.chosen)
    rejected, rejected_prefix = _reply(_get(record, mapping.rejected, "rejected"), mapping.rejected)
    role_key = "role"
    if mapping.ranking:
        prompt, where, role_key = _conversation_from(record, mapping)
        for prefix, col in ((chosen_prefix, mapping.chosen), (rejected_prefix, mapping.rejected)):
            if prefix:
                raise RowProblem(col, f"{col} must be one reply (text or one message), not a conversation")
    else:
        where = mapping.prompt
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
    _no_tools(prompt, _tools(record, mapping), where, "preference")
    check_conversation(prompt, where, ends_with="user", role_key=role_key)
    if chosen == rejected:
        raise RowProblem(mapping.rejected, f"{mapping.chosen} and {mapping.rejected} are identical")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def normalise(record: Mapping[str, Any], mapping: ColumnMapping) -> dict[str, Any]:
    """One parsed row → its canonical example (see the module docstring). Raises ``RowProblem``."""
    if mapping.kind == "preference":
        return _preference(record, mapping)
    conversation, where, role_key = _conversation_from(record, mapping)
    check_conversation(conversation, where, ends_with="assistant", role_key=role_key)
    defined = _tools(record, mapping)
    if mapping.label:
        label = _label(record, mapping.label)
        _no_tools(conversation, defined, where, "KTO")
        if conversation[-1].get("weight") == 0:
            raise RowProblem(where, f"{where}: the labelled reply has weight 0")
        return {"prompt": conversation[:-1], "completion": conversation[-1]["content"], "label": label}
    example: dict[str, Any] = {"messages": conversation}
    if defined:
        example["tools"] = defined
    return example


# -- canonical examples ------------------------------------------------------------------------------------------
_CANONICAL_KEYS: dict[str, tuple[set[str], ...]] = {
    "supervised": ({"messages"}, {"messages", "tools"}),
    "preference": ({"prompt", "chosen", "rejected"},),
    "kto": ({"prompt", "completion", "label"},),
}


def check_canonical(example: Any, kind: DatasetKind) -> None:
    """Check an example already in canonical form (as producers such as edits hand them in); ``RowProblem``
    names what is wrong."""
    if not isinstance(example, Mapping):
        raise RowProblem("example", f"an example must be an object, not {msg.type_name(example)}")
    allowed = _CANONICAL_KEYS[kind]
    if set(example) not in allowed:
        expected = " or ".join(", ".join(sorted(keys)) for keys in allowed)
        raise RowProblem(
            "example",
            f"a {kind} example has exactly the keys {expected}; got {', '.join(sorted(example))}",
        )
    if kind == "supervised":
        mapping = ColumnMapping(format="messages", tools="tools")
    elif kind == "preference":
        mapping = ColumnMapping(format="preference")
    else:
        mapping = ColumnMapping(format="prompt_completion", label="label")
    if kind != "supervised" and not isinstance(example["prompt"], list):
        raise RowProblem("prompt", "prompt must be a list of messages")
    if kind == "preference" and not (isinstance(example["chosen"], str) and isinstance(example["rejected"], str)):
        raise RowProblem("chosen", "chosen and rejected must be text")
    if kind == "kto" and not (isinstance(example["completion"], str) and isinstance(example["label"], bool)):
        raise RowProblem("completion", "completion must be text and label true or false")
    if normalise(example, mapping) != example:
        raise RowProblem("example", "the example is not in canonical form (only role and content per message)")


def kind_of(example: Mapping[str, Any]) -> DatasetKind:
    """The kind of a canonical example."""
    if "chosen" in example:
        return "preference"
    return "kto" if "label" in example else "supervised"


def conversation_of(example: Mapping[str, Any], which: Literal["chosen", "rejected"] = "chosen") -> list[Message]:
    """The full conversation of a canonical example (for a preference pair: prompt + the ``which`` reply; for a
    KTO example: prompt + its reply)."""
    if "messages" in example:
        return list(example["messages"])
    reply = example["completion"] if "completion" in example else example[which]
    return [*example["prompt"], {"role": "assistant", "content": reply}]


def to_trl_record(example: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical example in TRL's conversational shape.

    Supervised → ``{"prompt": [...], "completion": [last assistant message]}`` (+ ``tools``); preference →
    ``{"prompt": [...], "chosen": [assistant msg], "rejected": [assistant msg]}``; KTO → ``{"prompt": [...],
    "completion": [assistant msg], "label": bool}``.
    """
    if "messages" in example:
        messages = list(example["messages"])
        row: dict[str, Any] = {"prompt": messages[:-1], "completion": messages[-1:]}
        if example.get("tools"):
            row["tools"] = list(example["tools"])
        return row
    if "label" in example:
        return {
            "prompt": list(example["prompt"]),
            "completion": [{"role": "assistant", "content": example["completion"]}],
            "label": bool(example["label"]),
        }
    return {
        "prompt": list(example["prompt"]),
        "chosen": [{"role": "assistant", "content": example["chosen"]}],
        "rejected": [{"role": "assistant", "content": example["rejected"]}],
    }
