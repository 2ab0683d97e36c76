"""Per-browser Playground state (kept in a ``gr.State``) and the form → SamplingParams mapping shared by
every Playground panel."""

from __future__ import annotations

from dataclasses import dataclass, field

from studio.errors import StudioError
from studio.inference.base import ChatMessage, TokenEvent
from studio.inference.params import SamplingParams, make_sampling_params
from studio.playground.chat import parse_seed, parse_stop_sequences
from studio.playground.prompts import use_case
from studio.settings import load_defaults

PARAM_NAMES = (
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "seed",
)


@dataclass
class PlaygroundSession:
    """What one browser session's Playground remembers between events.

    ``messages``/``prompt_text`` and ``tokens`` describe the last reply (chat or raw prompt), so the token
    view and the attention view can analyse it; ``conversation_id`` is the active saved conversation."""

    model: str | None = None
    messages: list[ChatMessage] | None = None
    prompt_text: str | None = None
    tokens: list[TokenEvent] = field(default_factory=list)
    reply: str = ""
    conversation_id: str | None = None
    use_case: str | None = None

    def remember_reply(
        self,
        model: str,
        tokens: list[TokenEvent],
        reply: str,
        *,
        messages: list[ChatMessage] | None = None,
        prompt_text: str | None = None,
    ) -> None:
        self.model, self.tokens, self.reply = model, list(tokens), reply
        self.messages, self.prompt_text = messages, prompt_text


def sampling_from_form(
    temperature: float,
    top_p: float,
    top_k: float,
    max_tokens: float,
    repetition_penalty: float,
    frequency_penalty: float | None,
    presence_penalty: float | None,
    stop: str | None,
    seed: float | None,
    *,
    logprobs: bool = True,
    top_logprobs: int = 5,
) -> SamplingParams:
    """The Playground's parameter widgets as SamplingParams (errors name the field). Log probabilities with
    the top-5 alternatives are always collected: the token view shows them."""
    return make_sampling_params(
        temperature=temperature,
        top_p=top_p,
        top_k=int(top_k),
        max_tokens=int(max_tokens),
        repetition_penalty=repetition_penalty,
        frequency_penalty=frequency_penalty or 0.0,
        presence_penalty=presence_penalty or 0.0,
        stop=parse_stop_sequences(stop),
        seed=parse_seed(seed),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def default_system_prompt() -> str:
    """The system prompt the Playground starts with (``playground.system_prompt`` in configs/defaults.yaml; empty:
    the model's chat template supplies its own)."""
    return str(load_defaults().get("playground", {}).get("system_prompt", "") or "")


@dataclass(frozen=True)
class UseCaseFields:
    """The use case part of the Playground's form: the use case picked (its name labels saved conversations;
    "" = none) and the system prompt."""

    use_case: str
    system_prompt: str


def use_case_after_model_pick(use_case_name: str | None, system_prompt: str | None) -> UseCaseFields:
    """The use case fields once a person picks another model or alias: the picked model's own parameters
    replace the use case's suggestions, so the use case no longer describes the form and its label is cleared;
    its system prompt goes back to the studio's default too. A system prompt the person wrote (anything other than
    the use case's suggestion) is theirs and is kept."""
    current = system_prompt or ""
    if not use_case_name:
        return UseCaseFields("", current)
    try:
        suggested = use_case(use_case_name).system_prompt
    except StudioError:  # a name no longer in configs/use_cases.yaml: nothing of it to take back
        return UseCaseFields("", current)
    return UseCaseFields("", default_system_prompt() if current.strip() == suggested.strip() else current)
