"""``UserService`` (issue 19) on a real SQLite file, and on PostgreSQL when STUDIO_TEST_DATABASE_URL answers:
users and passwords, sessions that end on a password or role change, the last admin, personal API tokens (only
their sha256 kept), forged cookies, the sign-in rate limit with its audit rows, and the generation quota."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import select

from studio.auth import SESSION_COOKIE, Principal
from studio.db import Database
from studio.errors import AuthenticationError, ConflictError, ForbiddenError, RateLimitError, ValidationError
from studio.settings import Settings
from studio.users import UserService
from studio.users.tables import ApiToken, User

PASSWORD = "correct horse battery"


def _settings(tmp: Path, **fields: Any) -> Settings:
    return Settings(home=tmp / "home", hf_cache=tmp / "hub", api_key=None, admin_user=None, **fields)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/studio.db")
    yield database
    database.dispose()


@pytest.fixture
def users(tmp_path: Path, db: Database) -> UserService:
    return UserService(_settings(tmp_path), db)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The same tests on SQLite and on a fresh PostgreSQL database (skipped when no server answers)."""
    url = f"sqlite:///{tmp_path}/studio.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    database = Database(url)
    yield database
    database.dispose()


def _cookie(value: str) -> dict[str, str]:
    return {SESSION_COOKIE: value}


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _row_text(db: Database, table: str, key: str, value: str) -> str:
    """Every column of one row, as the database holds it, joined into one string."""
    with db.engine.connect() as conn:
        row = conn.execute(text(f"SELECT * FROM {table} WHERE {key} = :v"), {"v": value}).one()
    return " ".join(str(v) for v in row)


# -- on both databases -----------------------------------------------------------------------------------------
def test_add_sign_in_token_round_trip(any_db: Database, tmp_path: Path) -> None:
    users = UserService(_settings(tmp_path), any_db)
    prefix = f"t{uuid.uuid4().hex[:8]}"  # unique even if a database is shared between runs
    admin, member = f"{prefix}-admin", f"{prefix}-member"
    try:
        assert not users.enabled()
        users.add(admin, role="admin", password=PASSWORD)
        users.add(member, role="member", password=PASSWORD + "!")
        assert users.enabled()
        assert [(u.name, u.role) for u in users.list() if u.name.startswith(prefix)] == [
            (admin, "admin"),
            (member, "member"),
        ]

        signed = users.sign_in(member, PASSWORD + "!", ip="10.0.0.1")
        assert signed.name == member and signed.role == "member"
        who = users.authenticate({}, _cookie(users.session_cookie(signed.id)))
        assert who == Principal(member, "session", role="member", user_id=signed.id)

        plain, info = users.create_token(member, "laptop")
        assert plain.startswith("wst_") and info.prefix == plain[:10]
        by_token = users.authenticate(_bearer(plain), {})
        assert by_token is not None
        assert (by_token.name, by_token.via, by_token.role, by_token.token_id) == (member, "token", "member", info.id)
        with any_db.session() as s:
            row = s.get(ApiToken, info.id)
            assert row is not None and row.token_hash == hashlib.sha256(plain.encode()).hexdigest()
        assert plain not in _row_text(any_db, "api_token", "id", info.id)

        users.revoke_token(info.id, by=Principal(member, "token", role="member", user_id=signed.id))
        assert users.authenticate(_bearer(plain), {}) is None
        with pytest.raises(ConflictError):
            users.remove(admin)  # the last admin
    finally:
        for name in (member, admin):
            with any_db.session() as s:
                user = s.exec(select(User).where(User.name == name)).first()
                if user is not None:
                    for tok in s.exec(select(ApiToken).where(ApiToken.user_id == user.id)).all():
                        s.delete(tok)
                    s.delete(user)


def test_password_change_ends_sessions_on_both_databases(any_db: Database, tmp_path: Path) -> None:
    users = UserService(_settings(tmp_path), any_db)
    info = users.add("ada", role="admin", password=PASSWORD)
    before = users.session_cookie(info.id)
    assert users.authenticate({}, _cookie(before)) is not None
    users.set_password("ada", "a brand new secret")
    with pytest.raises(AuthenticationError):
        users.sign_in("ada", PASSWORD)
    assert users.sign_in("ada", "a brand new secret").id == info.id
    assert users.authenticate({}, _cookie(before)) is None, "a session made before passwd still works"
    assert users.authenticate({}, _cookie(users.session_cookie(info.id))) is not None


# -- users -----------------------------------------------------------------------------------------------------
def test_password_is_stored_as_an_argon2id_hash(users: UserService, db: Database) -> None:
    info = users.add("grace", role="member", password=PASSWORD)
    with db.session() as s:
        row = s.get(User, info.id)
        assert row is not None and row.password_hash is not None
        assert row.password_hash.startswith("$argon2id$")
    assert PASSWORD not in _row_text(db, "studio_user", "id", info.id)
    assert not hasattr(info, "password_hash")


def test_role_change_ends_sessions(users: UserService) -> None:
    users.add("root", role="admin", password=PASSWORD)
    info = users.add("bob", role="member", password=PASSWORD)
    cookie = users.session_cookie(info.id)
    who = users.authenticate({}, _cookie(cookie))
    assert who is not None and who.role == "member"
    users.set_role("bob", "viewer")
    assert users.get("bob").role == "viewer"
    assert users.authenticate({}, _cookie(cookie)) is None
    again = users.authenticate({}, _cookie(users.session_cookie(info.id)))
    assert again is not None and again.role == "viewer"
    assert [e.target for e in users.audit_log(action="user.role")] == ["bob"]


def test_last_admin_cannot_be_removed_or_demoted(users: UserService) -> None:
    users.add("root", role="admin", password=PASSWORD)
    with pytest.raises(ConflictError, match="last admin") as removed:
        users.remove("root")
    assert removed.value.param == "name"
    with pytest.raises(ConflictError, match="last admin"):
        users.set_role("root", "member")
    assert users.get("root").role == "admin"
    users.add("second", role="admin", password=PASSWORD)
    users.set_role("root", "member")  # another admin exists now
    with pytest.raises(ConflictError):
        users.remove("second")
    users.remove("root")
    assert [u.name for u in users.list()] == ["second"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "-dash-first"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"password": "short"}, "password"),
        ({"password": None}, "password"),
        ({"role": "owner"}, "role"),
    ],
)
def test_bad_input_names_the_field(users: UserService, kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"name": "ok-name", "role": "member", "password": PASSWORD, **kwargs}
    with pytest.raises(ValidationError) as err:
        users.add(args.pop("name"), **args)
    assert err.value.param == field
    assert users.list() == []


def test_bad_role_and_short_password_on_existing_users(users: UserService) -> None:
    users.add("root", role="admin", password=PASSWORD)
    with pytest.raises(ValidationError) as bad_role:
        users.set_role("root", "superuser")
    assert bad_role.value.param == "role"
    with pytest.raises(ValidationError) as short:
        users.set_password("root", "1234567")
    assert short.value.param == "password"
    assert users.sign_in("root", PASSWORD).name == "root"  # nothing changed


def test_duplicate_name_is_a_conflict(users: UserService) -> None:
    users.add("carol", password=PASSWORD)
    with pytest.raises(ConflictError) as err:
        users.add("carol", role="viewer", password="another password")
    assert err.value.param == "name"
    assert [(u.name, u.role) for u in users.list()] == [("carol", "member")]


def test_add_writes_an_audit_row(users: UserService) -> None:
    users.add("dave", role="viewer", password=PASSWORD, actor="root", ip="10.1.2.3")
    (event,) = users.audit_log(action="user.add")
    assert (event.actor, event.target, event.ip, event.detail) == ("root", "dave", "10.1.2.3", {"role": "viewer"})


# -- API tokens ------------------------------------------------------------------------------------------------
def test_token_is_stored_only_as_its_sha256(users: UserService, db: Database) -> None:
    users.add("erin", password=PASSWORD)
    plain, info = users.create_token("erin", "ci")
    assert plain.startswith("wst_") and len(plain) > 40
    with db.session() as s:
        row = s.exec(select(ApiToken).where(ApiToken.id == info.id)).one()
    assert row.token_hash == hashlib.sha256(plain.encode("utf-8")).hexdigest()
    stored = _row_text(db, "api_token", "id", info.id)
    assert plain not in stored and plain[10:30] not in stored
    who = users.authenticate(_bearer(plain), {})
    assert who is not None and (who.name, who.via, who.token_id) == ("erin", "token", info.id)
    assert users.authenticate(_bearer(plain + "x"), {}) is None
    assert users.authenticate(_bearer("wst_" + "A" * 43), {}) is None
    assert [t.id for t in users.tokens("erin")] == [info.id]


def test_revoked_token_no_longer_authenticates(users: UserService) -> None:
    admin = users.add("root", role="admin", password=PASSWORD)
    users.add("erin", password=PASSWORD)
    plain, info = users.create_token("erin", "ci")
    assert users.authenticate(_bearer(plain), {}) is not None  # cached now: revoking must drop the cache
    revoked = users.revoke_token(info.id, by=Principal("root", "session", role="admin", user_id=admin.id))
    assert revoked.revoked_at is not None
    assert users.authenticate(_bearer(plain), {}) is None
    assert users.tokens("erin")[0].revoked_at is not None
    assert [e.target for e in users.audit_log(action="token.revoke")] == ["erin"]


def test_member_cannot_revoke_another_users_token_admin_can(users: UserService) -> None:
    admin = users.add("root", role="admin", password=PASSWORD)
    users.add("erin", password=PASSWORD)
    frank = users.add("frank", password=PASSWORD)
    plain, info = users.create_token("erin", "ci")
    with pytest.raises(ForbiddenError) as err:
        users.revoke_token(info.id, by=Principal("frank", "session", role="member", user_id=frank.id))
    assert err.value.param == "token_id"
    assert users.authenticate(_bearer(plain), {}) is not None
    users.revoke_token(info.id, by=Principal("root", "session", role="admin", user_id=admin.id))
    assert users.authenticate(_bearer(plain), {}) is None


# -- forged sessions -------------------------------------------------------------------------------------------
def test_forged_or_tampered_session_cookie_is_refused(users: UserService, tmp_path: Path, db: Database) -> None:
    victim = users.add("root", role="admin", password=PASSWORD)
    viewer = users.add("val", role="viewer", password=PASSWORD)
    good = users.session_cookie(viewer.id)
    assert users.authenticate({}, _cookie(good)) is not None
    payload, _, mac = good.rpartition(".")
    _u, issued, nonce, user_id, epoch = payload.split(".")
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    forged = [
        f"{payload}.{flipped}",  # tampered signature
        f"u.{issued}.{nonce}.{victim.id}.{epoch}.{mac}",  # someone else's id under the viewer's signature
        f"u.{issued}.{nonce}.{user_id}.{int(epoch) + 1}.{mac}",  # another epoch
        f"u.{int(issued) + 3600}.{nonce}.{user_id}.{epoch}.{mac}",  # another issue time
        payload,  # no signature at all
        "u.garbage",
        "",
    ]
    for value in forged:
        assert users.authenticate({}, _cookie(value)) is None, value
    # a cookie signed with another server's secret
    other = UserService(_settings(tmp_path / "other", session_secret="another server's secret"), db)
    assert users.authenticate({}, _cookie(other.session_cookie(victim.id))) is None
    # an expired session (issued eight days ago)
    old = users.session_cookie(viewer.id, now=time.time() - 8 * 24 * 3600)
    assert users.authenticate({}, _cookie(old)) is None


# -- the sign-in rate limit ------------------------------------------------------------------------------------
def test_sign_in_is_rate_limited_after_max_failures(tmp_path: Path, db: Database) -> None:
    users = UserService(_settings(tmp_path, signin_max_failures=3), db)
    users.add("root", role="admin", password=PASSWORD)
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            users.sign_in("root", "wrong password", ip="10.9.9.9")
    with pytest.raises(RateLimitError) as limited:
        users.sign_in("root", PASSWORD, ip="10.0.0.2")  # the right password, from elsewhere: the name is paused
    assert limited.value.retry_after > 0 and limited.value.status_code == 429
    failed = users.audit_log(action="signin.failed")
    assert len(failed) == 3 and {(e.target, e.ip) for e in failed} == {("root", "10.9.9.9")}
    assert [(e.target, e.ip) for e in users.audit_log(action="signin.limited")] == [("root", "10.0.0.2")]


def test_sign_in_is_rate_limited_per_address(tmp_path: Path, db: Database) -> None:
    users = UserService(_settings(tmp_path, signin_max_failures=2), db)
    users.add("root", role="admin", password=PASSWORD)
    for name in ("alice", "bob"):  # unknown names count too
        with pytest.raises(AuthenticationError):
            users.sign_in(name, "guess", ip="10.6.6.6")
    with pytest.raises(RateLimitError):
        users.sign_in("root", PASSWORD, ip="10.6.6.6")
    assert users.sign_in("root", PASSWORD, ip="10.0.0.7").name == "root"  # another address still may


def test_successful_sign_in_clears_the_name_s_failures(tmp_path: Path, db: Database) -> None:
    users = UserService(_settings(tmp_path, signin_max_failures=2), db)
    users.add("root", role="admin", password=PASSWORD)
    with pytest.raises(AuthenticationError):
        users.sign_in("root", "guess", ip="10.0.0.1")
    users.sign_in("root", PASSWORD, ip="10.0.0.2")
    with pytest.raises(AuthenticationError):
        users.sign_in("root", "guess", ip="10.0.0.3")
    assert users.sign_in("root", PASSWORD, ip="10.0.0.4").name == "root"


# -- quotas ----------------------------------------------------------------------------------------------------
def _principal(users: UserService, name: str) -> Principal:
    info = users.get(name)
    return Principal(info.name, "session", role=info.role, user_id=info.id)


def test_viewer_runs_one_generation_at_a_time(users: UserService) -> None:
    users.add("root", role="admin", password=PASSWORD)
    users.add("val", role="viewer", password=PASSWORD)
    viewer = _principal(users, "val")
    assert users.quota(viewer, "concurrent_generations") == 1
    release = users.acquire_generation(viewer)
    assert release is not None
    with pytest.raises(RateLimitError) as err:
        users.acquire_generation(viewer)
    assert err.value.param == "concurrent_generations" and "concurrent_generations" in err.value.message
    assert err.value.retry_after > 0
    release()
    release()  # releasing twice frees one slot only
    second = users.acquire_generation(viewer)
    with pytest.raises(RateLimitError):
        users.acquire_generation(viewer)
    second()
    with users.generation_slot(viewer), pytest.raises(RateLimitError):
        users.acquire_generation(viewer)
    users.acquire_generation(viewer)()  # the slot was given back when the block ended


def test_admin_has_no_generation_limit_and_member_four(users: UserService) -> None:
    users.add("root", role="admin", password=PASSWORD)
    users.add("mia", role="member", password=PASSWORD)
    admin, member = _principal(users, "root"), _principal(users, "mia")
    assert users.quota(admin, "concurrent_generations") is None
    assert users.quota(member, "concurrent_generations") == 4
    held = [users.acquire_generation(admin) for _ in range(20)]
    assert all(h is not None for h in held)
    held = [users.acquire_generation(member) for _ in range(4)]
    with pytest.raises(RateLimitError):
        users.acquire_generation(member)
    assert users.acquire_generation(None) is None  # no user: the single-user studio has no quota


def test_users_own_quota_overrides_the_role_default(users: UserService) -> None:
    users.add("root", role="admin", password=PASSWORD)
    users.add("val", role="viewer", password=PASSWORD)
    viewer = _principal(users, "val")
    assert users.quota(viewer, "concurrent_generations") == 1  # cached now: set_quotas must drop it
    users.set_quotas("val", {"concurrent_generations": 3})
    assert users.quota(viewer, "concurrent_generations") == 3
    held = [users.acquire_generation(viewer) for _ in range(3)]
    with pytest.raises(RateLimitError):
        users.acquire_generation(viewer)
    for release in held:
        release()
    users.set_quotas("val", {"concurrent_generations": None})  # None: no limit for this user
    assert users.quota(viewer, "concurrent_generations") is None
    assert users.get("val").quotas == {"concurrent_generations": None}
    with pytest.raises(ValidationError) as unknown:
        users.set_quotas("val", {"gpus": 2})
    assert unknown.value.param == "gpus"
    with pytest.raises(ValidationError) as negative:
        users.set_quotas("val", {"queued_jobs": -1})
    assert negative.value.param == "queued_jobs"


# -- the first admin from the environment ----------------------------------------------------------------------
def test_ensure_first_admin_from_settings(tmp_path: Path, db: Database) -> None:
    settings = Settings(home=tmp_path / "home", hf_cache=tmp_path / "hub", admin_user="boss", admin_password=PASSWORD)
    users = UserService(settings, db)
    assert users.ensure_first_admin() == "boss"
    assert [(u.name, u.role) for u in users.list()] == [("boss", "admin")]
    assert users.sign_in("boss", PASSWORD).role == "admin"
    assert users.ensure_first_admin() is None  # exists already: left as it is
    users.set_password("boss", "changed in the ui")
    assert users.ensure_first_admin() is None
    assert users.sign_in("boss", "changed in the ui").name == "boss"
    assert [e.actor for e in users.audit_log(action="user.add")] == ["environment"]


def test_ensure_first_admin_needs_a_password(tmp_path: Path, db: Database) -> None:
    settings = Settings(home=tmp_path / "home", hf_cache=tmp_path / "hub", admin_user="boss", admin_password=None)
    with pytest.raises(ValidationError) as err:
        UserService(settings, db).ensure_first_admin()
    assert err.value.param == "admin_password"
    assert UserService(_settings(tmp_path), db).ensure_first_admin() is None  # no admin_user: nothing to do
