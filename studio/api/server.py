"""The FastAPI application: REST routes, OpenAI-shaped errors, optional bearer key. Gradio is mounted
onto it by ``app.py`` (the core never imports gradio)."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection

from studio import __version__
from studio.context import AppContext
from studio.errors import AuthenticationError, StudioError


def _require_key(request: HTTPConnection) -> None:
    key = request.app.state.ctx.settings.api_key
    if not key:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), key):
        raise AuthenticationError("missing or wrong API key: send 'Authorization: Bearer <STUDIO_API_KEY>'")


def _require_key_http(conn: HTTPConnection) -> None:
    if conn.scope["type"] == "http":  # WebSocket handlers check the key themselves
        _require_key(conn)


def _validation_param(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
    # drop pydantic's union-branch names such as 'str' / 'list[str]'
    loc = [p for p in loc if not (p.startswith(("list[", "str", "int", "float")) or p[:1].isupper())]
    return ".".join(loc) or "body"


def create_api(ctx: AppContext) -> FastAPI:
    """FastAPI app carrying ``ctx`` in ``app.state.ctx`` with every REST route mounted."""
    from studio.api.conversation_routes import router as conversation_router
    from studio.api.inference_routes import router as inference_router
    from studio.api.openai_routes import router as openai_router

    app = FastAPI(
        title="Whetstone Studio API",
        version=__version__,
        description="OpenAI-compatible inference (`/v1`) and studio operations (`/api`).",
    )
    app.state.ctx = ctx

    @app.exception_handler(StudioError)
    async def _studio_error(_request: Request, exc: StudioError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
        return JSONResponse(exc.to_openai(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _request_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {}
        param = _validation_param(err)
        msg = str(err.get("msg", "invalid request"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown parameter (not supported)"
        elif err.get("type") == "missing":
            msg = "field required"
        return JSONResponse(
            {
                "error": {
                    "message": f"Invalid value for '{param}': {msg}",
                    "type": "invalid_request_error",
                    "param": param,
                    "code": None,
                }
            },
            status_code=400,
        )

    app.include_router(openai_router, dependencies=[Depends(_require_key)])
    # The WebSocket in inference_router checks the key itself (HTTP dependencies do not run for WebSockets).
    app.include_router(inference_router, dependencies=[Depends(_require_key_http)])
    app.include_router(conversation_router, dependencies=[Depends(_require_key_http)])

    @app.get("/health", tags=["studio"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "loaded": [i.model_id for i in ctx.engines.loaded()]}

    return app
