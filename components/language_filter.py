"""The "Language" dropdown beside a model picker (Playground, Compare, the Fine-Tune wizard): "any", then every
language the picker's models declare ("hi — Hindi"); choosing one narrows the picker to the models that declare it
(:func:`studio.models.languages.filter_by_language`). Models whose files name no language are listed under "any"
only. Wiring only; the core is ``studio.models.languages``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from components.common import handle_errors
from studio.context import AppContext
from studio.models.details import DetailsCache
from studio.models.languages import (
    ANY,
    check_language,
    filter_by_language,
    language_choices,
    language_label,
    model_languages,
)

LANGUAGE_INFO = "Only models whose card declares it; 'any': every model."


@dataclass
class LanguageFilter:
    """One language dropdown and what its picker offers unfiltered (``names``: read again on every use)."""

    ctx: AppContext
    names: Callable[[], list[str]]
    dropdown: Any = None  # the gr.Dropdown, set by add_language_filter
    cache: DetailsCache = field(default_factory=DetailsCache)  # model headers and cards, read again when changed

    def languages(self) -> dict[str, list[str]]:
        """Picker name -> the languages its model declares."""
        return model_languages(self.ctx.engines.resolver, self.cache)

    def choices(self) -> list[tuple[str, str]]:
        """The dropdown's choices for the models the picker offers now."""
        return language_choices(self.names(), self.languages())

    def narrow(self, language: str | None) -> list[str]:
        """The picker's names whose model declares ``language`` (every name for "any")."""
        return filter_by_language(self.names(), language, self.languages())

    def refreshed(self, language: str | None) -> tuple[Any, str]:
        """The dropdown with the current models' languages, and the language it now holds (the choice is kept
        while a model still declares it, else it goes back to "any")."""
        choices = self.choices()
        value = language if language and language in {v for _label, v in choices} else ANY
        return gr.Dropdown(choices=choices, value=value), value


def _pick(current: Any, names: list[str], taken: list[str], keep: int) -> Any:
    """The picker's value among ``names``: what it holds where still offered; otherwise the first names not taken
    by an earlier picker (``keep`` of them for a multi-select); nothing offered keeps it as it is."""
    if not names:
        return current
    if isinstance(current, list):
        kept = [v for v in current if v in names]
        for name in names:
            if len(kept) >= keep:
                break
            if name not in kept:
                kept.append(name)
        return kept
    if current in names:
        return current
    return next((n for n in names if n not in taken), names[0])


def add_language_filter(
    ctx: AppContext,
    pickers: Sequence[Any],
    names: Callable[[], list[str]],
    *,
    elem_id: str,
    api_name: str,
    keep: int = 1,
    scale: int = 1,
    cache: DetailsCache | None = None,
) -> LanguageFilter:
    """Lay out a "Language" dropdown where it is called (beside the picker) and wire it: choosing a language
    narrows every picker in ``pickers`` to the names in ``names()`` whose model declares it (event ``api_name``,
    inputs: language and each picker's value; outputs: each picker). A picker keeps its value while that model
    is still offered; a multi-select picker is filled up to ``keep`` values. When no model declares the language
    the pickers offer nothing (their values stay) and a warning says so. Filters of one tab share ``cache``."""
    flt = LanguageFilter(ctx, names, cache=cache or DetailsCache())
    flt.dropdown = gr.Dropdown(
        flt.choices(),
        value=ANY,
        label="Language",
        info=LANGUAGE_INFO,
        allow_custom_value=True,  # a language code typed or sent by a script, declared by a model added since
        elem_id=elem_id,
        scale=scale,
        min_width=160,
    )

    @handle_errors
    def filter_models(language: str | None, *current: Any) -> Any:
        """The pickers narrowed to the models that declare ``language`` ("any": every model)."""
        code = check_language(language)
        offered = flt.narrow(code)
        if code != ANY and not offered:
            gr.Warning(
                f"No model here declares {language_label(code)}; models whose files name no language are listed "
                f"under '{ANY}'."
            )
        taken: list[str] = []
        updates = []
        for value in current:
            picked = _pick(value, offered, taken, keep)
            taken += picked if isinstance(picked, list) else [picked]
            updates.append(gr.Dropdown(choices=offered, value=picked))
        return updates[0] if len(updates) == 1 else updates

    flt.dropdown.input(filter_models, [flt.dropdown, *pickers], list(pickers), api_name=api_name)
    return flt
