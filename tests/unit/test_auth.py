"""studio/auth.py: the key check, session tokens, host and origin rules, and the refusal to serve open."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio import auth
from studio.settings import Settings


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(home=tmp_path, **kw)  # type: ignore[arg-type]


def test_session_token_round_trip_tamper_expiry_and_key_change() -> None:
    token = auth.make_session_token("k1", now=1_000_000)
    assert auth.session_valid("k1", token, now=1_000_010)
    assert not auth.session_valid("k2", token, now=1_000_010)  # a new key ends every session
    assert not auth.session_valid("k1", token, now=1_000_000 + auth.SESSION_TTL_S + 1)
    issued, nonce, mac = token.split(".")
    assert not auth.session_valid("k1", f"{int(issued) + 99999}.{nonce}.{mac}", now=1_000_010)  # re-dated
    for junk in ("", "a.b", "1.2.3", "x.y.z", token + "0"):
        assert not auth.session_valid("k1", junk, now=1_000_010)


def test_authenticate_bearer_cookie_and_open(tmp_path: Path) -> None:
    keyed = _settings(tmp_path, api_key="secret")
    assert auth.authenticate(keyed, {}, {}) is None
    assert auth.authenticate(keyed, {"authorization": "Bearer wrong"}, {}) is None
    assert auth.authenticate(keyed, {"authorization": "Basic secret"}, {}) is None
    assert auth.authenticate(keyed, {"authorization": "Bearer secret"}, {}) == auth.Principal("studio", "bearer")
    cookie = {auth.SESSION_COOKIE: auth.make_session_token("secret")}
    assert auth.authenticate(keyed, {}, cookie) == auth.Principal("studio", "session")
    assert auth.authenticate(_settings(tmp_path), {}, {}) == auth.Principal("anonymous", "open")


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("127.0.0.1:7860", True),
        ("localhost", True),
        ("LOCALHOST:80", True),
        ("[::1]:7860", True),
        ("evil.example", False),
        ("127.0.0.1.nip.io", False),
        ("", False),
        (None, False),
    ],
)
def test_host_allow_list(tmp_path: Path, header: str | None, ok: bool) -> None:
    assert auth.host_allowed(_settings(tmp_path, host="127.0.0.1"), header) is ok


def test_host_allow_list_extends_with_settings_bind_and_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACE_HOST", "me-studio.hf.space")
    s = _settings(tmp_path, host="10.0.0.5", allowed_hosts="studio.lan, Tools.Example")
    for host in ("10.0.0.5:7860", "studio.lan", "tools.example:443", "me-studio.hf.space"):
        assert auth.host_allowed(s, host), host
    assert not auth.host_allowed(s, "other.lan")
    assert auth.host_allowed(_settings(tmp_path, allowed_hosts="*"), "anything.example")


def test_origin_same_site_or_configured(tmp_path: Path) -> None:
    s = _settings(tmp_path, cors_origins="https://tools.example.com/")
    assert auth.origin_allowed(s, "http://127.0.0.1:7860", "127.0.0.1:7860")
    assert not auth.origin_allowed(s, "http://127.0.0.1:9999", "127.0.0.1:7860")  # another local port
    assert not auth.origin_allowed(s, "http://localhost:7860", "127.0.0.1:7860")
    assert not auth.origin_allowed(s, "null", "127.0.0.1:7860")
    assert auth.origin_allowed(s, "https://tools.example.com", "127.0.0.1:7860")


@pytest.mark.parametrize(
    ("host", "share", "key", "insecure", "refused"),
    [
        ("127.0.0.1", False, None, False, False),
        ("::1", False, None, False, False),
        ("localhost", False, None, False, False),
        ("0.0.0.0", False, None, False, True),
        ("192.168.1.4", False, None, False, True),
        ("127.0.0.1", True, None, False, True),
        ("0.0.0.0", True, "k", False, False),
        ("0.0.0.0", False, None, True, False),
    ],
)
def test_check_bind(tmp_path: Path, host: str, share: bool, key: str | None, insecure: bool, refused: bool) -> None:
    s = _settings(tmp_path, api_key=key, insecure=insecure)
    if refused:
        with pytest.raises(auth.InsecureBindError, match="STUDIO_API_KEY"):
            auth.check_bind(s, host, share=share)
    else:
        auth.check_bind(s, host, share=share)
