"""Playground "Conversations" view: the active conversation, the saved history (filter by model and use case),
open one into the Chat view, start a new one, delete with confirmation. Wiring only: the logic is in
``studio.playground.prompt_runner`` and ``studio.playground.conversations``."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from components.common import handle_errors
from components.playground.shared import PlaygroundShared
from components.tables import column_widths
from studio.playground.conversations import conversation_facets
from studio.playground.prompt_runner import (
    CONVERSATION_COLUMNS,
    NEW_CONVERSATION_LABEL,
    active_label,
    conversation_table,
    conversation_to_chat,
    conversation_transcript,
    delete_saved_conversation,
    new_conversation,
    open_conversation,
    sync_active_conversation,
)
from studio.playground.session import PlaygroundSession

HEADERS = list(CONVERSATION_COLUMNS)
ALL = ""  # filter value meaning "any"
#: px per column (components/tables.py): the whole id and date on one line, title and model wrap
WIDTHS = {"title": 200, "model": 210, "use case": 110, "messages": 115, "updated": 190, "id": 290}


def create_conversations_panel(shared: PlaygroundShared) -> dict[str, Any]:
    ctx = shared.ctx

    def filter_choices() -> tuple[Any, Any]:
        facets = conversation_facets(ctx.db)
        return (
            gr.Dropdown(choices=[("All models", ALL), *[(m, m) for m in facets.models]]),
            gr.Dropdown(choices=[("All use cases", ALL), *[(u, u) for u in facets.use_cases]]),
        )

    facets = conversation_facets(ctx.db)
    with gr.Row():
        active = gr.Markdown(NEW_CONVERSATION_LABEL, elem_id="playground-active-conversation")
        new_btn = gr.Button("New conversation", elem_id="playground-conversation-new", scale=0, min_width=210)
    with gr.Row():
        model_filter = gr.Dropdown(
            [("All models", ALL), *[(m, m) for m in facets.models]],
            value=ALL,
            label="Model",
            allow_custom_value=True,  # a script may filter by any model id, listed here or not
            elem_id="playground-conversations-model",
            scale=2,
        )
        use_case_filter = gr.Dropdown(
            [("All use cases", ALL), *[(u, u) for u in facets.use_cases]],
            value=ALL,
            label="Use case",
            allow_custom_value=True,
            elem_id="playground-conversations-use-case",
            scale=2,
        )
        refresh_btn = gr.Button("Refresh", elem_id="playground-conversations-refresh", scale=0, min_width=120)
    table = gr.Dataframe(
        value=lambda: conversation_table(ctx.db),  # called on every page load
        headers=HEADERS,
        interactive=False,
        max_height=360,
        wrap=True,
        column_widths=column_widths(HEADERS, WIDTHS),
        label="Saved conversations (click a row to open it in the Chat view)",
        elem_id="playground-conversations",
    )
    with gr.Row():
        selected = gr.Textbox(
            label="Conversation id",
            placeholder="click a row, or paste an id",
            elem_id="playground-conversation-id",
            scale=3,
        )
        open_btn = gr.Button("Open", elem_id="playground-conversation-open", scale=0, min_width=100)
        delete_btn = gr.Button(
            "Delete…", variant="stop", elem_id="playground-conversation-delete", scale=0, min_width=100
        )
    with gr.Row(visible=False, elem_id="playground-conversation-confirm-row") as confirm_row:
        confirm_text = gr.Markdown()
        confirm_btn = gr.Button("Yes, delete", variant="stop", elem_id="playground-conversation-confirm-delete")
        cancel_btn = gr.Button("Cancel", elem_id="playground-conversation-cancel-delete")
    transcript = gr.Markdown("", elem_id="playground-conversation-messages")
    # the Chat view's widget, or a stand-in when the Playground has none (keeps one signature per handler)
    chat_target = shared.chatbot if shared.chatbot is not None else gr.State([])

    # -- handlers ------------------------------------------------------------------------------------------
    @handle_errors
    def list_table(model: str | None, use_case: str | None) -> pd.DataFrame:
        """Saved conversations, most recently updated first, filtered by `model` and `use_case` ('' = any).
        Columns: title, model, use case, messages, updated, id."""
        # a DataFrame keeps the headers even when no conversation matches
        return pd.DataFrame(conversation_table(ctx.db, model=model, use_case=use_case), columns=HEADERS)

    @handle_errors
    def refresh(model: str | None, use_case: str | None, state: PlaygroundSession | None) -> tuple[Any, ...]:
        """The table, the filters' choices and the active-conversation line, after something was saved."""
        state = state or PlaygroundSession()
        models, use_cases = filter_choices()
        return list_table(model, use_case), models, use_cases, sync_active_conversation(ctx.db, state), state

    @handle_errors
    def start_new(state: PlaygroundSession | None) -> tuple[list[Any], PlaygroundSession, str, str, str]:
        """Start a new conversation: the chat is cleared and the next reply is saved as a new conversation."""
        state = state or PlaygroundSession()
        new_conversation(state)
        return [], state, NEW_CONVERSATION_LABEL, "", ""

    @handle_errors
    def open_by_id(
        conversation_id: str, state: PlaygroundSession | None
    ) -> tuple[list[dict[str, str]], PlaygroundSession, str, str]:
        """Open a saved conversation: its messages go to the Chat view and later replies are appended to it.
        Returns (chat messages, active-conversation line, transcript with roles and times)."""
        state = state or PlaygroundSession()
        detail = open_conversation(ctx.db, state, conversation_id)
        return conversation_to_chat(detail), state, active_label(detail), conversation_transcript(detail)

    def open_selected(evt: gr.SelectData, state: PlaygroundSession | None) -> tuple[Any, ...]:
        if not evt.row_value:  # not a data row (e.g. the header)
            return (gr.update(),) * 5
        conversation_id = str(evt.row_value[-1])
        chat, state, label, text = open_by_id(conversation_id, state)
        gr.Info("Opened in the Chat view: new messages continue this conversation.")
        return conversation_id, chat, state, label, text

    def ask_delete(conversation_id: str) -> tuple[Any, str]:
        if not (conversation_id or "").strip():
            raise gr.Error("Click a row in the table first (or paste a conversation id).")
        return gr.Row(visible=True), "Delete the selected conversation and all its messages? This cannot be undone."

    @handle_errors
    def delete(
        conversation_id: str, model: str | None, use_case: str | None, state: PlaygroundSession | None
    ) -> tuple[Any, ...]:
        """Delete a saved conversation and its messages. Returns the refreshed table (and clears the Chat view
        when the deleted conversation was the active one)."""
        state = state or PlaygroundSession()
        was_active = delete_saved_conversation(ctx.db, state, conversation_id)
        gr.Info("Conversation deleted")
        label = NEW_CONVERSATION_LABEL if was_active else sync_active_conversation(ctx.db, state)
        chat = [] if was_active else gr.update()
        return list_table(model, use_case), gr.Row(visible=False), "", label, "", chat, state

    # -- events --------------------------------------------------------------------------------------------
    refresh_inputs = [model_filter, use_case_filter, shared.session]
    refresh_outputs = [table, model_filter, use_case_filter, active, shared.session]
    new_outputs = [chat_target, shared.session, active, transcript, selected]
    new_btn.click(
        start_new,
        [shared.session],
        new_outputs,
        api_name="playground_conversation_new",
        queue=False,
    )
    refresh_btn.click(list_table, [model_filter, use_case_filter], [table], api_name="playground_conversations").then(
        refresh, refresh_inputs, refresh_outputs, api_visibility="private"
    )
    for box in (model_filter, use_case_filter):
        box.input(list_table, [model_filter, use_case_filter], [table], api_visibility="private")
    table.select(
        open_selected,
        [shared.session],
        [selected, chat_target, shared.session, active, transcript],
        api_visibility="private",
    )
    open_btn.click(
        open_by_id,
        [selected, shared.session],
        [chat_target, shared.session, active, transcript],
        api_name="playground_conversation_open",
    )
    delete_btn.click(ask_delete, [selected], [confirm_row, confirm_text], api_visibility="private", queue=False)
    cancel_btn.click(lambda: gr.Row(visible=False), None, [confirm_row], api_visibility="private", queue=False)
    confirm_btn.click(
        delete,
        [selected, model_filter, use_case_filter, shared.session],
        [table, confirm_row, selected, active, transcript, chat_target, shared.session],
        api_name="playground_conversation_delete",
    )

    return {
        "table": table,
        "active": active,
        "refresh_fn": refresh,
        "inputs": refresh_inputs,
        "outputs": refresh_outputs,
        # "Clear chat" in the Chat view can chain these so that clearing also starts a new conversation
        "new_fn": start_new,
        "new_inputs": [shared.session],
        "new_outputs": new_outputs,
    }
