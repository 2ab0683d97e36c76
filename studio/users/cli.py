"""The ``studio users ...`` verbs (issue 19)::

    studio users add NAME [--role admin|member|viewer] [--password-stdin]
    studio users list [--json]
    studio users passwd NAME [--password-stdin]
    studio users role NAME ROLE
    studio users quota NAME KEY=VALUE...        (concurrent_generations, queued_jobs, gpu_hours_per_day; '' = none)
    studio users rm NAME
    studio users token NAME TOKEN_NAME          (prints the token once)
    studio users tokens [NAME] [--json]
    studio users revoke TOKEN_ID
    studio users audit [--limit N] [--action PREFIX] [--json]

Passwords are asked twice on a terminal, or read from the first line of stdin with ``--password-stdin``.
The first admin can also come from ``STUDIO_ADMIN_USER`` + ``STUDIO_ADMIN_PASSWORD`` when the studio starts.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from studio.auth import Principal
from studio.db.engine import Database
from studio.errors import ValidationError
from studio.settings import Settings
from studio.users.roles import ROLES
from studio.users.service import QUOTA_KEYS, UserService


def _service() -> UserService:
    settings = Settings()
    settings.ensure_dirs()
    return UserService(settings, Database(settings.db_url))


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise ValidationError("no password on stdin", param="password")
        return line
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValidationError("the two passwords differ", param="password")
    return first


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def cmd_add(args: argparse.Namespace) -> int:
    user = _service().add(args.name, role=args.role, password=_password(args))
    print(f"added {user.role} {user.name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    users = _service().list()
    if args.json:
        print(json.dumps([{**u.__dict__, "created_at": u.created_at.isoformat()} for u in users], indent=2))
        return 0
    if not users:
        print("no users: the studio is single-user (open on loopback, or STUDIO_API_KEY)")
        return 0
    print(f"{'NAME':<24} {'ROLE':<8} {'SIGN-IN':<18} {'CREATED':<16} QUOTAS")
    for u in users:
        how = "password" if u.has_password else ""
        if u.hf_username:
            how = f"{how}+hf:{u.hf_username}" if how else f"hf:{u.hf_username}"
        quotas = ", ".join(f"{k}={v}" for k, v in u.quotas.items()) or "-"
        print(f"{u.name:<24} {u.role:<8} {how:<18} {_when(u.created_at):<16} {quotas}")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    _service().set_password(args.name, _password(args))
    print(f"password of {args.name} changed; their sessions ended")
    return 0


def cmd_role(args: argparse.Namespace) -> int:
    _service().set_role(args.name, args.role)
    print(f"{args.name} is now a {args.role}")
    return 0


def cmd_quota(args: argparse.Namespace) -> int:
    quotas: dict[str, Any] = {}
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValidationError(f"write quotas as KEY=VALUE (KEY one of {', '.join(QUOTA_KEYS)}); got {pair!r}")
        try:
            quotas[key.strip()] = float(value) if value.strip() else None
        except ValueError:
            raise ValidationError(f"{key} must be a number or empty; got {value!r}", param=key) from None
    _service().set_quotas(args.name, quotas)
    print(
        f"quotas of {args.name}: "
        + ", ".join(f"{k}={'none' if v is None else v:g}" if v is not None else f"{k}=none" for k, v in quotas.items())
    )
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    _service().remove(args.name)
    print(f"removed {args.name} and their API tokens")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    plain, info = _service().create_token(args.name, args.token_name)
    print(f"token {info.name!r} for {args.name} (id {info.id}); it is shown only now:")
    print(plain)
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    service = _service()
    tokens = service.tokens(args.name)
    names = {u.id: u.name for u in service.list()}
    if args.json:
        rows = [
            {
                "id": t.id,
                "user": names.get(t.user_id, t.user_id),
                "name": t.name,
                "prefix": t.prefix,
                "created_at": t.created_at.isoformat(),
                "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
                "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
            }
            for t in tokens
        ]
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'ID':<34} {'USER':<16} {'NAME':<20} {'STARTS':<12} {'CREATED':<16} {'LAST USED':<16} STATE")
    for t in tokens:
        state = "revoked" if t.revoked_at else "active"
        print(
            f"{t.id:<34} {names.get(t.user_id, '?'):<16} {t.name:<20} {t.prefix:<12} {_when(t.created_at):<16} "
            f"{_when(t.last_used_at):<16} {state}"
        )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    info = _service().revoke_token(args.token_id, by=Principal("cli", "cli"))
    print(f"revoked token {info.name!r} ({info.id})")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    events = _service().audit_log(args.limit, args.action)
    if args.json:
        rows = [
            {
                "at": e.at.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "ip": e.ip,
                "detail": e.detail,
            }
            for e in events
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for e in events:
        detail = json.dumps(e.detail) if e.detail else ""
        print(f"{_when(e.at)}  {e.action:<16} {e.actor:<16} {e.target:<16} {e.ip or '':<15} {detail}")
    return 0


def register(sub: Any) -> None:
    users = sub.add_parser("users", help="users, roles, API tokens and the audit log (a team's studio)")
    usub = users.add_subparsers(dest="users_command", required=True)
    add = usub.add_parser("add", help="add a user (the first one makes every surface ask for a user)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="member")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(func=cmd_add)
    ls = usub.add_parser("list", help="list users")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    pw = usub.add_parser("passwd", help="set a user's password (ends their sessions)")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true")
    pw.set_defaults(func=cmd_passwd)
    role = usub.add_parser("role", help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    role.set_defaults(func=cmd_role)
    quota = usub.add_parser("quota", help=f"set a user's own quotas ({', '.join(QUOTA_KEYS)}); KEY= clears one")
    quota.add_argument("name")
    quota.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    quota.set_defaults(func=cmd_quota)
    rm = usub.add_parser("rm", help="remove a user and their tokens")
    rm.add_argument("name")
    rm.set_defaults(func=cmd_rm)
    tok = usub.add_parser("token", help="create a personal API token for a user (printed once)")
    tok.add_argument("name")
    tok.add_argument("token_name")
    tok.set_defaults(func=cmd_token)
    toks = usub.add_parser("tokens", help="list API tokens (of one user)")
    toks.add_argument("name", nargs="?")
    toks.add_argument("--json", action="store_true")
    toks.set_defaults(func=cmd_tokens)
    rv = usub.add_parser("revoke", help="revoke an API token by id")
    rv.add_argument("token_id")
    rv.set_defaults(func=cmd_revoke)
    au = usub.add_parser("audit", help="admin actions and failed sign-ins, newest first")
    au.add_argument("--limit", type=int, default=100)
    au.add_argument("--action", default=None, help="only actions starting with this (user., token., signin.)")
    au.add_argument("--json", action="store_true")
    au.set_defaults(func=cmd_audit)
