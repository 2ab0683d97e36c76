"""The FastAPI application: REST routes, OpenAI-shaped errors, optional bearer key. Gradio is mounted
onto it by ``app.py`` (the core never imports gradio)."""

from __future__ import annotations

import math
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from studio import __version__
from studio.api.routing import StudioRoute, server_bug_response
from studio.api.schemas import ErrorResponse
from studio.api.security import PRINCIPAL_KEY, principal_of
from studio.auth import Principal
from studio.context import AppContext
from studio.errors import AuthenticationError, ForbiddenError, RateLimitError, StudioError
from studio.users.roles import WHAT, allows, rest_permission


def request_principal(conn: HTTPConnection) -> Principal | None:
    """Who sent the request: what the front door found, else the same check run here (the REST app alone)."""
    found = principal_of(conn.scope)
    if found is None:
        found = conn.app.state.ctx.users.authenticate(conn.headers, conn.cookies)
        if found is not None:
            conn.scope[PRINCIPAL_KEY] = found
    return found


def _require_key(request: HTTPConnection) -> None:
    """The REST routes' own check (the front-door middleware runs the same one when the full app serves): who the
    request is from, and that their role allows it."""
    principal = request_principal(request)
    if principal is None:
        raise AuthenticationError("missing or wrong API key: send 'Authorization: Bearer <STUDIO_API_KEY or token>'")
    needed = rest_permission(request.scope.get("method", "GET"), request.scope.get("path", ""))
    if not allows(principal.role, needed):
        raise ForbiddenError(
            f"{principal.name} is a {principal.role} and may not {WHAT[needed]}: ask an admin for another role",
            code="forbidden",
        )


def _require_key_http(conn: HTTPConnection) -> None:
    if conn.scope["type"] == "http":  # WebSocket handlers check the key themselves
        _require_key(conn)


def _validation_param(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
    # drop pydantic's union-branch names such as 'str' / 'list[str]'
    loc = [p for p in loc if not (p.startswith(("list[", "str", "int", "float")) or p[:1].isupper())]
    return ".".join(loc) or "body"


def _document_errors(schema: dict[str, Any]) -> None:
    """Make the OpenAPI document say what the API really answers: every 422 FastAPI lists becomes the 400 the
    handlers send, in OpenAI's error shape."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error_schema.pop("$defs", {}))
    components.setdefault("ErrorResponse", error_schema)
    bad_request = {
        "description": "Invalid request: the message names the field at fault and `param` holds it.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses") if isinstance(operation, dict) else None
            if responses is not None and responses.pop("422", None) is not None:
                responses.setdefault("400", bad_request)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)


def create_api(ctx: AppContext) -> FastAPI:
    """FastAPI app carrying ``ctx`` in ``app.state.ctx`` with every REST route mounted."""
    from studio.api.conversation_routes import router as conversation_router
    from studio.api.inference_routes import router as inference_router
    from studio.api.models_routes import router as models_router
    from studio.api.openai_routes import router as openai_router

    app = FastAPI(
        title="Whetstone Studio API",
        version=__version__,
        description="OpenAI-compatible inference (`/v1`) and studio operations (`/api`).",
    )
    app.state.ctx = ctx

    @app.exception_handler(StudioError)
    async def _studio_error(_request: Request, exc: StudioError) -> JSONResponse:
        headers: dict[str, str] = {}
        if isinstance(exc, AuthenticationError):
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, RateLimitError):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return JSONResponse(exc.to_openai(), status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _request_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {}
        param = str((err.get("ctx") or {}).get("param") or _validation_param(err))
        msg = str(err.get("msg", "invalid request"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown parameter (not supported)"
        elif err.get("type") == "missing":
            msg = "field required"
        elif err.get("type") == "json_invalid":
            param, msg = "body", f"not valid JSON ({(err.get('ctx') or {}).get('error', 'parse error')})"
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

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """FastAPI's own HTTP errors (a body that is not UTF-8, an unknown route or method) in OpenAI's shape."""
        message = str(exc.detail)
        param = None
        if exc.status_code == 400 and message == "There was an error parsing the body":
            message, param = "the request body could not be read: send JSON encoded as UTF-8", "body"
        kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
        return JSONResponse(
            {"error": {"message": message, "type": kind, "param": param, "code": None}},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    # Routes answer their own bugs (StudioRoute: the connection stays open); this is the last resort for a bug
    # outside any route, which Starlette answers from its outermost middleware before the connection closes.
    @app.exception_handler(Exception)
    async def _server_bug(request: Request, exc: Exception) -> JSONResponse:
        return server_bug_response(request, exc)

    app.router.route_class = StudioRoute  # for the routes declared on the app itself (/health)

    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document_errors(fastapi_openapi())  # FastAPI builds and caches it; the errors are fixed in place
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]

    app.include_router(openai_router, dependencies=[Depends(_require_key)])
    # The WebSocket in inference_router checks the key itself (HTTP dependencies do not run for WebSockets).
    app.include_router(inference_router, dependencies=[Depends(_require_key_http)])
    app.include_router(conversation_router, dependencies=[Depends(_require_key_http)])
    app.include_router(models_router, dependencies=[Depends(_require_key_http)])

    @app.get("/metrics", tags=["studio"], response_class=PlainTextResponse, dependencies=[Depends(_require_key)])
    def metrics() -> PlainTextResponse:
        """The studio in Prometheus' text format: generations (requests, tokens, TTFT and tok/s histograms per
        model, engine and endpoint), queue depth, loaded models, jobs by state, GPU memory. Behind the same sign-in
        as everything else: scrape with ``Authorization: Bearer <token>``."""
        from studio.monitoring.metrics import CONTENT_TYPE

        body = ctx.metrics.render() if ctx.metrics is not None else b""
        return PlainTextResponse(body, media_type=CONTENT_TYPE)

    @app.get("/health", tags=["studio"])
    def health(request: Request) -> dict[str, Any]:
        """Liveness for anyone (load balancers, Docker); version and loaded models only for authenticated callers."""
        if request_principal(request) is None:
            return {"status": "ok"}
        return {"status": "ok", "version": __version__, "loaded": [i.model_id for i in ctx.engines.loaded()]}

    return app
