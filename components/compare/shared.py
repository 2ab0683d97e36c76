"""What the Compare tab's panels share: the context, the contender pickers and the sampling widgets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from studio.compare.battles import contender_choices, parse_tags
from studio.compare.stream import SideView
from studio.context import AppContext
from studio.inference.params import SamplingParams, make_sampling_params

MAX_SIDES = 4


@dataclass
class CompareShared:
    ctx: AppContext
    temperature: gr.Slider
    max_tokens: gr.Slider
    use_case: gr.Dropdown
    tags: gr.Textbox
    pickers: list[gr.Dropdown] = field(default_factory=list)  # every contender picker, refreshed together

    def choices(self) -> list[str]:
        return contender_choices(self.ctx.engines, self.ctx.settings)


def sampling(temperature: float | None, max_tokens: float | None) -> SamplingParams:
    """The form's two sampling fields as typed parameters (everything else: studio defaults)."""
    return make_sampling_params(temperature=temperature, max_tokens=int(max_tokens) if max_tokens is not None else None)


def labels(use_case: str | None, tags: str | None) -> tuple[str | None, list[str]]:
    return (use_case or None), parse_tags(tags or "")


def chat_of(prompt_messages: list[dict[str, str]], view: SideView | None) -> list[dict[str, Any]]:
    """A chatbot value: the messages so far plus the reply being streamed."""
    out: list[dict[str, Any]] = [m for m in prompt_messages if m["role"] != "system"]
    if view is not None:
        out.append({"role": "assistant", "content": view.text or ("Error: " + view.error if view.error else "…")})
    return out


def stats_of(view: SideView | None) -> str:
    if view is None:
        return ""
    return f"Error: {view.error}" if view.error else view.stats_text
