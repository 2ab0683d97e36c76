"""Labelled examples → what the trainers train on, with only the assistant's parts in the loss.

The datasets package hands us canonical examples (:mod:`studio.datasets.formats`): supervised ``{"messages":
[...], "tools"?: [...]}``, preference ``{"prompt", "chosen", "rejected"}`` or KTO ``{"prompt", "completion",
"label"}``.

**Supervised methods** (lora, qlora, prefix, adapter, full; SFTTrainer). Each example becomes a row
``{"prompt": [messages before the last reply], "completion": [the last reply], "tools"?: [...]}`` (a preference
pair: its chosen reply). :func:`tokenize_row` renders the whole conversation with the base model's chat template
— the tool definitions, the assistant's tool calls and the tool results included, exactly as the template
writes them — and marks as learned the tokens of **every assistant message** (its tool calls and its end-of-turn
token too): the span between the conversation up to that message rendered *with* the generation prompt and
rendered *with* the message. System, user and tool-result tokens are context only. That is what LLaMA-Factory
and OpenAI fine-tuning do (an earlier reply or tool call is learned as well as the last one; OpenAI's
``weight: 0`` leaves a message out), and it needs no ``{% generation %}`` markers in the template (SmolLM2's has
none). TRL receives the tokenised rows with their ``completion_mask`` and sets every other label to -100.

A chat template that drops tools (SmolLM2's renders neither tool definitions nor tool calls) would train a
conversation with its tool parts silently missing: :func:`check_template_renders` refuses that, naming what the
template leaves out.

**KTO** (method ``kto``; KTOTrainer): each KTO example becomes ``{"prompt", "completion": [reply], "label"}``;
a preference pair becomes two — its chosen reply desirable, its rejected reply undesirable (TRL's
``unpair_preference_dataset``). Supervised examples have no label and are refused.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from studio.errors import ValidationError

log = logging.getLogger(__name__)

MIN_TRAIN_EXAMPLES = 1
ROLES = ("system", "user", "assistant", "tool")
#: names no real tool has: found in a rendered probe conversation only if the template writes that part
_PROBE_TOOL = "whetstone_probe_tool_7f3a"
_PROBE_CALL = "whetstone_probe_call_9c21"
_PROBE_RESULT = "whetstone_probe_result_5e1d"


def _messages(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(m, Mapping) for m in value):
        raise ValidationError(f"{where}: expected a list of {{role, content}} messages")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(value):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise ValidationError(f"{where}, message {i + 1}: needs role system/user/assistant/tool and text content")
        out.append(dict(message))
    return out


def _reply(message: Mapping[str, Any]) -> bool:
    """Whether an assistant message says or calls something."""
    return bool(str(message.get("content", "")).strip() or message.get("tool_calls"))


def to_prompt_completion(example: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
    """One canonical example as a conversational prompt/completion row (see the module docstring)."""
    where = f"example {index + 1}"
    if "label" in example:
        raise ValidationError(
            f"{where} is a KTO example (a reply labelled desirable or undesirable): train it with method kto, "
            "or import the desirable replies as a supervised dataset",
            param="dataset",
        )
    if "messages" in example:
        messages = _messages(example["messages"], where)
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise ValidationError(f"{where}: needs at least one message before a final assistant reply")
        prompt, last = messages[:-1], messages[-1]
    elif "prompt" in example and "chosen" in example:
        prompt = _messages(example["prompt"], where)
        if not prompt or not isinstance(example["chosen"], str):
            raise ValidationError(f"{where}: a preference pair needs prompt messages and a chosen reply")
        last = {"role": "assistant", "content": example["chosen"]}
    else:
        raise ValidationError(f"{where}: expected 'messages' (chat) or 'prompt'/'chosen' (preference) fields")
    if not _reply(last):
        raise ValidationError(f"{where}: the assistant reply is empty")
    row: dict[str, Any] = {"prompt": prompt, "completion": [last]}
    if example.get("tools"):
        row["tools"] = list(example["tools"])
    return row


def to_kto_rows(example: Mapping[str, Any], index: int = 0) -> list[dict[str, Any]]:
    """One canonical example as KTO rows: a KTO example → one; a preference pair → chosen (true) and rejected
    (false); a supervised example → ``ValidationError`` (it has no label)."""
    where = f"example {index + 1}"
    if "label" in example:
        prompt = _messages(example["prompt"], where)
        replies = [(str(example["completion"]), bool(example["label"]))]
    elif "chosen" in example:
        prompt = _messages(example["prompt"], where)
        replies = [(str(example["chosen"]), True), (str(example["rejected"]), False)]
    else:
        raise ValidationError(
            f"{where} is a supervised example without a label: method kto needs replies labelled desirable or "
            "undesirable (a KTO dataset with a true/false label column, or preference pairs)",
            param="dataset",
        )
    return [
        {"prompt": prompt, "completion": [{"role": "assistant", "content": text}], "label": label}
        for text, label in replies
    ]


def check_method_fits(method: str, kind: str, dataset: str) -> None:
    """Refuse a dataset kind the method cannot train (``dataset`` names it in the message)."""
    if method == "kto" and kind not in ("kto", "preference"):
        raise ValidationError(
            f"{dataset} holds {kind} examples; method kto needs replies labelled desirable or undesirable: a KTO "
            "dataset (a true/false label per row) or preference pairs — or choose another method",
            param="dataset",
        )
    if method != "kto" and kind == "kto":
        raise ValidationError(
            f"{dataset} holds KTO examples (replies labelled desirable or undesirable): train it with method kto",
            param="method",
        )


def split_examples(
    examples: Sequence[Mapping[str, Any]], validation_split: float, seed: int, *, kto: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Convert and split examples into (train, validation) rows, reproducibly for a given seed.

    With a split above 0 at least one example is held out (when there are two or more), and at least one
    always stays for training. ``kto`` makes KTO rows (:func:`to_kto_rows`; both rows of a preference pair stay
    on the same side, and the training rows are shuffled, since KTOTrainer reads them in order).
    """
    converted = [to_kto_rows(e, i) if kto else [to_prompt_completion(e, i)] for i, e in enumerate(examples)]
    if len(converted) < MIN_TRAIN_EXAMPLES:
        raise ValidationError("no training examples: the dataset is empty")
    order = list(range(len(converted)))
    random.Random(seed).shuffle(order)
    n_eval = 0
    if validation_split > 0 and len(converted) >= 2:
        n_eval = min(len(converted) - 1, max(1, round(len(converted) * validation_split)))
    eval_idx = set(order[:n_eval])
    train = [row for i in range(len(converted)) if i not in eval_idx for row in converted[i]]
    evaluation = [row for i in range(len(converted)) if i in eval_idx for row in converted[i]]
    if kto:
        random.Random(seed).shuffle(train)
        labels = {row["label"] for row in train}
        if len(labels) < 2:
            which = "desirable" if True in labels else "undesirable"
            log.warning("every KTO training row is %s; KTO learns best from both kinds", which)
    return train, evaluation


# -- rendering with the chat template -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenisedRow:
    """A conversation rendered with the chat template: its text, token ids and which tokens are learned."""

    text: str
    input_ids: list[int]
    completion_mask: list[int]

    def learned_text(self, tokenizer: Any) -> list[str]:
        """The learned spans, each decoded (one per assistant message)."""
        spans: list[list[int]] = []
        previous = 0
        for token, bit in zip(self.input_ids, self.completion_mask, strict=True):
            if bit and not previous:
                spans.append([])
            if bit:
                spans[-1].append(token)
            previous = bit
        return [tokenizer.decode(span) for span in spans]


def render(tokenizer: Any, messages: Sequence[Mapping[str, Any]], tools: Any = None, *, generation: bool) -> str:
    """The chat template's text for ``messages`` (with the tool definitions when given)."""
    kwargs: dict[str, Any] = {"tools": tools} if tools else {}
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation, **kwargs)
    return str(text)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_row(tokenizer: Any, row: Mapping[str, Any]) -> TokenisedRow:
    """A prompt/completion row (or ``{"messages": ...}``) rendered with the chat template, every assistant
    message's tokens marked learned (see the module docstring)."""
    messages = list(row["messages"]) if "messages" in row else [*row["prompt"], *row["completion"]]
    tools = row.get("tools") or None
    text = render(tokenizer, messages, tools, generation=False)
    full = _ids(tokenizer, text)
    mask = [0] * len(full)
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight") == 0:
            continue
        before = _ids(tokenizer, render(tokenizer, messages[:i], tools, generation=True))
        upto = _ids(tokenizer, render(tokenizer, messages[: i + 1], tools, generation=False))
        start, end = _common_prefix(before, full), _common_prefix(upto, full)
        if start < len(before) or end < len(upto):
            log.warning(
                "the chat template of %s renders a conversation's start differently from the whole conversation; "
                "the learned tokens start where the two renderings differ",
                getattr(tokenizer, "name_or_path", "the model"),
            )
        for j in range(start, end):
            mask[j] = 1
    return TokenisedRow(text, full, mask)


def tokenize_rows(tokenizer: Any, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, list[int]]]:
    """Rows as TRL's pre-tokenised form: ``input_ids`` and ``completion_mask`` (1 = learned)."""
    out = []
    for row in rows:
        done = tokenize_row(tokenizer, row)
        out.append({"input_ids": done.input_ids, "completion_mask": done.completion_mask})
    return out


def check_template_renders(tokenizer: Any, rows: Sequence[Mapping[str, Any]], model: str = "the base model") -> None:
    """Refuse to train tool-using rows with a chat template that leaves their tool parts out of the text.

    Probes the template with a conversation holding a tool definition, a tool call and a tool result under names no
    real tool has; a part the rows use whose name is missing from the rendering is a ``ValidationError`` that says
    which part, how many rows use it and what to do.
    """
    messages_of = [[*r.get("prompt", ()), *r.get("completion", ()), *r.get("messages", ())] for r in rows]
    needs = {
        "tool definitions": sum(1 for r in rows if r.get("tools")),
        "tool calls": sum(1 for ms in messages_of if any(m.get("tool_calls") for m in ms)),
        "tool results": sum(1 for ms in messages_of if any(m["role"] == "tool" for m in ms)),
    }
    if not any(needs.values()):
        return
    probe_tools = [{"type": "function", "function": {"name": _PROBE_TOOL, "description": "probe", "parameters": {
        "type": "object", "properties": {}}}}]  # fmt: skip
    call = {"type": "function", "function": {"name": _PROBE_CALL, "arguments": {}}}
    probe: list[dict[str, Any]] = [
        {"role": "user", "content": "probe"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": _PROBE_RESULT},
        {"role": "assistant", "content": "probe"},
    ]
    try:
        text = render(tokenizer, probe, probe_tools, generation=False)
    except Exception as exc:  # a template that raises on tools cannot train them either
        text = f"<the template raised {type(exc).__name__}: {exc}>"
    markers = {"tool definitions": _PROBE_TOOL, "tool calls": _PROBE_CALL, "tool results": _PROBE_RESULT}
    missing = [part for part, n in needs.items() if n and markers[part] not in text]
    if missing:
        counts = "; ".join(f"{p} in {needs[p]} example{'s' if needs[p] != 1 else ''}" for p in missing)
        raise ValidationError(
            f"the chat template of {model} does not write {' or '.join(missing)} into the text ({counts}), so "
            "training would silently leave them out. Choose a base model whose chat template renders tools (e.g. a "
            "Qwen2.5 or Llama 3.1 instruct model), or drop the tool-calling examples",
            param="base_model",
        )
