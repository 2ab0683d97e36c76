"""What the Compare tab's panels share: the context, the contender pickers and the sampling widgets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from components.language_filter import LanguageFilter, add_language_filter
from studio.compare.battles import contender_choices, parse_tags
from studio.compare.stream import SideView
from studio.context import AppContext
from studio.inference.params import SamplingParams, make_sampling_params
from studio.models.details import DetailsCache

MAX_SIDES = 4


@dataclass
class CompareShared:
    ctx: AppContext
    temperature: gr.Slider
    max_tokens: gr.Slider
    use_case: gr.Dropdown
    tags: gr.Textbox
    pickers: list[gr.Dropdown] = field(default_factory=list)  # every contender picker, refreshed together
    filters: list[LanguageFilter] = field(default_factory=list)  # the panels' language filters, in layout order
    filter_of: dict[int, int] = field(default_factory=dict)  # id(picker) -> index of its filter in ``filters``
    cache: DetailsCache = field(default_factory=DetailsCache)  # model headers and cards, shared by the filters

    def choices(self) -> list[str]:
        return contender_choices(self.ctx.engines, self.ctx.settings)

    def language_filter(self, pickers: list[gr.Dropdown], *, elem_id: str, api_name: str, keep: int) -> LanguageFilter:
        """A "Language" dropdown beside ``pickers`` (laid out where it is called) narrowing them to the contenders
        whose model declares the chosen language."""
        flt = add_language_filter(
            self.ctx, pickers, self.choices, elem_id=elem_id, api_name=api_name, keep=keep, cache=self.cache
        )
        for picker in pickers:
            self.filter_of[id(picker)] = len(self.filters)
        self.filters.append(flt)
        return flt

    @property
    def languages(self) -> list[gr.Dropdown]:
        """The language dropdowns, in the order :meth:`refreshed_pickers` takes their values."""
        return [f.dropdown for f in self.filters]

    def refreshed_pickers(self, *languages: str | None) -> list[Any]:
        """An update per picker (``pickers`` order) offering the current contenders, each narrowed by its panel's
        language (``languages`` in :attr:`languages` order; none given: every contender)."""
        everyone = self.choices()
        out: list[Any] = []
        for picker in self.pickers:
            index = self.filter_of.get(id(picker))
            language = languages[index] if index is not None and index < len(languages) else None
            names = self.filters[index].narrow(language) if index is not None and language else everyone
            out.append(gr.update(choices=names))
        return out


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
