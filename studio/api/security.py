"""The studio's front door: one ASGI middleware in front of everything on the server -- the Gradio UI and its API
(every ``api_name`` and the private ``fn_index`` handlers, uploads, file and queue routes), the REST API and the
WebSocket. For each request, in this order:

1. ``Host`` must be allowed (:func:`studio.auth.host_allowed`): else 400 ``host_not_allowed``.
2. An ``Origin`` must be the studio's own or configured (:func:`studio.auth.origin_allowed`): else 403
   ``origin_not_allowed``. Configured origins get CORS headers; every other response loses any
   ``Access-Control-*`` header a framework added (CORS is off unless configured).
3. With ``STUDIO_API_KEY`` set or users configured, the request must authenticate
   (:meth:`studio.users.UserService.authenticate`): a browser asking for a page is sent to ``/login``; anything
   else gets 401 in the OpenAI error shape; a WebSocket is closed before it is accepted. ``/login``, ``/logout``
   and ``/health`` (status only) are the only open paths.
3b. The principal's role must allow the request (:mod:`studio.users.roles`): REST by method and path, a Gradio
   event by its ``api_name`` or ``fn_index`` (the permission table ``app.py`` hands in), else 403
   ``permission_error`` (a WebSocket is closed with 4403).
4. Body size: a request body over ``STUDIO_MAX_BODY_BYTES`` (uploads: ``STUDIO_MAX_UPLOAD_BYTES``) is refused
   with 413 before the application reads it -- by ``Content-Length`` at once, else while it streams in.

The login page is served here too (``GET/POST /login``, ``/logout``): the key typed once becomes a signed,
HttpOnly session cookie (:func:`studio.auth.make_session_token`), so the browser UI and its Gradio API calls carry
it; scripts send ``Authorization: Bearer <key>`` instead.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote

from studio import auth
from studio.errors import StudioError
from studio.settings import Settings
from studio.users.acting import acting_as
from studio.users.roles import WHAT, Permission, allows, rest_permission, strictest
from studio.users.service import hf_oauth_configured

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PRINCIPAL_KEY = "studio.principal"
OPEN_PATHS = frozenset({"/login", "/logout", "/health"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and form fields around the uploaded files
LOGIN_FAILURE_DELAY_S = 1.0


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def error_body(message: str, *, error_type: str, code: str, param: str | None = None) -> bytes:
    """An OpenAI-shaped error document."""
    return json.dumps({"error": {"message": message, "type": error_type, "param": param, "code": code}}).encode()


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out and name != "cookie" else value
        if name == "cookie" and name in out and out[name] != value:
            out[name] = f"{out[name]}; {value}"
    return out


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed cookie header authenticates nobody
        return {}
    return {k: morsel.value for k, morsel in jar.items()}


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    extra: Sequence[tuple[str, str]] = (),
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *((k.encode(), v.encode()) for k, v in extra),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _reject_websocket(receive: Receive, send: Send, code: int, reason: str) -> None:
    """Close a WebSocket before accepting it (the client sees the handshake refused with HTTP 403)."""
    message = await receive()
    if message.get("type") == "websocket.connect":
        await send({"type": "websocket.close", "code": code, "reason": reason[:120]})


def _safe_next(value: str | None) -> str:
    """A local path to go back to after logging in (never another site: no scheme, no ``//``, no backslash)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or "\n" in value:
        return "/"
    return value


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Whetstone Studio · log in</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f5f7;color:#1f2328;margin:0;
display:flex;min-height:100vh;align-items:center;justify-content:center}}
form{{background:#fff;padding:2rem 2.25rem;border-radius:10px;box-shadow:0 2px 14px rgba(0,0,0,.08);
width:min(360px,88vw)}}
h1{{font-size:1.25rem;margin:0 0 .25rem}} p{{color:#57606a;font-size:.9rem;margin:.25rem 0 1rem}}
label{{display:block;font-size:.85rem;margin-bottom:.35rem}}
input[type=password]{{width:100%;box-sizing:border-box;padding:.6rem .7rem;border:1px solid #c9d1d9;border-radius:6px;
font-size:1rem}}
button{{margin-top:1rem;width:100%;padding:.6rem;border:0;border-radius:6px;background:#3b5bdb;color:#fff;font-size:1rem;
cursor:pointer}}
.err{{color:#b42318;font-size:.9rem;margin-top:.75rem}}
</style></head>
<body><form method="post" action="/login" id="login-form">
<h1>Whetstone Studio</h1>{fields}
<input type="hidden" name="next" value="{next}">
<button type="submit" id="login-submit">Log in</button>
{error}
</form></body></html>
"""
KEY_FIELDS = """<p>This studio asks for its access key (<code>STUDIO_API_KEY</code>).</p>
<label for="key">Access key</label>
<input id="key" name="key" type="password" autocomplete="current-password" autofocus required>"""
USER_FIELDS = """<p>Sign in with your studio account.</p>
<label for="username">User name</label>
<input id="username" name="username" type="text" autocomplete="username" autofocus required
style="width:100%;box-sizing:border-box;padding:.6rem .7rem;border:1px solid #c9d1d9;border-radius:6px;font-size:1rem;
margin-bottom:.75rem">
<label for="key">Password</label>
<input id="key" name="password" type="password" autocomplete="current-password" required>{hf}"""
HF_LINK = """<p style="margin-top:1rem"><a id="login-hf" href="/login/huggingface">Sign in with Hugging Face</a></p>"""

GradioPermission = Callable[[str | None, int | None], Permission]
GRADIO_PREFIX = "/gradio_api"
# Gradio's POST routes that run an event (checked by its name or fn_index) or serve the page's own machinery
GRADIO_MACHINERY = frozenset(
    {
        "queue",
        "run",
        "api",
        "call",
        "cancel",
        "reset",
        "stream",
        "component_server",
        "upload",
        "process_recording",
        "run-history",
        "heartbeat",
    }
)


class SecurityMiddleware:
    """See the module docstring. ``settings`` are read once (restart to change the key or the limits)."""

    def __init__(
        self, app: ASGIApp, settings: Settings, users: Any = None, gradio_permission: GradioPermission | None = None
    ) -> None:
        self.app = app
        self.settings = settings
        self.users = users  # studio.users.UserService (None: the single-user check alone)
        self.gradio_permission = gradio_permission

    def _authenticate(self, headers: dict[str, str]) -> auth.Principal | None:
        if self.users is not None:
            return self.users.authenticate(headers, _cookies(headers))  # type: ignore[no-any-return]
        return auth.authenticate(self.settings, headers, _cookies(headers))

    @property
    def _users_on(self) -> bool:
        return self.users is not None and bool(self.users.enabled())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host = headers.get("host")
        if not auth.host_allowed(self.settings, host):
            shown = (host or "")[:100]
            message = (
                f"Host '{shown}' is not allowed; add it to STUDIO_ALLOWED_HOSTS to serve the studio under that name"
            )
            if kind == "websocket":
                await _reject_websocket(receive, send, 1008, "host not allowed")
            else:
                await _respond(
                    send, 400, error_body(message, error_type="invalid_request_error", code="host_not_allowed")
                )
            return
        origin = headers.get("origin")
        cross_origin = False
        if origin is not None:
            if not auth.origin_allowed(self.settings, origin, host):
                message = (
                    f"requests from the origin '{origin[:100]}' are not allowed; add it to STUDIO_CORS_ORIGINS to let "
                    "that site's pages call the studio"
                )
                if kind == "websocket":
                    await _reject_websocket(receive, send, 1008, "origin not allowed")
                else:
                    await _respond(
                        send, 403, error_body(message, error_type="permission_error", code="origin_not_allowed")
                    )
                return
            cross_origin = origin.rstrip("/") in self.settings.cors_origin_list
            if (
                kind == "http"
                and cross_origin
                and scope.get("method") == "OPTIONS"
                and "access-control-request-method" in headers
            ):
                await self._preflight(send, origin, headers)
                return

        path = scope.get("path", "")
        if kind == "http" and path in ("/login", "/logout"):
            await self._login_routes(scope, receive, send, headers)
            return
        if self._hf_login_path(path):
            await self.app(scope, receive, send)  # Gradio's OAuth routes (a Space with hf_oauth) sign users in
            return
        principal = await asyncio.to_thread(self._authenticate, headers)
        if principal is None and path not in OPEN_PATHS:
            await self._unauthenticated(scope, receive, send, headers)
            return
        scope[PRINCIPAL_KEY] = principal

        send = self._wrap_send(send, origin if cross_origin else None)
        body: bytes | None = None
        if kind == "http" and scope.get("method") in BODY_METHODS:
            receive_or_none = await self._limit_body(scope, receive, send, headers)
            if receive_or_none is None:
                return
            receive = receive_or_none
            body = getattr(receive, "body", None)
        if principal is not None and principal.user_id is not None and path not in OPEN_PATHS:
            needed = self._permission(scope, path, body)
            if not allows(principal.role, needed):
                await self._forbidden(scope, receive, send, principal, needed)
                return
            if needed is Permission.ADMIN and scope.get("method") not in ("GET", "HEAD"):
                await asyncio.to_thread(self._audit_admin_action, scope, principal, path, body)
        with acting_as(principal):  # the route (and the threads it starts work in) see who asks
            await self.app(scope, receive, send)

    # -- roles -----------------------------------------------------------------------------------------------
    def _audit_admin_action(self, scope: Scope, principal: auth.Principal, path: str, body: bytes | None) -> None:
        """An admin-only request (a model deleted, a policy saved, a deployment started): one audit row, written
        before it runs (``admin.<api_name>`` for a Gradio event, ``admin.<METHOD>`` with the path for REST)."""
        action, target = f"admin.{scope.get('method', '?')}", path
        name_of = getattr(self.gradio_permission, "name_of", None)
        if name_of is not None and GRADIO_PREFIX in path:
            try:
                fn_index = json.loads(body or b"{}").get("fn_index")
            except (ValueError, AttributeError):
                fn_index = None
            tail = path.split(GRADIO_PREFIX + "/", 1)[-1].split("/")
            named = tail[2] if tail[:2] == ["call", "v2"] and len(tail) > 2 else (tail[1] if len(tail) > 1 else None)
            label = name_of(fn_index) if isinstance(fn_index, int) else named
            action, target = f"admin.{label or 'gradio'}", ""
        client = scope.get("client") or ("?", 0)
        try:
            self.users.audit(principal.name, action[:48], target=target, ip=str(client[0]))
        except Exception:  # the audit must not turn an allowed request into an error
            log.exception("could not write the audit row of %s", action)

    @staticmethod
    def _hf_login_path(path: str) -> bool:
        return path in ("/login/huggingface", "/login/callback") and hf_oauth_configured()

    def _permission(self, scope: Scope, path: str, body: bytes | None) -> Permission:
        method = "WS" if scope["type"] == "websocket" else str(scope.get("method", "GET"))
        if path.startswith(("/v1/", "/api/")):
            return rest_permission(method, path)
        if self.gradio_permission is None:
            return Permission.READ if method in ("GET", "HEAD") else Permission.WRITE
        needed = [Permission.READ]
        at = path.find(GRADIO_PREFIX + "/")
        parts = path[at + len(GRADIO_PREFIX) + 1 :].split("/") if at >= 0 else []
        if len(parts) >= 2 and parts[0] in ("run", "api", "call"):  # /run|api|call/<name>, /call/v2/<name>
            name = parts[2] if parts[0] == "call" and parts[1] == "v2" and len(parts) >= 3 else parts[1]
            needed.append(self.gradio_permission(name, None))
        if method == "POST" and at >= 0:
            # Gradio runs the event a body's fn_index names, whatever the path says (queue/join, run, api)
            try:
                fn_index = json.loads(body or b"{}").get("fn_index")
            except (ValueError, AttributeError):
                fn_index = None
            if fn_index is not None:
                needed.append(self.gradio_permission(None, fn_index if isinstance(fn_index, int) else -1))
            elif path.endswith(f"{GRADIO_PREFIX}/queue/join"):
                needed.append(self.gradio_permission(None, -1))  # joins without an event: unknown, admins only
        if path.endswith(f"{GRADIO_PREFIX}/upload"):
            needed.append(Permission.CHAT)  # files for a chat or a form; the event that uses them is checked too
        elif method not in ("GET", "HEAD") and (at < 0 or not parts or parts[0] not in GRADIO_MACHINERY):
            needed.append(Permission.ADMIN)  # any other change (Gradio's vibe-edit of the app's code, ...): admins
        if len(needed) > 1:
            return strictest(*needed)
        return Permission.READ  # pages, assets, config, queue data, heartbeats, cancel: the UI's machinery

    async def _forbidden(
        self, scope: Scope, receive: Receive, send: Send, principal: auth.Principal, needed: Permission
    ) -> None:
        message = (
            f"{principal.name} is a {principal.role} and may not {WHAT[needed]} (needs the '{needed.value}' "
            "permission): ask an admin for another role"
        )
        if scope["type"] == "websocket":
            await _reject_websocket(receive, send, 4403, message)
            return
        await _respond(send, 403, error_body(message, error_type="permission_error", code="forbidden"))

    # -- authentication ------------------------------------------------------------------------------------
    async def _unauthenticated(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        if scope["type"] == "websocket":
            await _reject_websocket(receive, send, 4401, "missing or wrong API key")
            return
        if scope.get("method") in ("GET", "HEAD") and "text/html" in headers.get("accept", ""):
            target = scope.get("path", "/") + (
                f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else ""
            )
            await _respond(
                send, 303, b"", content_type="text/plain", extra=[("location", f"/login?next={quote(target)}")]
            )
            return
        body = error_body(
            "missing or wrong API key: send 'Authorization: Bearer <STUDIO_API_KEY>' (or log in at /login)",
            error_type="authentication_error",
            code="invalid_api_key",
        )
        await _respond(send, 401, body, extra=[("www-authenticate", "Bearer")])

    def _cookie_header(self, value: str, headers: dict[str, str], scope: Scope, *, max_age: int) -> tuple[str, str]:
        secure = scope.get("scheme") == "https" or headers.get("x-forwarded-proto", "") == "https"
        on_space = bool(os.environ.get("SPACE_ID"))
        # On a Space the app runs in an iframe of huggingface.co: the cookie must be sent in that (third-party)
        # context, which browsers allow only for SameSite=None; Secure.
        same_site = "None" if on_space else "Lax"
        parts = [f"{auth.SESSION_COOKIE}={value}", "Path=/", "HttpOnly", f"SameSite={same_site}", f"Max-Age={max_age}"]
        if secure or on_space:
            parts.append("Secure")
        return "set-cookie", "; ".join(parts)

    async def _login_routes(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        key = self.settings.api_key
        users_on = await asyncio.to_thread(lambda: self._users_on)
        if scope["path"] == "/logout":
            extra = [
                ("location", "/login" if key or users_on else "/"),
                self._cookie_header("", headers, scope, max_age=0),
            ]
            if hf_oauth_configured():  # forget a Hugging Face sign-in too (Gradio's OAuth session cookie)
                extra.append(("set-cookie", "session=; Path=/; Max-Age=0; HttpOnly; SameSite=None; Secure"))
            await _respond(send, 303, b"", content_type="text/plain", extra=extra)
            return
        if not key and not users_on:  # nothing to log in to
            await _respond(send, 303, b"", content_type="text/plain", extra=[("location", "/")])
            return
        fields = KEY_FIELDS
        if users_on:
            fields = USER_FIELDS.format(hf=HF_LINK if hf_oauth_configured() else "")
        method = scope.get("method")
        if method in ("GET", "HEAD"):
            page = LOGIN_PAGE.format(fields=fields, next=html.escape(_safe_next(query.get("next", ["/"])[0])), error="")
            await _respond(send, 200, page.encode(), content_type="text/html; charset=utf-8")
            return
        if method != "POST":
            await _respond(send, 405, error_body("use GET or POST", error_type="invalid_request_error", code="method"))
            return
        raw = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if len(raw) > 16 * 1024:
                await _respond(
                    send, 413, error_body("login form too large", error_type="invalid_request_error", code="too_large")
                )
                return
            if not message.get("more_body"):
                break
        form = parse_qs(raw.decode("utf-8", errors="replace"))
        target = _safe_next(form.get("next", ["/"])[0])
        if users_on:
            await self._user_sign_in(scope, send, headers, form, target, fields)
            return
        assert key is not None
        offered = form.get("key", [""])[0]
        if offered and auth.key_matches(key, offered):
            cookie = self._cookie_header(auth.make_session_token(key), headers, scope, max_age=auth.SESSION_TTL_S)
            await _respond(send, 303, b"", content_type="text/plain", extra=[("location", target), cookie])
            return
        await asyncio.sleep(LOGIN_FAILURE_DELAY_S)  # slows down guessing
        page = LOGIN_PAGE.format(
            fields=fields,
            next=html.escape(target),
            error='<div class="err" id="login-error">Wrong key. Try again.</div>',
        )
        await _respond(send, 401, page.encode(), content_type="text/html; charset=utf-8")

    async def _user_sign_in(
        self, scope: Scope, send: Send, headers: dict[str, str], form: dict[str, list[str]], target: str, fields: str
    ) -> None:
        name = form.get("username", [""])[0]
        password = form.get("password", [""])[0]
        client = scope.get("client") or ("?", 0)
        ip = str(client[0])
        users = self.users
        try:
            user = await asyncio.to_thread(users.sign_in, name, password, ip=ip)
            cookie_value = await asyncio.to_thread(users.session_cookie, user.id)
        except StudioError as exc:
            status, extra = exc.status_code, []
            if exc.status_code == 401:
                await asyncio.sleep(LOGIN_FAILURE_DELAY_S)  # slows down guessing
                shown = "Wrong user name or password. Try again."
            else:
                shown = exc.message
                retry = getattr(exc, "retry_after", None)
                if retry is not None:
                    extra.append(("retry-after", str(max(1, int(retry) + 1))))
            page = LOGIN_PAGE.format(
                fields=fields,
                next=html.escape(target),
                error=f'<div class="err" id="login-error">{html.escape(shown)}</div>',
            )
            await _respond(send, status, page.encode(), content_type="text/html; charset=utf-8", extra=extra)
            return
        cookie = self._cookie_header(cookie_value, headers, scope, max_age=auth.SESSION_TTL_S)
        await _respond(send, 303, b"", content_type="text/plain", extra=[("location", target), cookie])

    # -- CORS ------------------------------------------------------------------------------------------------
    async def _preflight(self, send: Send, origin: str, headers: dict[str, str]) -> None:
        extra = [
            ("access-control-allow-origin", origin),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS"),
            ("access-control-allow-headers", headers.get("access-control-request-headers", "")[:1000]),
            ("access-control-max-age", "600"),
            ("vary", "Origin"),
        ]
        await _respond(send, 204, b"", content_type="text/plain", extra=extra)

    @staticmethod
    def _wrap_send(send: Send, cors_origin: str | None) -> Send:
        async def wrapped(message: Message) -> None:
            if message.get("type") == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if not k.lower().startswith(b"access-control-")]
                if cors_origin is not None:
                    kept += [
                        (b"access-control-allow-origin", cors_origin.encode("latin-1")),
                        (b"access-control-allow-credentials", b"true"),
                        (b"vary", b"Origin"),
                    ]
                if not any(k.lower() == b"x-content-type-options" for k, _ in kept):
                    kept.append((b"x-content-type-options", b"nosniff"))
                message["headers"] = kept
            await send(message)

        return wrapped

    # -- body size -------------------------------------------------------------------------------------------
    async def _limit_body(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> Receive | None:
        """``receive`` to hand to the app, or None when a 413 was sent. Ordinary bodies are read here (at most the
        limit) and replayed; uploads stream through (Gradio enforces the per-file limit and deletes partial files),
        after a ``Content-Length`` check."""
        upload = headers.get("content-type", "").lower().startswith("multipart/form-data")
        if upload:
            limit, setting = self.settings.max_upload_bytes + MULTIPART_OVERHEAD, "STUDIO_MAX_UPLOAD_BYTES"
            shown = self.settings.max_upload_bytes
        else:
            limit, setting = self.settings.max_body_bytes, "STUDIO_MAX_BODY_BYTES"
            shown = limit
        too_large = error_body(
            f"request body is larger than {_human_bytes(shown)} (the limit is set by {setting})",
            error_type="invalid_request_error",
            code="request_too_large",
        )
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _respond(
                    send,
                    400,
                    error_body("Content-Length is not a number", error_type="invalid_request_error", code="bad_length"),
                )
                return None
            if declared > limit:
                await _respond(send, 413, too_large, extra=[("connection", "close")])
                return None
        if upload:
            return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _respond(send, 413, too_large, extra=[("connection", "close")])
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return _Replay(b"".join(chunks), receive)


class _Replay:
    """A ``receive`` that hands the app the body the middleware read (``.body``), then the server's own."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self.body = body
        self._receive = receive
        self._replayed = False

    async def __call__(self) -> Message:
        if not self._replayed:
            self._replayed = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        return await self._receive()  # later calls wait for the disconnect, as the server's own receive does


def principal_of(scope: Scope) -> auth.Principal | None:
    """The principal the middleware authenticated this request as (None where no check ran)."""
    value = scope.get(PRINCIPAL_KEY)
    return value if isinstance(value, auth.Principal) else None
