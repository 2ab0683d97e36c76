"""Who the current request acts as, for code deep in the core (the engine manager, the conversation store).

The REST routes set it with :func:`acting_as`; the UI layer registers a resolver (:func:`register_resolver`) that
reads the principal the front door attached to the Gradio event's request. ``None``: the single user (no users
configured) or a call from the CLI or a job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from studio.auth import Principal

_current: ContextVar[Principal | None] = ContextVar("studio_principal", default=None)
_resolvers: list[Callable[[], Principal | None]] = []


def current_principal() -> Principal | None:
    found = _current.get()
    if found is not None:
        return found
    for resolve in _resolvers:
        found = resolve()
        if found is not None:
            return found
    return None


def current_user_id() -> str | None:
    """The signed-in user's id (None: the single user, the CLI, a job)."""
    found = current_principal()
    return found.user_id if found is not None else None


@contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)


def register_resolver(resolve: Callable[[], Principal | None]) -> None:
    if resolve not in _resolvers:
        _resolvers.append(resolve)
