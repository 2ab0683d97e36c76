"""Tie a generation's life to its HTTP client: when the client goes away, the generation is cancelled.

A streaming response notices a gone client when a write fails, and its generator's ``finally`` cancels the
handle. A non-streaming handler writes nothing until the reply is complete, so it would keep a core busy for an
abandoned request (finding 5 of issue 14: 3000 tokens, 524 s). :func:`cancel_on_disconnect` races the work
against the ASGI ``http.disconnect`` message instead; it also covers a streaming request still waiting for its
first token (a queued one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request

log = logging.getLogger(__name__)

T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    """Return when the client has gone. The body has been read already, so the next ASGI message is
    ``http.disconnect`` (servers send it when the connection closes, or once the response is complete)."""
    while True:
        try:
            message = await request.receive()
        except Exception:  # the connection broke under the server: as gone as a clean disconnect
            log.debug("receive failed while waiting for the reply", exc_info=True)
            return
        if message.get("type") == "http.disconnect":
            return


async def cancel_on_disconnect(request: Request, work: Awaitable[T], cancel: Callable[[], object]) -> T:
    """Await ``work``; if the client disconnects first (or this handler is cancelled, as at shutdown), call
    ``cancel`` -- which stops the generation -- and let ``work`` end, which it then does within a token."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            log.info("client left %s before the reply was ready: cancelling its generation", request.url.path)
            cancel()
        return await task
    finally:
        watcher.cancel()
        if not task.done():
            cancel()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
