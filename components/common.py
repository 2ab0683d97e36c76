"""Small pieces every tab uses: the StudioError → gr.Error decorator."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from studio.errors import PayloadTooLargeError, RateLimitError, ShuttingDownError, StudioError

F = TypeVar("F", bound=Callable[..., Any])

# Toast titles for the errors a user meets under load; the message says what to do (wait N s, shorten, ...)
TITLES: dict[type[StudioError], str] = {
    RateLimitError: "Model busy",
    PayloadTooLargeError: "Too large",
    ShuttingDownError: "Shutting down",
}


def to_gr_error(exc: StudioError) -> gr.Error:
    """The red toast for ``exc``: its message, under a title that says what kind of problem it is."""
    title = next((t for cls, t in TITLES.items() if isinstance(exc, cls)), type(exc).__name__)
    return gr.Error(str(exc), title=title)


def handle_errors(fn: F) -> F:
    """Show a ``StudioError`` to the user as a red toast (``gr.Error``) instead of a traceback.

    Works for plain functions and for generators (streaming handlers).
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except StudioError as exc:
                raise to_gr_error(exc) from exc

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StudioError as exc:
            raise to_gr_error(exc) from exc

    return wrapper  # type: ignore[return-value]
