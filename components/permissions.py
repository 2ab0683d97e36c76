"""What each Gradio event needs (issue 19): the role table for every ``api_name`` the UI registers.

Events are classified by their ``api_name`` without Gradio's ``_<n>`` suffix. Reading is the UI's machinery (lists,
refreshes, renders); chatting is generation a viewer may run; an event named nowhere here changes team data and
needs a member (``write``), so a new event is closed to viewers until it is listed. The front door
(``studio.api.security``) applies the table to ``/gradio_api/queue/join`` (by ``fn_index``) and to
``/gradio_api/call|run/<api_name>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from studio.users.roles import Permission

READ = frozenset(
    [
        "list_aliases",
        "aliases_list",
        "lambda",
        "on_select",
        "js_fn",
        "edit",
        "new_form",
        "ask_delete",
        "aliases_validate",
        "finetune_curate_pipeline",
        "finetune_lineage",
        "evaluate_sweeps",
        "evaluate_sweep",
        "do_lineage",
        "aliases_export",
        "adapters_list",
        "adapters_push_status",
        "first_cell_of_clicked_row",
        "sources",
        "export_list",
        "poll",
        "tick",
        "deploy_logs",
        "deploy_list",
        "models_list",
        "models_files",
        "models_downloads",
        "count_prompt",
        "apply_use_case",
        "offer",
        "withdraw",
        "playground_conversations",
        "refresh",
        "list_table",
        "open_selected",
        "playground_conversation_open",
        "redraw",
        "playground_export",
        "show_load_status",
        "clear_use_case",
        "monitor",
        "playground_estimate",
        "playground_models",
        "use_alias_settings",
        "reset",
        "compare_leaderboard",
        "show",
        "compare_rank_next",
        "report",
        "compare_rank_history",
        "prefill",
        "compare_job_status",
        "refresh_pickers",
        "mapping_template",
        "finetune_inspect",
        "on_upload",
        "finetune_datasets",
        "finetune_dataset",
        "versions_for",
        "show_dataset",
        "refresh_conversations",
        "review",
        "rebuild",
        "on_method",
        "on_dataset",
        "finetune_estimate",
        "list_jobs",
        "finetune_jobs",
        "finetune_job",
        "select_row",
        "page_load",
        "open_submitted",
        "switch_source",
        "versions",
        "evaluate_results",
        "refresh_runs",
        "select_run",
        "quiet_show",
        "evaluate_experiments",
        "rows",
        "evaluate_plugins",
        "load",
        "render",
        "read_upload",
        "safety_policy",
        "policy_names",
        "safety_audit_status",
        "picker",
        "list_rows",
        "open_generation",
        "refresh_choices",
        "refresh_models",
        "open_in_playground",
        "safety_audit_compare",
        "safety_audit_export",
        "evaluate_compare",
        "add_row",
        "load_policy_page",
        "account_show",
        "account_tokens",
        "disk_usage",
        "disk_cleanup_preview",
        "costs_totals",
        "resources_snapshot",
        "notifications_list",
        "notifications_read",
        "notifications_poll",
        "notifications_show",
        "playground_filter_models",
        "compare_filter_contenders",
        "compare_filter_pool",
        "compare_filter_sides",
        "finetune_filter_models",
    ]
)
CHAT = frozenset(
    [
        "finetune_curate_preview",  # a judged quality step runs a model
        "playground_generate",
        "generate",
        "playground_prompt",
        "playground_batch",
        "playground_batch_stop",
        "stop_generation",
        "playground_stop",
        "playground_token_view",
        "playground_attention",
        "playground_compare",
        "playground_conversation_new",
        "start_new",
        "playground_conversation_delete",
        "playground_import",
        "aliases_try",
        "safety_scan",
        "scan",
        "adapters_compare_speed",
        "adapters_compare_quality",
        "adapters_batch_ab",
        "account_token_create",
        "account_token_revoke",
    ]
)
ADMIN = frozenset(
    [
        "models_pull",
        "models_cancel",
        "models_resume",
        "models_delete",
        "deploy_start",
        "deploy_add_remote",
        "deploy_stop",
        "deploy_restart",
        "deploy_delete",
        "deploy_alias",
        "safety_save_policy",
        "save_form",
        "safety_save_words",
        "users_list",
        "users_add",
        "users_passwd",
        "users_role",
        "users_remove",
        "users_audit",
        "costs_save",
        "notifications_webhooks_save",
        "notifications_deliveries",
    ]
)
_SUFFIX = re.compile(r"_\d+$")


def permission_of(api_name: str | None) -> Permission:
    """The permission an event with this ``api_name`` needs (unnamed or unknown: admin)."""
    if not api_name:
        return Permission.ADMIN
    base = _SUFFIX.sub("", api_name)
    if base in READ or api_name in READ:
        return Permission.READ
    if base in CHAT or api_name in CHAT:
        return Permission.CHAT
    if base in ADMIN or api_name in ADMIN:
        return Permission.ADMIN
    return Permission.WRITE


class PermissionTable:
    """``table(api_name, fn_index) -> Permission`` for the front door, from the Blocks' registered events;
    ``table.name_of(fn_index)`` names an event for the audit log."""

    def __init__(self, demo: Any) -> None:
        self._by_index = {int(i): getattr(fn, "api_name", None) for i, fn in demo.fns.items()}
        self._names = {name for name in self._by_index.values() if name}

    def __call__(self, api_name: str | None, fn_index: int | None) -> Permission:
        if fn_index is not None:
            return permission_of(self._by_index.get(fn_index)) if fn_index in self._by_index else Permission.ADMIN
        return permission_of(api_name) if api_name in self._names else Permission.READ  # unknown name: Gradio's 404

    def name_of(self, fn_index: int) -> str | None:
        return self._by_index.get(fn_index)


def permission_table(demo: Any) -> Callable[[str | None, int | None], Permission]:
    """The front door's permission lookup for ``demo`` (see :class:`PermissionTable`)."""
    return PermissionTable(demo)


def gradio_principal() -> Any:
    """The principal the front door attached to the Gradio event being handled (None outside an event)."""
    from gradio.context import LocalContext

    from studio.api.security import principal_of

    request = LocalContext.request.get(None)
    inner = getattr(request, "request", None) if request is not None else None
    scope = getattr(inner, "scope", None)
    return principal_of(scope) if isinstance(scope, dict) else None
