"""``UserService``: users, passwords, personal API tokens, sessions, the sign-in rate limit, quotas, the audit log.

Every change runs in one transaction and writes its audit row in the same transaction. Lookups made for each
request (is any user configured? whose token is this?) are cached for :data:`CACHE_TTL_S` and dropped at once by
any change made in this process; a change made by the CLI in another process takes effect within that time.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import col, func, select

from studio.auth import SESSION_COOKIE, SESSION_TTL_S, Principal, authenticate, bearer_token
from studio.db import Database
from studio.errors import (
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RateLimitError,
    ValidationError,
)
from studio.settings import Settings, load_defaults
from studio.users.roles import ROLES, check_role
from studio.users.tables import ApiToken, AuditEvent, User

CACHE_TTL_S = 5.0
TOKEN_PREFIX = "wst_"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
QUOTA_KEYS = ("concurrent_generations", "queued_jobs", "gpu_hours_per_day")
LAST_USED_EVERY_S = 60.0


def _now() -> datetime:
    return datetime.now(UTC)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(name: str, field: str = "name") -> str:
    name = name.strip()
    if not NAME_RE.match(name):
        raise ValidationError(
            f"{field} must be 1-64 characters: lower-case letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit; got {name!r}",
            param=field,
        )
    return name


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValidationError(
            f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters; got {len(password)}", param="password"
        )
    return password


@dataclass(frozen=True)
class UserInfo:
    """A user as lists show it (never the hash)."""

    id: str
    name: str
    role: str
    hf_username: str | None
    has_password: bool
    created_at: datetime
    quotas: dict[str, Any]


def _info(user: User) -> UserInfo:
    return UserInfo(
        id=user.id,
        name=user.name,
        role=user.role,
        hf_username=user.hf_username,
        has_password=user.password_hash is not None,
        created_at=user.created_at,
        quotas=dict(user.quotas or {}),
    )


@dataclass(frozen=True)
class TokenInfo:
    id: str
    user_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _token_info(row: ApiToken) -> TokenInfo:
    return TokenInfo(row.id, row.user_id, row.name, row.prefix, row.created_at, row.last_used_at, row.revoked_at)


class SignInLimiter:
    """At most ``max_failures`` failed sign-ins per user name and per client address within ``window_s``; then
    sign-ins for that name or address are refused until the oldest failure leaves the window."""

    def __init__(self, max_failures: int = 5, window_s: float = 300.0) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def retry_after(self, keys: list[str], now: float | None = None) -> float:
        """Seconds until a sign-in for ``keys`` may be tried again (0: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            waits = [q[0] + self.window_s - now for k in keys if len(q := self._recent(k, now)) >= self.max_failures]
        return max(waits, default=0.0)

    def failed(self, keys: list[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def succeeded(self, name_key: str) -> None:
        with self._lock:
            self._failures.pop(name_key, None)


class UserService:
    """See the module docstring. One per process (``AppContext.users``)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        from pwdlib import PasswordHash

        self._hasher = PasswordHash.recommended()  # argon2id
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))  # equal work for unknown names
        self.limiter = SignInLimiter(settings.signin_max_failures, settings.signin_window_s)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}
        self._last_used: dict[str, float] = {}
        self._running: dict[str, int] = {}
        self._secret: bytes | None = None

    # -- caching -------------------------------------------------------------------------------------------
    def _cached(self, key: str, compute: Any) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        value = compute()
        with self._lock:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = (now + CACHE_TTL_S, value)
        return value

    def _changed(self) -> None:
        with self._lock:
            self._cache.clear()

    def enabled(self) -> bool:
        """Users are configured (or Sign in with Hugging Face is, on a Space): every surface asks for a user (else
        the single-user behaviour of before)."""
        return hf_oauth_configured() or bool(self._cached("enabled", self._count_users))

    def _count_users(self) -> int:
        with self.db.session() as s:
            return int(s.exec(select(func.count()).select_from(User)).one())

    # -- users ---------------------------------------------------------------------------------------------
    def _get(self, s: Any, name: str) -> User:
        user: User | None = s.exec(select(User).where(User.name == name.strip())).first()
        if user is None:
            raise NotFoundError(f"no user named {name!r} (studio users list shows them)", param="name")
        return user

    def get(self, name: str) -> UserInfo:
        with self.db.session() as s:
            return _info(self._get(s, name))

    def get_by_id(self, user_id: str) -> UserInfo | None:
        with self.db.session() as s:
            user = s.get(User, user_id)
            return _info(user) if user is not None else None

    def list(self) -> list[UserInfo]:
        with self.db.session() as s:
            return [_info(u) for u in s.exec(select(User).order_by(col(User.name))).all()]

    def add(
        self,
        name: str,
        *,
        role: str = "member",
        password: str | None = None,
        hf_username: str | None = None,
        actor: str = "cli",
        ip: str | None = None,
    ) -> UserInfo:
        name = check_name(name)
        check_role(role)
        if password is None and hf_username is None:
            raise ValidationError(
                "a user needs a password (or a Hugging Face account to sign in with)", param="password"
            )
        hashed = self._hasher.hash(check_password(password)) if password is not None else None
        with self.db.session() as s:
            if s.exec(select(User).where(User.name == name)).first() is not None:
                raise ConflictError(f"a user named {name!r} exists already", param="name")
            user = User(name=name, role=role, password_hash=hashed, hf_username=hf_username)
            s.add(user)
            s.add(AuditEvent(actor=actor, action="user.add", target=name, ip=ip, detail={"role": role}))
            s.flush()
            info = _info(user)
        self._changed()
        return info

    def set_password(self, name: str, password: str, *, actor: str = "cli", ip: str | None = None) -> None:
        hashed = self._hasher.hash(check_password(password))
        with self.db.session() as s:
            user = self._get(s, name)
            user.password_hash = hashed
            user.session_epoch += 1
            user.updated_at = _now()
            s.add(user)
            s.add(AuditEvent(actor=actor, action="user.passwd", target=user.name, ip=ip))
        self._changed()

    def set_role(self, name: str, role: str, *, actor: str = "cli", ip: str | None = None) -> None:
        check_role(role)
        with self.db.session() as s:
            user = self._get(s, name)
            if user.role == "admin" and role != "admin":
                self._keep_an_admin(s, user)
            detail = {"from": user.role, "to": role}
            user.role = role
            user.session_epoch += 1
            user.updated_at = _now()
            s.add(user)
            s.add(AuditEvent(actor=actor, action="user.role", target=user.name, ip=ip, detail=detail))
        self._changed()

    def set_quotas(self, name: str, quotas: Mapping[str, Any], *, actor: str = "cli", ip: str | None = None) -> None:
        clean: dict[str, Any] = {}
        for key, value in quotas.items():
            if key not in QUOTA_KEYS:
                raise ValidationError(f"unknown quota {key!r}; quotas are {', '.join(QUOTA_KEYS)}", param=key)
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or value < 0):
                raise ValidationError(f"{key} must be a number >= 0, or empty for no limit; got {value!r}", param=key)
            clean[key] = value
        with self.db.session() as s:
            user = self._get(s, name)
            user.quotas = {**(user.quotas or {}), **clean}
            user.updated_at = _now()
            s.add(user)
            s.add(AuditEvent(actor=actor, action="user.quota", target=user.name, ip=ip, detail=clean))
        self._changed()

    @staticmethod
    def _keep_an_admin(s: Any, user: User) -> None:
        admins = s.exec(select(func.count()).select_from(User).where(User.role == "admin")).one()
        if int(admins) <= 1:
            raise ConflictError(
                f"{user.name!r} is the last admin: make another user admin first (studio users role NAME admin)",
                param="name",
            )

    def remove(self, name: str, *, actor: str = "cli", ip: str | None = None) -> None:
        with self.db.session() as s:
            user = self._get(s, name)
            if user.role == "admin":
                self._keep_an_admin(s, user)
            for token in s.exec(select(ApiToken).where(ApiToken.user_id == user.id)).all():
                s.delete(token)
            s.delete(user)
            s.add(AuditEvent(actor=actor, action="user.rm", target=name, ip=ip))
        self._changed()

    def ensure_first_admin(self) -> str | None:
        """``STUDIO_ADMIN_USER`` + ``STUDIO_ADMIN_PASSWORD`` at start: create that admin if no such user exists."""
        name, password = self.settings.admin_user, self.settings.admin_password
        if not name:
            return None
        if not password:
            raise ValidationError("STUDIO_ADMIN_USER is set: set STUDIO_ADMIN_PASSWORD too", param="admin_password")
        with self.db.session() as s:
            if s.exec(select(User).where(User.name == name.strip())).first() is not None:
                return None
        self.add(name, role="admin", password=password, actor="environment")
        return name

    # -- passwords and sessions ----------------------------------------------------------------------------
    def sign_in(self, name: str, password: str, *, ip: str | None = None) -> UserInfo:
        """The user whose name and password these are; a wrong pair is audited and counts towards the limit."""
        name = name.strip().lower()[:64]
        keys = [f"name:{name}", f"ip:{ip or '?'}"]
        wait = self.limiter.retry_after(keys)
        if wait > 0:
            self.audit(name or "?", "signin.limited", target=name, ip=ip)
            raise RateLimitError(
                f"too many failed sign-ins for this name or address: try again in {int(wait) + 1} s",
                retry_after=wait,
            )
        with self.db.session() as s:
            user = s.exec(select(User).where(User.name == name)).first()
            stored = user.password_hash if user is not None else None
        ok = self._hasher.verify(password, stored or self._dummy_hash) and user is not None and stored is not None
        if not ok:
            self.limiter.failed(keys)
            self.audit(name or "?", "signin.failed", target=name, ip=ip)
            raise AuthenticationError("wrong user name or password", param="password")
        self.limiter.succeeded(keys[0])
        assert user is not None
        return _info(user)

    def _session_secret(self) -> bytes:
        if self._secret is None:
            configured = self.settings.session_secret
            if configured:
                self._secret = configured.encode("utf-8")
            else:
                self._secret = _load_or_create_secret(self.settings.home / "secrets" / "session.key")
        return self._secret

    def _mac(self, payload: str) -> str:
        return hmac.new(self._session_secret(), payload.encode("utf-8"), hashlib.sha256).hexdigest()

    def session_cookie(self, user_id: str, *, now: float | None = None) -> str:
        """A signed session for ``user_id``: ``u.<issued>.<nonce>.<user id>.<epoch>.<mac>``."""
        with self.db.session() as s:
            user = s.get(User, user_id)
            if user is None:
                raise NotFoundError("no such user")
            epoch = user.session_epoch
        issued = int(now if now is not None else time.time())
        payload = f"u.{issued}.{secrets.token_urlsafe(12)}.{user_id}.{epoch}"
        return f"{payload}.{self._mac(payload)}"

    def _session_principal(self, value: str) -> Principal | None:
        payload, _, mac = value.rpartition(".")
        parts = payload.split(".")
        if len(parts) != 5 or parts[0] != "u" or not parts[1].isdigit() or not parts[4].isdigit():
            return None
        if not hmac.compare_digest(self._mac(payload), mac):
            return None
        age = time.time() - int(parts[1])
        if not -60 <= age <= SESSION_TTL_S:
            return None
        user_id, epoch = parts[3], int(parts[4])

        def look() -> Principal | None:
            with self.db.session() as s:
                user = s.get(User, user_id)
                if user is None or user.session_epoch != epoch:
                    return None
                return Principal(user.name, "session", role=user.role, user_id=user.id)

        return self._cached(f"s:{user_id}:{epoch}", look)  # type: ignore[no-any-return]

    # -- API tokens ----------------------------------------------------------------------------------------
    def create_token(
        self, user_name: str, name: str, *, actor: str = "cli", ip: str | None = None
    ) -> tuple[str, TokenInfo]:
        """A new token for ``user_name``: the plain token (shown once; only its hash is kept) and its row."""
        name = name.strip()
        if not 1 <= len(name) <= 100:
            raise ValidationError(f"token name must be 1-100 characters; got {len(name)}", param="token_name")
        plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.session() as s:
            user = self._get(s, user_name)
            row = ApiToken(user_id=user.id, name=name, token_hash=token_hash(plain), prefix=plain[:10])
            s.add(row)
            s.add(AuditEvent(actor=actor, action="token.create", target=user.name, ip=ip, detail={"token": name}))
            s.flush()
            info = _token_info(row)
        return plain, info

    def tokens(self, user_name: str | None = None) -> builtins.list[TokenInfo]:
        with self.db.session() as s:
            query = select(ApiToken).order_by(col(ApiToken.created_at).desc())
            if user_name is not None:
                query = query.where(ApiToken.user_id == self._get(s, user_name).id)
            return [_token_info(t) for t in s.exec(query).all()]

    def revoke_token(self, token_id: str, *, by: Principal, ip: str | None = None) -> TokenInfo:
        """Revoke a token: its owner or an admin may."""
        with self.db.session() as s:
            row = s.get(ApiToken, token_id.strip())
            if row is None:
                raise NotFoundError(f"no API token with id {token_id!r}", param="token_id")
            if by.role != "admin" and by.user_id != row.user_id:
                raise ForbiddenError("you may revoke only your own tokens", param="token_id")
            if row.revoked_at is None:
                row.revoked_at = _now()
                s.add(row)
                owner = s.get(User, row.user_id)
                s.add(
                    AuditEvent(
                        actor=by.name,
                        action="token.revoke",
                        target=owner.name if owner else row.user_id,
                        ip=ip,
                        detail={"token": row.name},
                    )
                )
            info = _token_info(row)
        self._changed()
        return info

    def _token_principal(self, token: str) -> Principal | None:
        digest = token_hash(token)

        def look() -> Principal | None:
            with self.db.session() as s:
                row = s.exec(select(ApiToken).where(ApiToken.token_hash == digest)).first()
                if row is None or row.revoked_at is not None:
                    return None
                user = s.get(User, row.user_id)
                if user is None:
                    return None
                return Principal(user.name, "token", role=user.role, user_id=user.id, token_id=row.id)

        principal: Principal | None = self._cached(f"t:{digest}", look)
        if principal is not None and principal.token_id is not None:
            self._touch(principal.token_id)
        return principal

    def _touch(self, token_id: str) -> None:
        now = time.monotonic()
        if now - self._last_used.get(token_id, -1e9) < LAST_USED_EVERY_S:
            return
        self._last_used[token_id] = now
        with self.db.session() as s:
            row = s.get(ApiToken, token_id)
            if row is not None:
                row.last_used_at = _now()
                s.add(row)

    # -- the one check every surface runs ------------------------------------------------------------------
    def authenticate(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> Principal | None:
        """Who the request is from, or None. Without users: the single-user check of :func:`studio.auth.authenticate`.
        With users: a personal token, a user session, or ``STUDIO_API_KEY`` (the operator's key, as admin)."""
        if not self.enabled():
            return authenticate(self.settings, headers, cookies)
        token = bearer_token(headers)
        if token is not None:
            if token.startswith(TOKEN_PREFIX):
                return self._token_principal(token)
            key = self.settings.api_key
            if key and hmac.compare_digest(token.encode("utf-8"), key.encode("utf-8")):
                return Principal("studio", "bearer", role="admin")
            return None
        session = cookies.get(SESSION_COOKIE)
        if session and session.startswith("u."):
            found = self._session_principal(session)
            if found is not None:
                return found
        hf_session = cookies.get(HF_SESSION_COOKIE)
        if hf_session and hf_oauth_configured():
            return self._hf_principal(hf_session)
        return None

    # -- Sign in with Hugging Face (a Space with hf_oauth: true) ----------------------------------------------
    def _hf_principal(self, cookie: str) -> Principal | None:
        """The studio user of a Hugging Face sign-in: Gradio's OAuth keeps the profile in Starlette's signed
        ``session`` cookie (secret: sha256 of ``OAUTH_CLIENT_SECRET + "-v4"``, gradio/oauth.py)."""
        username = hf_username_of(cookie)
        if username is None:
            return None
        user = self._cached(f"hf:{username}", lambda: self.user_for_hf(username))
        return Principal(user.name, "hf", role=user.role, user_id=user.id)

    def user_for_hf(self, hf_username: str) -> UserInfo:
        """The studio user who signs in as ``hf_username``, made on the first sign-in: an admin when the name is in
        ``STUDIO_HF_ADMINS``, else ``STUDIO_HF_DEFAULT_ROLE``. A listed admin is promoted at their next sign-in."""
        admins = {n.strip().lower() for n in self.settings.hf_admins.split(",") if n.strip()}
        wanted = "admin" if hf_username.lower() in admins else check_role(self.settings.hf_default_role)
        with self.db.session() as s:
            user = s.exec(select(User).where(User.hf_username == hf_username)).first()
            if user is not None:
                if wanted != "admin" or user.role == "admin":
                    return _info(user)
                user.role = "admin"
                s.add(user)
                s.add(AuditEvent(actor="huggingface", action="user.role", target=user.name, detail={"to": "admin"}))
                info = _info(user)
        if user is not None:
            self._changed()
            return info
        with self.db.session() as s:
            base = re.sub(r"[^a-z0-9._-]", "-", hf_username.lower()).strip("-._")[:60] or "hf-user"
            name = base
            for n in range(2, 1000):
                if s.exec(select(User).where(User.name == name)).first() is None:
                    break
                name = f"{base}-{n}"
            user = User(name=name, role=wanted, hf_username=hf_username)
            s.add(user)
            s.add(
                AuditEvent(
                    actor="huggingface", action="user.add", target=name, detail={"role": wanted, "hf": hf_username}
                )
            )
            s.flush()
            info = _info(user)
        self._changed()
        return info

    # -- quotas --------------------------------------------------------------------------------------------
    def quota(self, principal: Principal, key: str) -> float | None:
        """The limit ``key`` for this principal (its own override, else its role's default); None: no limit."""
        if principal.user_id is None:
            return None
        user = self._cached(f"u:{principal.user_id}", lambda: self.get_by_id(principal.user_id or ""))
        if user is not None and key in user.quotas:
            value = user.quotas[key]
            return None if value is None else float(value)
        defaults = (load_defaults().get("quotas") or {}).get(principal.role) or {}
        value = defaults.get(key)
        return None if value is None else float(value)

    @contextmanager
    def generation_slot(self, principal: Principal | None) -> Iterator[None]:
        """Hold one of the user's concurrent generations for the block; refused with 429 over the quota."""
        release = self.acquire_generation(principal)
        try:
            yield
        finally:
            if release is not None:
                release()

    def acquire_generation(self, principal: Principal | None) -> Any:
        """Take one of the user's concurrent generations (429 over the quota); returns its release (None: no user)."""
        if principal is None or principal.user_id is None:
            return None
        limit = self.quota(principal, "concurrent_generations")
        uid = principal.user_id
        with self._lock:
            running = self._running.get(uid, 0)
            if limit is not None and running >= limit:
                raise RateLimitError(
                    f"{principal.name} already runs {running} generation(s) at once, the most the "
                    f"concurrent_generations quota of a {principal.role} allows ({int(limit)}): wait for one to "
                    "finish, or ask an admin to raise it",
                    retry_after=2.0,
                    param="concurrent_generations",
                )
            self._running[uid] = running + 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self._running[uid] = self._running.get(uid, 1) - 1

        return release

    # -- audit ---------------------------------------------------------------------------------------------
    def audit(
        self, actor: str, action: str, *, target: str = "", ip: str | None = None, detail: dict[str, Any] | None = None
    ) -> None:
        with self.db.session() as s:
            s.add(AuditEvent(actor=actor[:96], action=action, target=target[:200], ip=ip, detail=detail or {}))

    def audit_log(self, limit: int = 200, action: str | None = None) -> builtins.list[AuditEvent]:
        with self.db.session() as s:
            query = select(AuditEvent).order_by(col(AuditEvent.at).desc(), col(AuditEvent.id).desc()).limit(limit)
            if action:
                query = query.where(col(AuditEvent.action).startswith(action))
            return list(s.exec(query).all())


HF_SESSION_COOKIE = "session"  # Starlette's SessionMiddleware, as Gradio's OAuth sets it up


def hf_oauth_configured() -> bool:
    """Sign in with Hugging Face is on: a Space with ``hf_oauth: true`` (it sets ``OAUTH_CLIENT_ID``)."""
    return bool(os.environ.get("OAUTH_CLIENT_ID")) and bool(os.environ.get("SPACE_ID"))


def hf_session_secret() -> str:
    """The key Gradio's OAuth signs its ``session`` cookie with (gradio/oauth.py, ``attach_oauth``)."""
    return hashlib.sha256(((os.environ.get("OAUTH_CLIENT_SECRET") or "") + "-v4").encode()).hexdigest()


def hf_username_of(cookie: str, max_age_s: int = 14 * 24 * 3600) -> str | None:
    """The Hugging Face user name in a valid, unexpired ``session`` cookie of Gradio's OAuth, else None."""
    import base64
    import json

    import itsdangerous

    try:
        data = itsdangerous.TimestampSigner(hf_session_secret()).unsign(cookie.encode("utf-8"), max_age=max_age_s)
        session = json.loads(base64.b64decode(data))
    except (itsdangerous.BadSignature, ValueError):
        return None
    info = session.get("oauth_info") if isinstance(session, dict) else None
    if not isinstance(info, dict):
        return None
    expires_at = info.get("expires_at")
    if isinstance(expires_at, int | float) and expires_at < time.time():
        return None
    username = (info.get("userinfo") or {}).get("preferred_username")
    return str(username) if isinstance(username, str) and username else None


def _load_or_create_secret(path: Path) -> bytes:
    """The server's session-signing secret: 32 random bytes in ``path`` (0600), made once (atomically)."""
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secrets.token_hex(32))
    try:
        os.link(tmp, path)  # the first process to get here wins; the others read its secret
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


__all__ = ["ROLES", "SignInLimiter", "TokenInfo", "UserInfo", "UserService", "check_name", "token_hash"]
