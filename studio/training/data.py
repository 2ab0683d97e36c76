"""Labelled examples → what ``SFTTrainer`` trains on, with the prompt masked out of the loss.

The datasets package hands us canonical examples: supervised ``{"messages": [{"role", "content"}, ...]}``
whose last message is the assistant reply, or preference ``{"prompt": [messages], "chosen", "rejected"}``
(supervised training then learns the chosen reply). Each becomes a *conversational prompt/completion* row:
``prompt`` = every message before the reply, ``completion`` = ``[the reply]``. TRL renders the prompt with
the chat template's generation prompt and the whole conversation without it; the tokens they share are the
prompt, and ``completion_only_loss`` sets their labels to -100. This needs no ``{% generation %}`` markers in
the template (SmolLM2's has none) and the reply keeps the template's own end-of-turn token, so the model
learns to stop.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from studio.errors import ValidationError

MIN_TRAIN_EXAMPLES = 1


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not all(isinstance(m, Mapping) for m in value):
        raise ValidationError(f"{where}: expected a list of {{role, content}} messages")
    out: list[dict[str, str]] = []
    for i, message in enumerate(value):
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise ValidationError(f"{where}, message {i + 1}: needs role system/user/assistant and text content")
        out.append({"role": role, "content": content})
    return out


def to_prompt_completion(example: Mapping[str, Any], index: int = 0) -> dict[str, list[dict[str, str]]]:
    """One canonical example as a conversational prompt/completion row (see the module docstring)."""
    where = f"example {index + 1}"
    if "messages" in example:
        messages = _messages(example["messages"], where)
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise ValidationError(f"{where}: needs at least one message before a final assistant reply")
        prompt, reply = messages[:-1], messages[-1]["content"]
    elif "prompt" in example and "chosen" in example:
        prompt = _messages(example["prompt"], where)
        reply = example["chosen"]
        if not prompt or not isinstance(reply, str):
            raise ValidationError(f"{where}: a preference pair needs prompt messages and a chosen reply")
    else:
        raise ValidationError(f"{where}: expected 'messages' (chat) or 'prompt'/'chosen' (preference) fields")
    if not reply.strip():
        raise ValidationError(f"{where}: the assistant reply is empty")
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": reply}]}


def split_examples(
    examples: Sequence[Mapping[str, Any]], validation_split: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Convert and split examples into (train, validation) rows, reproducibly for a given seed.

    With a split above 0 at least one example is held out (when there are two or more), and at least one
    always stays for training.
    """
    rows = [to_prompt_completion(e, i) for i, e in enumerate(examples)]
    if len(rows) < MIN_TRAIN_EXAMPLES:
        raise ValidationError("no training examples: the dataset is empty")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = 0
    if validation_split > 0 and len(rows) >= 2:
        n_eval = min(len(rows) - 1, max(1, round(len(rows) * validation_split)))
    eval_idx = set(order[:n_eval])
    train = [rows[i] for i in range(len(rows)) if i not in eval_idx]
    evaluation = [rows[i] for i in range(len(rows)) if i in eval_idx]
    return train, evaluation
