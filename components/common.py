"""Small pieces every tab uses: the StudioError → gr.Error decorator, and the validator that shows a form's
errors next to their fields.

A user's mistake (a :class:`~studio.errors.UserError`) is shown in the user's words (``user_message``) and logged
in one line with the technical detail, without a traceback: it is not a server error. A form whose widgets map to
the schema's field names also gets a Gradio ``validator=``: it runs the same core check before the handler and
paints each error on the widget its ``param`` names (highlighted, the sentence under the label), so the outputs
keep their content instead of showing red "Error" badges.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import gradio as gr

from studio.errors import (
    PayloadTooLargeError,
    RateLimitError,
    ShuttingDownError,
    StudioError,
    UserError,
    ValidationError,
)

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)

# Toast titles for the errors a user meets under load; the message says what to do (wait N s, shorten, ...)
TITLES: dict[type[StudioError], str] = {
    RateLimitError: "Model busy",
    PayloadTooLargeError: "Too large",
    ShuttingDownError: "Shutting down",
    ValidationError: "Check the value",
}


def to_gr_error(exc: StudioError) -> gr.Error:
    """The red toast for ``exc``: its message in the user's words, under a title that says what kind of problem it
    is. Gradio prints a traceback only for server errors."""
    title = next((t for cls, t in TITLES.items() if isinstance(exc, cls)), type(exc).__name__)
    return gr.Error(exc.user_message, title=title, print_exception=not isinstance(exc, UserError))


def _shown(fn: Callable[..., Any], exc: StudioError) -> gr.Error:
    if isinstance(exc, UserError):
        log.info("%s refused: %s (param %s)", fn.__qualname__, exc.message, exc.param)
    return to_gr_error(exc)


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
                raise _shown(fn, exc) from exc

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StudioError as exc:
            raise _shown(fn, exc) from exc

    return wrapper  # type: ignore[return-value]


def form_validator(
    check: Callable[..., Iterable[StudioError] | None], fields: Sequence[str | None]
) -> Callable[..., Any]:
    """A Gradio ``validator=`` for an event whose inputs are form fields.

    ``check`` takes the event's inputs and raises a ``ValidationError`` or returns the errors found (it must not
    write anything: the handler runs after it). It must not rely on a ``gr.State`` input: with the UI mounted on
    FastAPI (``gr.mount_gradio_app``), Gradio 6.31 runs validators against another app's session store, so a
    State arrives with its initial value. ``fields`` names the schema field (the error ``param``) of each input,
    in order; None for an input that is no field. An error whose ``param`` names an input is painted on
    it in the user's words and the handler does not run; errors no input owns are left to the handler, which
    shows them as a toast.
    """
    where = {name: i for i, name in reversed(list(enumerate(fields))) if name is not None}

    def validator(*values: Any) -> Any:
        try:
            errors = list(check(*values) or [])
        except ValidationError as exc:
            errors = [exc]
        except StudioError:
            errors = []  # not about one field (a missing model file, a busy engine): the handler says it
        except Exception:  # a bug: the handler meets it again and reports it, the validator must not answer for it
            log.debug("form check failed; the handler will report it", exc_info=True)
            errors = []
        painted: dict[int, str] = {}
        for err in errors:
            if err.param in where and where[err.param] not in painted:
                painted[where[err.param]] = err.user_message
                log.info("form check refused: %s (param %s)", err.message, err.param)
        marks = [gr.validate(i not in painted, painted.get(i, "")) for i in range(len(fields))]
        return marks[0] if len(marks) == 1 else marks

    return validator


def first_cell_of_clicked_row(evt: gr.SelectData, data: Any) -> Any:
    """A ``Dataframe.select`` handler: the first cell of the clicked row (a name or an id), or no change."""
    row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
    try:
        return str(data.iloc[row, 0])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return gr.update()
