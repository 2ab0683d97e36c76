"""The notification bell (issue 20, point 5): a button in the page header, outside the tabs, with the unread count;
it opens the list of notifications (Mark all read) and, for admins, the Webhooks panel (``notifications.yaml``
and the recent deliveries). A ``gr.Timer`` polls every few seconds while the page is open, on any tab, and shows
a toast for each new notification. Wiring only: every action is one call into ``studio.notifications``.

Who asks comes from the front door (``components.permissions.gradio_principal``): a user sees their own
notifications and those for everyone; the single user (no sign-in) and the operator key see all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import gradio as gr

from components.common import handle_errors
from components.permissions import gradio_principal
from components.tables import column_widths
from studio.context import AppContext
from studio.db.tables import utcnow
from studio.errors import ForbiddenError
from studio.notifications import service, webhooks
from studio.notifications.service import NotificationPublic
from studio.notifications.webhooks import DeliveryPublic

POLL_S = 3.0
LIST_LIMIT = 50
DELIVERY_LIMIT = 50
TOAST_LAG = timedelta(seconds=10)  # a notification committed a moment after a newer one still gets its toast
MAX_TOASTS = 5  # per poll: a burst (a sweep of jobs ending) shows the newest few; the list has all of them
LIST_COLUMNS = ["Time (UTC)", "Level", "Title", "Link", "New"]
DELIVERY_COLUMNS = ["Updated (UTC)", "Kind", "Title", "URL", "State", "Attempts", "HTTP", "Error"]
WIDTHS = {"Time (UTC)": 150, "Updated (UTC)": 150, "Title": 320, "Link": 240, "URL": 260, "Error": 320, "New": 60}
WEBHOOKS_HELP = (
    "Each notification of a kind is POSTed as JSON (`id, kind, title, body, link, level, created_at, data`) to the "
    'URLs listed under that kind; `"*"` lists URLs for every kind. A failed post is retried 5 times (after 1, 2, '
    "4, 8 s); the table shows each delivery's state. Saved to `STUDIO_HOME/notifications.yaml`."
)


@dataclass(frozen=True)
class ToastCursor:
    """Per-page: toasts were shown up to ``after``; ``seen`` holds the ids shown within the last ``TOAST_LAG``."""

    after: datetime | None = None
    seen: tuple[str, ...] = ()


def bell_label(unread: int) -> str:
    """The bell's text: ``Notifications (3)`` (written in text: no emoji font needed)."""
    return f"Notifications ({unread})" if unread else "Notifications"


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _rows(notes: list[NotificationPublic]) -> list[list[str]]:
    return [[_when(n.created_at), n.level, n.title, n.link, "" if n.read else "new"] for n in notes]


def _delivery_rows(deliveries: list[DeliveryPublic]) -> list[list[Any]]:
    return [
        [_when(d.updated_at), d.kind, d.title, d.url, d.state, d.attempts, d.status_code or "", d.error]
        for d in deliveries
    ]


def _toast(note: NotificationPublic) -> None:
    title = note.kind.replace(".", " ").capitalize()  # "Job failed", "Eval ready", "Disk low"
    message = f"{note.title} ({note.link})" if note.link else note.title
    if note.level in ("error", "warning"):
        gr.Warning(message, title=title)
    else:
        gr.Info(message, title=title)


def _is_admin(principal: Any) -> bool:
    return principal is None or getattr(principal, "role", None) == "admin"


def create_notification_bell(ctx: AppContext) -> dict[str, Any]:
    db = ctx.db

    def user_id() -> str | None:
        principal = gradio_principal()
        return getattr(principal, "user_id", None) if principal is not None else None

    def listing(uid: str | None) -> tuple[str, int, list[list[str]]]:
        count = service.unread_count(db, uid)
        return bell_label(count), count, _rows(service.for_user(db, uid, limit=LIST_LIMIT))

    def admin_only() -> None:
        """Defence in depth: the front door refuses the webhook events to non-admins already."""
        principal = gradio_principal()
        if not _is_admin(principal):
            raise ForbiddenError(
                f"{principal.name} is a {principal.role}: only admins see and change the webhooks", param="webhooks"
            )

    with gr.Row(elem_id="notifications-bar"):
        bell = gr.Button(bell_label(0), size="sm", scale=0, min_width=170, elem_id="notifications-bell")
        # the count as a value: API clients get it (a button's text is not an output they receive)
        unread = gr.Number(0, precision=0, visible=False, label="Unread", elem_id="notifications-unread")
    panel_open = gr.State(False)
    cursor = gr.State(ToastCursor())
    with gr.Column(visible=False, elem_id="notifications-panel") as panel:
        table = gr.Dataframe(
            headers=LIST_COLUMNS,
            column_widths=column_widths(LIST_COLUMNS, WIDTHS),
            interactive=False,
            wrap=True,
            label=f"Notifications (newest first, at most {LIST_LIMIT})",
            elem_id="notifications-list",
        )
        with gr.Row():
            read_btn = gr.Button("Mark all read", size="sm", elem_id="notifications-read")
            close_btn = gr.Button("Close", size="sm", elem_id="notifications-close")
        with gr.Accordion("Webhooks", open=False, visible=False, elem_id="notifications-webhooks") as hooks_box:
            gr.Markdown(WEBHOOKS_HELP)
            yaml_box = gr.Code(language="yaml", label="notifications.yaml", elem_id="notifications-webhooks-yaml")
            with gr.Row():
                save_btn = gr.Button("Save webhooks", variant="primary", elem_id="notifications-webhooks-save")
                deliveries_btn = gr.Button("Refresh deliveries", elem_id="notifications-deliveries-refresh")
            deliveries = gr.Dataframe(
                headers=DELIVERY_COLUMNS,
                column_widths=column_widths(DELIVERY_COLUMNS, WIDTHS),
                interactive=False,
                wrap=True,
                label=f"Recent deliveries (newest first, at most {DELIVERY_LIMIT})",
                elem_id="notifications-deliveries",
            )
    timer = gr.Timer(POLL_S)

    @handle_errors
    def notifications_list() -> tuple[str, int, list[list[str]]]:
        """The unread count (the bell's text) and the newest notifications of the signed-in user."""
        return listing(user_id())

    @handle_errors
    def notifications_read() -> tuple[str, int, list[list[str]]]:
        """Mark all of the signed-in user's notifications read."""
        uid = user_id()
        service.mark_read(db, uid, "all")
        return listing(uid)

    def start_cursor(uid: str | None) -> ToastCursor:
        now = utcnow()
        return ToastCursor(now, tuple(n.id for n in service.since(db, uid, now - TOAST_LAG)))

    @handle_errors
    def notifications_show(state: ToastCursor | None) -> tuple[Any, ...]:
        """Page load: the bell, the list, the toast cursor (from now on), and for admins the webhooks."""
        uid = user_id()
        label, count, rows = listing(uid)
        admin = _is_admin(gradio_principal())
        text = webhooks.config_text(ctx.settings) if admin else ""
        sent = _delivery_rows(webhooks.recent_deliveries(db, DELIVERY_LIMIT)) if admin else []
        return start_cursor(uid), label, count, rows, gr.Accordion(visible=admin), text, sent

    @handle_errors
    def notifications_poll(state: ToastCursor | None) -> tuple[ToastCursor, str, int]:
        """Every few seconds: a toast per new notification, and the bell's count."""
        uid = user_id()
        count = service.unread_count(db, uid)
        if state is None or state.after is None:
            return start_cursor(uid), bell_label(count), count
        fresh = service.since(db, uid, state.after - TOAST_LAG)
        new = [n for n in fresh if n.id not in state.seen]
        for note in new[-MAX_TOASTS:]:
            _toast(note)
        newest = max([state.after, *(n.created_at for n in fresh)])
        seen = tuple(n.id for n in fresh if n.created_at > newest - TOAST_LAG)
        return ToastCursor(newest, seen), bell_label(count), count

    @handle_errors
    def notifications_deliveries() -> list[list[Any]]:
        """The newest webhook deliveries: state, attempts, last HTTP status, error (admins)."""
        admin_only()
        return _delivery_rows(webhooks.recent_deliveries(db, DELIVERY_LIMIT))

    @handle_errors
    def notifications_webhooks_save(text: str) -> list[list[Any]]:
        """Validate and save ``notifications.yaml`` (admins); returns the recent deliveries."""
        admin_only()
        config = webhooks.save_config(ctx.settings, text or "")
        count = sum(len(urls) for urls in config.webhooks.values())
        gr.Info(f"Saved {count} webhook URL{'s' if count != 1 else ''} for {len(config.webhooks)} kind(s).")
        return _delivery_rows(webhooks.recent_deliveries(db, DELIVERY_LIMIT))

    # lambdas: the front door lets every role run events named "lambda" (they only open and close the panel)
    opened = bell.click(
        lambda is_open: (not is_open, gr.Column(visible=not is_open)),
        [panel_open],
        [panel_open, panel],
        api_visibility="private",
        show_progress="hidden",
    )
    opened.then(notifications_list, None, [bell, unread, table], api_name="notifications_list", show_progress="hidden")
    close_btn.click(lambda: (False, gr.Column(visible=False)), None, [panel_open, panel], api_visibility="private")
    read_btn.click(notifications_read, None, [bell, unread, table], api_name="notifications_read")
    timer.tick(
        notifications_poll,
        [cursor],
        [cursor, bell, unread],
        api_name="notifications_poll",
        api_visibility="undocumented",
        show_progress="hidden",
    )
    save_btn.click(notifications_webhooks_save, [yaml_box], [deliveries], api_name="notifications_webhooks_save")
    deliveries_btn.click(notifications_deliveries, None, [deliveries], api_name="notifications_deliveries")

    return {
        "bell": bell,
        "unread": unread,
        "panel": panel,
        "table": table,
        "timer": timer,
        "webhooks_box": hooks_box,
        "yaml": yaml_box,
        "deliveries": deliveries,
        # app.py: demo.load(load_fn, load_inputs, load_outputs, api_name="notifications_show", ...)
        "load_fn": notifications_show,
        "load_inputs": [cursor],
        "load_outputs": [cursor, bell, unread, table, hooks_box, yaml_box, deliveries],
    }
