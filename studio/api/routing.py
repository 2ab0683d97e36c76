"""The route class every REST route uses: an unexpected exception becomes a 500 in OpenAI's error shape.

Starlette's own catch-all (a handler registered for ``Exception``) answers from its outermost middleware and
then re-raises, and uvicorn answers a re-raise after the response by closing the connection: a keep-alive
client sees a reset after every 500 (finding 6 of issue 14). Catching here, inside the route, answers and stops.
Exceptions that have a registered handler (StudioError, validation errors, HTTPException) pass through to it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from studio.api.schemas import server_error_body

log = logging.getLogger(__name__)


def _has_handler(request: Request, exc: Exception) -> bool:
    handlers, _status = request.scope.get("starlette.exception_handlers", ({}, {}))
    return any(cls in handlers for cls in type(exc).__mro__ if cls is not Exception)


def server_bug_response(request: Request, exc: BaseException) -> JSONResponse:
    """Log ``exc`` with a reference and answer 500 with that reference only (no traceback, no paths)."""
    ref = uuid.uuid4().hex[:12]
    log.error("unhandled error on %s %s (reference %s)", request.method, request.url.path, ref, exc_info=exc)
    return JSONResponse(server_error_body(ref), status_code=500)


class StudioRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                if _has_handler(request, exc):
                    raise
                return server_bug_response(request, exc)

        return guarded
