"""``python -m studio users ...`` (issue 19), run exactly as an admin types it, on a STUDIO_HOME of its own: add, list,
tokens, revoke, role, passwd, rm, the last admin kept, and the audit log."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from studio.db import Database
from studio.settings import Settings
from studio.users import UserService

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "admin password 1"


def users_cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, STUDIO_HOME=str(home), STUDIO_HF_CACHE=str(home / "hf-cache"))
    for name in ("STUDIO_DATABASE_URL", "STUDIO_API_KEY", "STUDIO_ADMIN_USER", "STUDIO_ADMIN_PASSWORD"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "studio", "users", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(home: Path, *args: str, stdin: str | None = None) -> str:
    proc = users_cli(home, *args, stdin=stdin)
    assert proc.returncode == 0, f"studio users {' '.join(args)}: {proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc.stdout


def service(home: Path) -> UserService:
    settings = Settings(home=home, hf_cache=home / "hf-cache", database_url=None, api_key=None, admin_user=None)
    return UserService(settings, Database(settings.db_url))


def test_add_list_token_tokens_revoke(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert "added admin root" in ok(home, "add", "root", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    ok(home, "add", "val", "--role", "viewer", "--password-stdin", stdin="viewer password\n")
    listed = ok(home, "list")
    rows = {line.split()[0]: line.split()[1] for line in listed.splitlines()[1:]}
    assert rows == {"root": "admin", "val": "viewer"}
    assert {(u["name"], u["role"]) for u in json.loads(ok(home, "list", "--json"))} == {
        ("root", "admin"),
        ("val", "viewer"),
    }
    assert service(home).sign_in("root", PASSWORD).role == "admin"  # the password read from stdin

    out = ok(home, "token", "val", "laptop")
    tokens = re.findall(r"\bwst_[A-Za-z0-9_-]{20,}", out)
    assert len(tokens) == 1, out
    plain = tokens[0]
    users = service(home)
    who = users.authenticate({"authorization": f"Bearer {plain}"}, {})
    assert who is not None and (who.name, who.role, who.via) == ("val", "viewer", "token")

    (row,) = json.loads(ok(home, "tokens", "val", "--json"))
    assert (row["user"], row["name"], row["revoked_at"]) == ("val", "laptop", None)
    listed_tokens = ok(home, "tokens")
    assert plain.startswith(row["prefix"]) and plain not in listed_tokens
    assert row["id"] in listed_tokens and listed_tokens.splitlines()[1].endswith("active")

    assert "revoked token 'laptop'" in ok(home, "revoke", row["id"])
    assert "revoked" in ok(home, "tokens", "val").splitlines()[1]
    assert service(home).authenticate({"authorization": f"Bearer {plain}"}, {}) is None


def test_role_passwd_rm_and_the_last_admin(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "add", "root", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    ok(home, "add", "mia", "--password-stdin", stdin="member password\n")  # --role defaults to member

    assert "mia is now a viewer" in ok(home, "role", "mia", "viewer")
    assert service(home).get("mia").role == "viewer"

    assert "sessions ended" in ok(home, "passwd", "mia", "--password-stdin", stdin="a new password\n")
    users = service(home)
    assert users.sign_in("mia", "a new password").name == "mia"

    refused = users_cli(home, "rm", "root")
    assert refused.returncode == 2
    assert "last admin" in refused.stderr and "Traceback" not in refused.stderr
    demoted = users_cli(home, "role", "root", "member")
    assert demoted.returncode == 2 and "last admin" in demoted.stderr
    assert service(home).get("root").role == "admin"

    assert "removed mia" in ok(home, "rm", "mia")
    assert [u.name for u in service(home).list()] == ["root"]


def test_bad_input_exits_2_with_a_message(tmp_path: Path) -> None:
    home = tmp_path / "home"
    short = users_cli(home, "add", "root", "--role", "admin", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "password must be" in short.stderr and "Traceback" not in short.stderr
    bad_name = users_cli(home, "add", "Not A Name", "--password-stdin", stdin=PASSWORD + "\n")
    assert bad_name.returncode == 2 and "name must be" in bad_name.stderr
    ok(home, "add", "root", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    again = users_cli(home, "add", "root", "--password-stdin", stdin=PASSWORD + "\n")
    assert again.returncode == 2 and "exists already" in again.stderr
    unknown = users_cli(home, "rm", "nobody")
    assert unknown.returncode == 2 and "no user named 'nobody'" in unknown.stderr
    assert users_cli(home, "role", "root", "owner").returncode == 2  # argparse: not one of the roles


def test_audit_shows_user_add(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "add", "root", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    ok(home, "token", "root", "ci")
    text = ok(home, "audit")
    assert re.search(r"user\.add\s+cli\s+root", text), text
    events = json.loads(ok(home, "audit", "--json", "--action", "user."))
    assert [(e["action"], e["actor"], e["target"], e["detail"]) for e in events] == [
        ("user.add", "cli", "root", {"role": "admin"})
    ]
    assert [e["action"] for e in json.loads(ok(home, "audit", "--json"))] == ["token.create", "user.add"]
