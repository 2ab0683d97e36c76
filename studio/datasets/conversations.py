"""Datasets made from saved Playground conversations: one supervised example per conversation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from studio.datasets.formats import ColumnMapping
from studio.datasets.schemas import ImportResult
from studio.datasets.store import DatasetStore
from studio.datasets.validate import OnInvalid, validate_records
from studio.errors import ValidationError
from studio.playground.conversations import get_conversation


def from_conversations(
    store: DatasetStore,
    conversation_ids: Sequence[str],
    name: str,
    description: str = "",
    on_invalid: OnInvalid = "reject",
) -> ImportResult:
    """A supervised dataset (or a new version of ``name``) from saved Playground conversations, one example
    per conversation, in the order given; lineage ``{"conversations": [...]}``, source ``conversations``.

    A trailing user message without a reply is left out. A conversation that still is not a valid example
    (e.g. no assistant reply) refuses the import under ``on_invalid="reject"`` and is skipped under "drop".
    ``NotFoundError`` names an unknown conversation id.
    """
    ids = list(dict.fromkeys(conversation_ids))
    if not ids:
        raise ValidationError("choose at least one conversation to import", param="conversation_ids")
    records: list[dict[str, Any]] = []
    for conversation_id in ids:
        detail = get_conversation(store.db, conversation_id)  # NotFoundError names the missing id
        messages = [{"role": m.role, "content": m.content} for m in detail.messages]
        while messages and messages[-1]["role"] != "assistant":
            messages.pop()
        records.append({"messages": messages or [{"role": "user", "content": detail.title or "(empty)"}]})
    validated = validate_records(records, ColumnMapping(format="messages"), min_examples=1)
    report = validated.report
    if report.invalid_rows:
        named = "; ".join(f"conversation {ids[e.row - 1]}: {e.message}" for e in report.errors[:5])
        if on_invalid == "reject":
            raise ValidationError(
                f"{report.invalid_rows} of {len(ids)} conversation(s) cannot become examples — {named}. "
                "Leave them out or import with on_invalid='drop'",
                param="conversation_ids",
            )
        report = report.model_copy(update={"dropped_rows": report.invalid_rows})
    if not validated.examples:
        raise ValidationError("none of the chosen conversations has an assistant reply", param="conversation_ids")
    used = [ids[row - 1] for row in validated.rows]
    result = store.create_version(
        name,
        validated.examples,
        source="conversations",
        lineage={"conversations": used},
        kind="supervised",
        description=description,
    )
    return result.model_copy(update={"report": report})
