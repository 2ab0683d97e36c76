"""Roles and what each may do. One table answers for every surface (REST, Gradio API, UI, WebSocket).

- ``viewer``: read everything shared with the team, and chat (Playground, the OpenAI API).
- ``member``: also compare and vote, datasets, jobs, evaluations, aliases of their own.
- ``admin``: everything, user management and settings included.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    READ = "read"  # look: lists, pages, results
    CHAT = "chat"  # generate: Playground, /v1 chat and completions, the inference WebSocket
    WRITE = "write"  # change team data: datasets, jobs, evaluations, aliases, votes
    ADMIN = "admin"  # users, settings, models on disk, deployments


ORDER = (Permission.READ, Permission.CHAT, Permission.WRITE, Permission.ADMIN)


def strictest(*needed: Permission) -> Permission:
    """The permission that implies all of ``needed``."""
    return max(needed, key=ORDER.index)


ROLES = ("admin", "member", "viewer")

GRANTS: dict[str, frozenset[Permission]] = {
    "viewer": frozenset({Permission.READ, Permission.CHAT}),
    "member": frozenset({Permission.READ, Permission.CHAT, Permission.WRITE}),
    "admin": frozenset(Permission),
}

WHAT = {
    Permission.READ: "read the studio",
    Permission.CHAT: "chat with models",
    Permission.WRITE: "change datasets, jobs, evaluations, aliases or votes",
    Permission.ADMIN: "manage users, settings, models on disk or deployments",
}


def allows(role: str, permission: Permission) -> bool:
    """``role`` may do what ``permission`` names (an unknown role may do nothing)."""
    return permission in GRANTS.get(role, frozenset())


def check_role(role: str) -> str:
    from studio.errors import ValidationError

    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}; got {role!r}", param="role")
    return role


def rest_permission(method: str, path: str) -> Permission:
    """What a REST request (``/v1``, ``/api``) needs. Generation is chat; changing models on disk is admin."""
    method = method.upper()
    if path.startswith("/api/users") or path.startswith("/api/audit"):
        return Permission.READ if path.startswith("/api/users/me") else Permission.ADMIN
    if path.startswith("/api/models"):
        return Permission.READ if method in ("GET", "HEAD") else Permission.ADMIN
    if method in ("GET", "HEAD"):
        return Permission.READ
    if path.startswith("/api/inference/load") or (
        path.startswith("/api/inference/models/") and path.endswith(("/unload", "/swap-adapter"))
    ):
        return Permission.WRITE  # what is loaded changes for the whole team (the Playground's Load is a write too)
    if path.startswith(("/v1/", "/api/inference")):
        return Permission.CHAT
    return Permission.READ if method in ("GET", "HEAD") else Permission.WRITE
