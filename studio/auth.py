"""Who may talk to the studio: the one authentication check every surface uses, and the host/origin rules.

When ``STUDIO_API_KEY`` is set, a request is authenticated by either

- ``Authorization: Bearer <key>`` (the openai SDK's ``api_key``, ``gradio_client``'s ``headers=``, curl), or
- the session cookie ``whetstone_session`` that the login page (``/login``) sets after the key was typed once:
  ``<issued-at>.<nonce>.<HMAC-SHA256(key, issued-at.nonce)>``, valid for :data:`SESSION_TTL_S`; changing the key
  ends every session.

Without a key every request is accepted (a fresh install on 127.0.0.1); :func:`check_bind` refuses to serve on a
non-loopback address or a share link without a key unless the operator says ``--insecure``.

Host and Origin rules (they guard a studio on 127.0.0.1 against web pages the user visits):

- the ``Host`` header must name a loopback name, the bound address, ``$SPACE_HOST`` on a Hugging Face Space, or a
  name in ``STUDIO_ALLOWED_HOSTS`` (``*``: any) -- DNS rebinding points a foreign name at 127.0.0.1;
- a request carrying an ``Origin`` is accepted only from the studio's own origin or one in
  ``STUDIO_CORS_ORIGINS`` -- so another site's page can neither read answers (no CORS) nor post forms, drive the
  Gradio queue or open the WebSocket with the user's cookie.

This module is pure Python (no web framework); ``studio.api.security`` applies it to every HTTP and WebSocket
request.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from studio.errors import UserError
from studio.settings import Settings

SESSION_COOKIE = "whetstone_session"
SESSION_TTL_S = 7 * 24 * 3600
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})


class InsecureBindError(UserError):
    """Serving on a reachable address without a key, and without ``--insecure``."""


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: the single user (no users configured) or a signed-in user with a role."""

    name: str
    via: str  # "bearer" (STUDIO_API_KEY) | "session" | "token" (personal API token) | "open" (nothing configured)
    role: str = "admin"  # the single user (open or with the key) may do everything
    user_id: str | None = None  # set for users of the database (studio.users)
    token_id: str | None = None  # the personal token the request came with


def is_loopback(host: str) -> bool:
    """``host`` (a name or an address, IPv6 with or without brackets) only reaches this machine."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, host: str, *, share: bool = False, users: bool = False) -> None:
    """Refuse to serve where others can reach the studio without a key or users, unless ``settings.insecure``."""
    if settings.api_key or settings.insecure or users:
        return
    if share:
        where = "a public share link (--share)"
    elif not is_loopback(host):
        where = f"{host} (reachable from other machines)"
    else:
        return
    raise InsecureBindError(
        f"refusing to serve on {where} without a key: add users (studio users add NAME --role admin) or set "
        "STUDIO_API_KEY=<a long random secret> (every surface then asks for it), or pass --insecure "
        "(STUDIO_INSECURE=1) to serve it open to anyone who can reach it"
    )


def _mac(key: str, payload: str) -> str:
    return hmac.new(key.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256).hexdigest()


def make_session_token(key: str, *, now: float | None = None) -> str:
    """A session cookie value for ``key``: ``issued.nonce.mac``."""
    payload = f"{int(now if now is not None else time.time())}.{secrets.token_urlsafe(16)}"
    return f"{payload}.{_mac(key, payload)}"


def session_valid(key: str, token: str, *, now: float | None = None, ttl_s: int = SESSION_TTL_S) -> bool:
    """``token`` was made by :func:`make_session_token` with ``key`` and has not expired."""
    issued, sep, rest = token.partition(".")
    nonce, sep2, mac = rest.partition(".")
    if not (sep and sep2 and issued.isdigit() and nonce and mac):
        return False
    if not hmac.compare_digest(_mac(key, f"{issued}.{nonce}"), mac):
        return False
    age = (now if now is not None else time.time()) - int(issued)
    return -60 <= age <= ttl_s


def key_matches(key: str, offered: str) -> bool:
    """Constant-time comparison of an offered key with the configured one."""
    return hmac.compare_digest(offered.encode("utf-8"), key.encode("utf-8"))


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authenticate(settings: Settings, headers: Mapping[str, str], cookies: Mapping[str, str]) -> Principal | None:
    """The principal a request authenticates as, or None. Without a configured key everyone is ``open``."""
    key = settings.api_key
    if not key:
        return Principal("anonymous", "open")
    token = bearer_token(headers)
    if token is not None and key_matches(key, token):
        return Principal("studio", "bearer")
    session = cookies.get(SESSION_COOKIE)
    if session and session_valid(key, session):
        return Principal("studio", "session")
    return None


def split_host(value: str) -> str:
    """The host name of a ``Host`` header or an origin's netloc, lower-case, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value.strip("[]")
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value  # a bare IPv6 address or a plain name


def allowed_hosts(settings: Settings) -> set[str]:
    """Host names accepted in the ``Host`` header (``*`` in the set: any)."""
    hosts = set(LOOPBACK_NAMES)
    bound = settings.host.strip().strip("[]").lower()
    if bound not in WILDCARD_BINDS:
        hosts.add(bound)
    space_host = os.environ.get("SPACE_HOST", "").strip().lower()
    if space_host:
        hosts.add(split_host(space_host))
    hosts.update(split_host(h) if h != "*" else "*" for h in settings.allowed_host_names)
    return hosts


def host_allowed(settings: Settings, host_header: str | None) -> bool:
    """The request's ``Host`` header names this studio (see the module docstring)."""
    hosts = allowed_hosts(settings)
    if "*" in hosts:
        return True
    if not host_header:
        return False
    return split_host(host_header) in hosts


def origin_allowed(settings: Settings, origin: str, host_header: str | None) -> bool:
    """A request's ``Origin`` is the studio's own (same host and port as the ``Host`` header) or configured."""
    origin = origin.strip().rstrip("/")
    if origin in settings.cors_origin_list:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or not host_header:
        return False
    return parts.netloc.lower() == host_header.strip().lower()
