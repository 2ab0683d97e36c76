"""An LLM judge for the ``quality`` step: a model grades each row from 1 to 10 against a rubric.

The step hands every row to a *chat function* ``chat(model, prompt, max_tokens) -> reply text`` that the caller
puts in :class:`studio.curation.steps.StepContext` — :func:`engine_chat` in the UI and the CLI (the studio's
engine manager, in-process, greedy), a deterministic fake in tests. The judge's reply is read by
:func:`parse_score`: the first whole number from 1 to 10 in it, after any "1-10" / "1 to 10" scale it repeats;
a reply without one leaves the row its heuristic score (the step counts those). The row's score is then
:func:`combine`: ``(1 - w) * heuristic + w * (judge - 1) / 9``.

A judge that fails stops the whole preview or run, before anything is written, with an error naming the model and
the step field ``steps[i].judge_model``: ``ValidationError`` for what the user can fix (an unknown alias),
:class:`JudgeError` (a ``GenerationError``) for an engine or endpoint failure (a deployment that is down).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from studio.errors import GenerationError, StudioError, UserError, ValidationError

if TYPE_CHECKING:
    from studio.inference.manager import EngineManager

#: ``chat(model, prompt, max_tokens) -> reply``: how the quality step asks a judge model
JudgeChat = Callable[[str, str, int], str]

DEFAULT_RUBRIC = (
    "You are grading one example from a dataset that teaches an assistant. A good answer follows the "
    "instruction, is correct, helpful and complete, and is clear and well written. An answer that refuses, is "
    "wrong, is off-topic, repeats itself or is garbled is bad."
)

#: characters of the conversation and of the response shown to the judge (each); longer texts are cut
JUDGE_TEXT_CHARS = 6000
#: the per-row judge figures a report lists (the first rows the step was given)
LISTED_JUDGE_SCORES = 50
#: characters of a judge's raw reply a report keeps per row
REPLY_CHARS = 200

#: what a judge is sent per row; a scale and "a number only" at the end, which even the bundled 135M model follows
JUDGE_PROMPT = """{rubric}

{conversation}
Answer: {response}

On a scale from 1 to 10, how good is this answer? Reply with a number only."""

_SCALE = re.compile(r"\b(?:1|one)\s*(?:-|–|—|to|through)\s*(?:10|ten)\b", re.I)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool result"}


def _cut(text: str) -> str:
    text = text.strip()
    return text if len(text) <= JUDGE_TEXT_CHARS else text[:JUDGE_TEXT_CHARS] + " […cut]"


def _tool_calls(message: Mapping[str, Any]) -> str:
    names = [str((c.get("function") or {}).get("name") or "a tool") for c in message.get("tool_calls") or ()]
    return f"(calls {', '.join(names)})" if names else ""


def _turn(message: Mapping[str, Any]) -> str:
    role = _ROLE_NAMES.get(str(message.get("role")), str(message.get("role")))
    text = " ".join(t for t in (str(message.get("content") or "").strip(), _tool_calls(message)) if t)
    return f"{role}: {text}"


def conversation_and_response(row: Mapping[str, Any]) -> tuple[str, str]:
    """What the judge reads of a canonical row: the turns before the reply, and the reply it grades (the final
    assistant turn; a preference pair's ``chosen``; a KTO row's ``completion``)."""
    if "messages" in row:
        messages = list(row["messages"])
        last = messages[-1] if messages else {}
        if last.get("role") == "assistant":
            reply = " ".join(t for t in (str(last.get("content") or "").strip(), _tool_calls(last)) if t)
            messages = messages[:-1]
        else:
            reply = ""
    else:
        messages = list(row.get("prompt") or ())
        reply = str(row.get("chosen", row.get("completion", "")) or "")
    return _cut("\n".join(_turn(m) for m in messages)), _cut(reply)


def judge_prompt(row: Mapping[str, Any], rubric: str) -> str:
    """The prompt a judge model is sent for ``row``: the rubric, the row's conversation and response, and the
    request for a single score from 1 to 10."""
    conversation, response = conversation_and_response(row)
    return JUDGE_PROMPT.format(rubric=rubric.strip(), conversation=conversation or "User: (none)", response=response)


def parse_score(reply: str) -> int | None:
    """The first whole number from 1 to 10 in a judge's reply ("Score: 8/10" → 8), None when there is none.

    A scale the judge repeats ("on a scale of 1-10, I'd say 7") is skipped; decimals ("7.5") and numbers out of
    range ("0", "42") are passed over."""
    for match in _NUMBER.finditer(_SCALE.sub(" ", reply)):
        token = match.group(0)
        if token.isdigit() and 1 <= int(token) <= 10:
            return int(token)
    return None


def combine(heuristic: float, judge: int | None, weight: float) -> float:
    """The row's score: ``(1 - weight) * heuristic + weight * (judge - 1) / 9``, rounded to 4 places; the heuristic
    score alone when the judge gave none."""
    if judge is None:
        return heuristic
    return round((1.0 - weight) * heuristic + weight * (judge - 1) / 9, 4)


class JudgeError(GenerationError):
    """The judge model could not grade a row (an engine or endpoint error); the message names the model."""


def no_chat_error(model: str, param: str) -> ValidationError:
    """The error for a judge step run without a chat function (a caller that cannot reach models)."""
    return ValidationError(
        f"{param}: grading rows with the judge model {model!r} needs a model to chat with, and none was given; "
        "run the pipeline from the studio (the Fine-Tune tab or `studio data curate`), or clear judge_model (or set "
        "judge_weight to 0) for the heuristics alone",
        param=param,
    )


def ask(chat: JudgeChat, model: str, prompt: str, max_tokens: int, param: str) -> str:
    """``chat``'s reply, with any failure turned into an error that names the judge model and ``param`` (the step
    field ``steps[i].judge_model``): a ``ValidationError`` for what the user can fix (an unknown alias, a bad
    parameter), else :class:`JudgeError`."""
    try:
        return chat(model, prompt, max_tokens)
    except UserError as exc:
        raise ValidationError(f"{param}: the judge model {model!r} cannot be used: {exc.message}", param=param) from exc
    except StudioError as exc:
        raise JudgeError(f"{param}: the judge model {model!r} failed: {exc.message}", param=param) from exc
    except Exception as exc:
        raise JudgeError(
            f"{param}: the judge model {model!r} failed ({type(exc).__name__}: {exc})", param=param
        ) from exc


def engine_chat(engines: EngineManager, *, seed: int = 0) -> JudgeChat:
    """A judge chat function that asks a model through the studio's engine manager, in-process: any user alias,
    registry id, ``default`` or deployment alias ``deploy:<name>``; greedy (temperature 0), the step's
    ``judge_max_tokens``, the alias's other request parameters (stop strings) kept. Nothing is loaded until the
    first row is judged."""
    from studio.inference.base import ChatMessage

    def chat(model: str, prompt: str, max_tokens: int) -> str:
        params = engines.params_for(model, temperature=0.0, top_p=1.0, top_k=0, max_tokens=max_tokens, seed=seed)
        handle = engines.start_chat(model, [ChatMessage("user", prompt)], params, endpoint="curation.judge")
        return handle.wait().text

    return chat
