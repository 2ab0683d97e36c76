"""What every Playground panel shares: the model picker, the parameter widgets, the session state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from studio.context import AppContext
from studio.playground.session import PARAM_NAMES


@dataclass
class PlaygroundShared:
    """Handed to each ``create_*_panel``. ``params`` are the widgets of ``PARAM_NAMES`` in that order
    (temperature, top_p, top_k, max_tokens, repetition_penalty, frequency_penalty, presence_penalty, stop,
    seed); pass their values to ``studio.playground.session.sampling_from_form``. ``session`` is a
    ``gr.State`` holding a ``PlaygroundSession``: read it as an input, write it back as an output."""

    ctx: AppContext
    model: gr.Dropdown
    use_case: gr.Dropdown
    system_prompt: gr.Textbox
    params: list[Any]
    streaming: gr.Checkbox
    session: gr.State
    chatbot: gr.Chatbot | None = None

    @property
    def param_names(self) -> tuple[str, ...]:
        return PARAM_NAMES
