"""Saved Playground conversations over REST: save an exchange, open one, list them with filters, delete one.

Errors use the OpenAI shape (``{"error": {"message", "type", "param", "code"}}``): 400 naming the field, 404
for an unknown conversation id.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from studio.api.routing import StudioRoute
from studio.api.schemas import KEYED_ERRORS, RequestBody
from studio.context import AppContext
from studio.playground.conversations import (
    MAX_LIMIT,
    ConversationDetail,
    ConversationPublic,
    MessageCreate,
    delete_conversation,
    get_conversation,
    list_conversations,
    save_exchange,
)

router = APIRouter(prefix="/api/inference", tags=["Inference"], responses=KEYED_ERRORS, route_class=StudioRoute)


def _ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


class ConversationSave(RequestBody):
    """Turns to store: in a new conversation (no ``conversation_id``) or at the end of an existing one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                    "use_case": "chat",
                    "messages": [
                        {"role": "user", "content": "Name a prime number.", "params": {"temperature": 0.7}},
                        {"role": "assistant", "content": "7", "stats": {"completion_tokens": 1}},
                    ],
                }
            ]
        },
    )

    conversation_id: str | None = Field(default=None, description="Append to this conversation; omit to start one.")
    model: str = Field(description="The model (or alias) the turns were generated with.")
    use_case: str | None = Field(default=None, description="A free label to filter the history by, e.g. 'coding'.")
    title: str | None = Field(default=None, description="Defaults to the first user message, cut short.")
    messages: list[MessageCreate] = Field(min_length=1, description="The turns, in order.")


class ConversationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ConversationPublic]


class ConversationDeleted(BaseModel):
    id: str
    object: Literal["conversation"] = "conversation"
    deleted: bool = True


@router.post("/conversation/save", response_model=ConversationDetail)
def save_conversation(body: ConversationSave, request: Request) -> ConversationDetail:
    """Store the turns in one transaction and return the whole conversation (with its id)."""
    return save_exchange(
        _ctx(request).db,
        body.conversation_id,
        body.messages,
        model=body.model,
        use_case=body.use_case,
        title=body.title,
    )


@router.get("/conversation/{conversation_id}", response_model=ConversationDetail)
def read_conversation(conversation_id: str, request: Request) -> ConversationDetail:
    """One conversation with every turn in order (role, content, time, model, params, stats)."""
    return get_conversation(_ctx(request).db, conversation_id)


@router.get("/conversations", response_model=ConversationList)
def read_conversations(
    request: Request,
    model: str | None = Query(default=None, description="Only conversations with this model."),
    use_case: str | None = Query(default=None, description="Only conversations with this use case."),
    limit: int = Query(default=100, ge=1, le=MAX_LIMIT, description="At most this many."),
) -> ConversationList:
    """Saved conversations, most recently updated first, each with its number of turns."""
    return ConversationList(data=list_conversations(_ctx(request).db, model=model, use_case=use_case, limit=limit))


@router.delete("/conversation/{conversation_id}", response_model=ConversationDeleted)
def remove_conversation(conversation_id: str, request: Request) -> ConversationDeleted:
    """Delete a conversation and all its turns."""
    delete_conversation(_ctx(request).db, conversation_id)
    return ConversationDeleted(id=conversation_id)
