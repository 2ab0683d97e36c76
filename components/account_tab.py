"""Account tab (issue 19): who is signed in, the user's own API tokens, and -- for admins -- the users and the audit
log. Wiring only: every action is one call into ``ctx.users`` (``studio.users.service.UserService``).

Who asks comes from the front door (``components.permissions.gradio_principal``). It also refuses the ``users_*``
events to non-admins with a 403 before they reach a handler; the handlers check the role again so that the panel
stays closed should the permission table ever change.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
from gradio.events import api as gradio_api

from components.common import handle_errors
from components.permissions import gradio_principal
from components.tables import column_widths
from studio.auth import Principal
from studio.context import AppContext
from studio.errors import ForbiddenError, UserError, ValidationError
from studio.users.roles import ROLES
from studio.users.service import TokenInfo, UserInfo
from studio.users.tables import AuditEvent

TOKEN_COLUMNS = ["Name", "Starts with", "Created", "Last used", "State", "Id"]
USER_COLUMNS = ["Name", "Role", "Sign-in", "Created", "Quotas"]
AUDIT_COLUMNS = ["At", "Action", "Actor", "Target", "IP", "Detail"]
WIDTHS = {"Name": 160, "Id": 300, "Quotas": 260, "Detail": 260, "Starts with": 120, "Created": 140, "At": 140}
AUDIT_LIMIT = 200
SINGLE_USER = "single-user studio: no sign-in configured (`studio users add NAME --role admin` adds users)"
TOKENS_NEED_USERS = (
    "API tokens belong to users, and this is a single-user studio: add a user first "
    "(studio users add NAME --role admin, or the Users panel below), then sign in as that user"
)
OPERATOR_HAS_NO_TOKENS = (
    "you are signed in with the operator key (STUDIO_API_KEY), which is no user: sign in as a user to make API "
    "tokens of your own"
)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def _token_rows(tokens: list[TokenInfo]) -> list[list[str]]:
    return [
        [
            t.name,
            f"{t.prefix}…",
            _when(t.created_at),
            _when(t.last_used_at) if t.last_used_at else "never",
            f"revoked {_when(t.revoked_at)}" if t.revoked_at else "active",
            t.id,
        ]
        for t in tokens
    ]


def _sign_in(user: UserInfo) -> str:
    ways = ["password"] if user.has_password else []
    if user.hf_username:
        ways.append(f"Hugging Face: {user.hf_username}")
    return ", ".join(ways) or "-"


def _user_rows(users: list[UserInfo]) -> list[list[str]]:
    return [
        [
            u.name,
            u.role,
            _sign_in(u),
            _when(u.created_at),
            ", ".join(f"{k}={'none' if v is None else v}" for k, v in u.quotas.items()) or "role defaults",
        ]
        for u in users
    ]


def _audit_rows(events: list[AuditEvent]) -> list[list[str]]:
    return [
        [_when(e.at), e.action, e.actor, e.target, e.ip or "", json.dumps(e.detail) if e.detail else ""] for e in events
    ]


def _ip(request: gr.Request | None) -> str | None:
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


def create_account_tab(ctx: AppContext) -> dict[str, Any]:
    users = ctx.users

    def users_on() -> bool:
        return users.enabled()

    def whoami(principal: Principal | None) -> str:
        if principal is None or not users_on():
            return f"**{SINGLE_USER}**"
        how = {"token": "an API token", "session": "a password", "bearer": "the operator key (STUDIO_API_KEY)"}
        via = how.get(principal.via, principal.via)
        return f"Signed in as **{principal.name}** ({principal.role}), with {via}."

    def token_owner(principal: Principal | None) -> str:
        """The user whose tokens the caller manages; refused where there is no such user."""
        if principal is None or not users_on():
            raise UserError(TOKENS_NEED_USERS, param="token_name")
        if principal.user_id is None:
            raise UserError(OPERATOR_HAS_NO_TOKENS, param="token_name")
        return principal.name

    def my_tokens(principal: Principal | None) -> list[list[str]]:
        if principal is None or principal.user_id is None or not users_on():
            return []
        return _token_rows(users.tokens(principal.name))

    def is_admin(principal: Principal | None) -> bool:
        return principal is None or principal.role == "admin"

    def admin_actor(principal: Principal | None) -> str:
        """Defence in depth: the front door refuses users_* to non-admins already."""
        if not is_admin(principal):
            assert principal is not None
            raise ForbiddenError(
                f"{principal.name} is a {principal.role} and may not manage users (admins only): ask an admin",
                param="name",
            )
        return principal.name if principal is not None else "studio"

    def admin_tables() -> tuple[list[list[str]], list[list[str]]]:
        return _user_rows(users.list()), _audit_rows(users.audit_log(AUDIT_LIMIT))

    with gr.Tab("Account", id="account") as tab:
        signed_in = gr.Markdown(elem_id="account-signed-in")
        refresh_btn = gr.Button("Refresh", elem_id="account-refresh", size="sm")

        with gr.Accordion("My API tokens", open=True, elem_id="account-tokens-box"):
            gr.Markdown(
                "A personal API token signs you in from scripts: `Authorization: Bearer wst_…` for the OpenAI API "
                "(`/v1`), the REST API and `gradio_client`. It acts as you, with your role. Revoke a token you no "
                "longer use, or one that may have leaked."
            )
            tokens_table = gr.Dataframe(
                headers=TOKEN_COLUMNS,
                column_widths=column_widths(TOKEN_COLUMNS, WIDTHS),
                interactive=False,
                wrap=True,
                label="My tokens",
                elem_id="account-tokens",
            )
            with gr.Row():
                token_name = gr.Textbox(
                    label="New token's name",
                    info="What the token is for, so you know which to revoke later (1-100 characters).",
                    placeholder="e.g. laptop-notebook",
                    elem_id="account-token-name",
                    scale=3,
                )
                create_btn = gr.Button("Create token", variant="primary", elem_id="account-token-create", scale=1)
            new_token = gr.Textbox(
                label="Your new token (shown only now: copy it)",
                info="Only its hash is kept: it cannot be shown again. Lost it? Revoke it and create another.",
                interactive=False,
                buttons=["copy"],
                visible=False,
                elem_id="account-new-token",
            )
            with gr.Row():
                token_id = gr.Textbox(
                    label="Token id", info="Click a row of the table, or paste its id.", elem_id="account-token-id"
                )
                revoke_btn = gr.Button("Revoke", variant="stop", elem_id="account-token-revoke")

        with gr.Accordion("Users (admins)", open=True, visible=False, elem_id="account-users-box") as users_box:
            gr.Markdown(
                "Roles: **viewer** reads and chats; **member** also changes datasets, jobs, evaluations, aliases "
                "and votes; **admin** also manages users, models on disk, deployments and settings. A role or "
                "password change signs the user out of the browser (tokens stay valid)."
            )
            users_table = gr.Dataframe(
                headers=USER_COLUMNS,
                column_widths=column_widths(USER_COLUMNS, WIDTHS),
                interactive=False,
                wrap=True,
                label="Users",
                elem_id="account-users",
            )
            users_refresh = gr.Button("Refresh users", size="sm", elem_id="account-users-refresh")
            with gr.Row():
                user_name = gr.Textbox(
                    label="User name",
                    info="Lower-case letters, digits, '.', '_' or '-'. Click a row to pick a user.",
                    elem_id="account-user-name",
                )
                user_role = gr.Dropdown(list(ROLES), value="member", label="Role", elem_id="account-user-role")
                user_password = gr.Textbox(
                    label="Password",
                    type="password",
                    info="At least 8 characters. Tell it to the user over a private channel.",
                    elem_id="account-user-password",
                )
            with gr.Row():
                add_btn = gr.Button("Add user", variant="primary", elem_id="account-user-add")
                role_btn = gr.Button("Change role", elem_id="account-user-role-set")
                passwd_btn = gr.Button("Set password", elem_id="account-user-passwd")
            with gr.Row():
                confirm_remove = gr.Checkbox(
                    label="Yes, remove this user and revoke their tokens", value=False, elem_id="account-user-confirm"
                )
                remove_btn = gr.Button("Remove user", variant="stop", elem_id="account-user-remove")
            with gr.Row():
                audit_action = gr.Textbox(
                    label="Audit: action starts with",
                    info="e.g. user., token., signin.failed (empty: every action)",
                    elem_id="account-audit-action",
                    scale=3,
                )
                audit_btn = gr.Button("Show audit log", elem_id="account-audit-refresh", scale=1)
            audit_table = gr.Dataframe(
                headers=AUDIT_COLUMNS,
                column_widths=column_widths(AUDIT_COLUMNS, WIDTHS),
                interactive=False,
                wrap=True,
                label=f"Audit log (newest first, at most {AUDIT_LIMIT})",
                elem_id="account-audit",
            )

    @handle_errors
    def account_show() -> tuple[str, list[list[str]], Any, list[list[str]], list[list[str]]]:
        """Who is signed in, their tokens and, for an admin, the users and the audit log."""
        principal = gradio_principal()
        admin = is_admin(principal)
        user_rows, audit_rows = admin_tables() if admin else ([], [])
        return whoami(principal), my_tokens(principal), gr.Accordion(visible=admin), user_rows, audit_rows

    @handle_errors
    def account_tokens() -> list[list[str]]:
        """The signed-in user's API tokens (revoked ones included)."""
        principal = gradio_principal()
        token_owner(principal)
        return my_tokens(principal)

    @handle_errors
    def account_token_create(name: str, request: gr.Request = None) -> tuple[Any, list[list[str]], str]:  # type: ignore[assignment]
        """A new API token for the signed-in user; the plain token is returned this once."""
        principal = gradio_principal()
        owner = token_owner(principal)
        plain, info = users.create_token(owner, name or "", actor=owner, ip=_ip(request))
        gr.Warning(f"Copy token '{info.name}' now: it is shown only this once.")
        return gr.Textbox(value=plain, visible=True), my_tokens(principal), ""

    @handle_errors
    def account_token_revoke(token: str, request: gr.Request = None) -> tuple[list[list[str]], str]:  # type: ignore[assignment]
        """Revoke one of your tokens (an admin may revoke anyone's)."""
        principal = gradio_principal()
        if principal is None or not users_on():
            raise UserError(TOKENS_NEED_USERS, param="token_id")
        if not (token or "").strip():
            raise ValidationError("click a token's row or paste its id first", param="token_id")
        info = users.revoke_token(token, by=principal, ip=_ip(request))
        gr.Info(f"Revoked token '{info.name}': requests with it are refused from now on.")
        return my_tokens(principal), ""

    def clicked_cell(evt: gr.SelectData, data: Any, column: int) -> str:
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        values = data.values.tolist() if hasattr(data, "values") else data
        return str(values[row][column]) if values and values[row] else ""

    def select_row(evt: gr.SelectData, data: Any) -> str:
        """The clicked user's name."""
        return clicked_cell(evt, data, 0)

    def select_token(evt: gr.SelectData, data: Any) -> str:
        """The clicked token's id (the last column)."""
        return clicked_cell(evt, data, -1)

    @handle_errors
    def users_list() -> list[list[str]]:
        """Every user: name, role, how they sign in, created, their own quotas."""
        admin_actor(gradio_principal())
        return _user_rows(users.list())

    @handle_errors
    def users_add(name: str, role: str, password: str, request: gr.Request = None) -> tuple[Any, ...]:  # type: ignore[assignment]
        """Add a user with a role and a password."""
        actor = admin_actor(gradio_principal())
        first = not users_on()
        if first and role != "admin":
            # the first user turns sign-in on for everyone: a non-admin would leave no one to manage users here
            raise ValidationError(
                "the first user turns sign-in on for everyone and must be an admin: pick the role admin",
                param="role",
            )
        info = users.add(name or "", role=role, password=password or "", actor=actor, ip=_ip(request))
        gr.Info(f"Added {info.role} '{info.name}'.")
        if first:
            gr.Warning(f"Sign-in is on now: reload the page and sign in as '{info.name}'.")
        return (*admin_tables(), "")

    @handle_errors
    def users_passwd(name: str, password: str, request: gr.Request = None) -> tuple[Any, ...]:  # type: ignore[assignment]
        """Set a user's password (signs them out of the browser)."""
        actor = admin_actor(gradio_principal())
        users.set_password(name or "", password or "", actor=actor, ip=_ip(request))
        gr.Info(f"Password of '{name}' set; their browser sessions ended.")
        return (*admin_tables(), "")

    @handle_errors
    def users_role(name: str, role: str, request: gr.Request = None) -> tuple[Any, ...]:  # type: ignore[assignment]
        """Change a user's role (the last admin keeps theirs)."""
        actor = admin_actor(gradio_principal())
        users.set_role(name or "", role, actor=actor, ip=_ip(request))
        gr.Info(f"'{name}' is a {role} now.")
        return admin_tables()

    @handle_errors
    def users_remove(name: str, confirm: bool, request: gr.Request = None) -> tuple[Any, ...]:  # type: ignore[assignment]
        """Remove a user and their tokens (tick the confirmation first)."""
        actor = admin_actor(gradio_principal())
        if not confirm:
            raise ValidationError(f"tick 'Yes, remove' to remove '{name}'", param="confirm")
        users.remove(name or "", actor=actor, ip=_ip(request))
        gr.Info(f"Removed user '{name}' and their tokens.")
        return (*admin_tables(), False)

    @handle_errors
    def users_audit(action: str) -> list[list[str]]:
        """The audit log, newest first: admin actions, tokens, failed sign-ins."""
        admin_actor(gradio_principal())
        return _audit_rows(users.audit_log(AUDIT_LIMIT, (action or "").strip() or None))

    with tab:  # the token list alone, for scripts (the page refreshes it with account_show)
        gradio_api(account_tokens, api_name="account_tokens")

    load_outputs = [signed_in, tokens_table, users_box, users_table, audit_table]
    refresh_btn.click(account_show, None, load_outputs, api_name="account_show")
    tab.select(account_show, None, load_outputs, api_visibility="private", show_progress="hidden")
    # private events are classified by api_name (components/permissions.py): "select_row" is a read
    tokens_table.select(select_token, [tokens_table], [token_id], api_name="select_row", api_visibility="private")
    users_table.select(select_row, [users_table], [user_name], api_visibility="private")
    create_btn.click(
        account_token_create, [token_name], [new_token, tokens_table, token_name], api_name="account_token_create"
    )
    revoke_btn.click(account_token_revoke, [token_id], [tokens_table, token_id], api_name="account_token_revoke")
    users_refresh.click(users_list, None, [users_table], api_name="users_list")
    add_btn.click(
        users_add,
        [user_name, user_role, user_password],
        [users_table, audit_table, user_password],
        api_name="users_add",
    )
    passwd_btn.click(
        users_passwd, [user_name, user_password], [users_table, audit_table, user_password], api_name="users_passwd"
    )
    role_btn.click(users_role, [user_name, user_role], [users_table, audit_table], api_name="users_role")
    remove_btn.click(
        users_remove,
        [user_name, confirm_remove],
        [users_table, audit_table, confirm_remove],
        api_name="users_remove",
    )
    audit_btn.click(users_audit, [audit_action], [audit_table], api_name="users_audit")

    return {
        "tab": tab,
        "load_fn": account_show,
        "load_outputs": load_outputs,
        "signed_in": signed_in,
        "tokens_table": tokens_table,
        "users_table": users_table,
    }
