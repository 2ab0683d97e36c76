"""Saved Playground conversations on a real SQLite file (and on PostgreSQL when STUDIO_TEST_DATABASE_URL
answers): schema and migration, turns in order, titles, history filters, deletion, and all-or-nothing saves."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel, select

from studio.db import Database, RequestLog
from studio.db.migrations import MIGRATIONS, current_version
from studio.db.tables import ConversationMessage, SchemaVersion
from studio.errors import NotFoundError, ValidationError
from studio.inference.stats import GenerationStats
from studio.playground import conversations as conv_mod
from studio.playground.conversations import (
    MessageCreate,
    append_message,
    auto_title,
    conversation_facets,
    create_conversation,
    delete_conversation,
    get_conversation,
    list_conversations,
    rename_conversation,
    save_exchange,
)

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/studio.db")
    yield database
    database.dispose()


def _counts(db: Database) -> tuple[int, int]:
    """(conversations, messages) rows in the database."""
    with db.engine.connect() as conn:
        convs = conn.execute(text("SELECT count(*) FROM conversation")).scalar_one()
        msgs = conn.execute(text("SELECT count(*) FROM conversation_message")).scalar_one()
    return int(convs), int(msgs)


def _exchange(user: str, reply: str, **reply_fields: object) -> list[MessageCreate]:
    return [
        MessageCreate(role="user", content=user, params={"temperature": 0.7}),
        MessageCreate(role="assistant", content=reply, **reply_fields),  # type: ignore[arg-type]
    ]


# -- schema ----------------------------------------------------------------------------------------------------
def test_migration_2_creates_both_tables_with_cascade_and_indexes(db: Database) -> None:
    assert current_version(db.engine) == len(MIGRATIONS) >= 2
    insp = inspect(db.engine)
    assert {"conversation", "conversation_message", "request_log"} <= set(insp.get_table_names())
    [fk] = insp.get_foreign_keys("conversation_message")
    assert fk["referred_table"] == "conversation"
    assert fk["constrained_columns"] == ["conversation_id"]
    assert fk["options"].get("ondelete") == "CASCADE"
    indexed = {tuple(ix["column_names"]) for ix in insp.get_indexes("conversation")}
    assert {("model",), ("use_case",), ("updated_at",)} <= indexed


def test_an_existing_version_1_database_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    old = create_engine(url)  # a studio.db as the previous release left it: migration 1 only
    SQLModel.metadata.create_all(old, tables=[SchemaVersion.__table__, RequestLog.__table__])  # type: ignore[attr-defined]
    with old.begin() as conn:
        conn.execute(SchemaVersion.__table__.insert().values(version=1, description="request log"))  # type: ignore[attr-defined]
        conn.execute(RequestLog.__table__.insert().values(request_id="old", model="m", endpoint="chat"))  # type: ignore[attr-defined]
    assert not inspect(old).has_table("conversation")
    old.dispose()

    upgraded = Database(url)
    try:
        assert current_version(upgraded.engine) == len(MIGRATIONS)
        with upgraded.session() as s:
            assert [r.request_id for r in s.exec(select(RequestLog)).all()] == ["old"]
        saved = save_exchange(upgraded, None, _exchange("hi", "hello"), model=MODEL)
        assert get_conversation(upgraded, saved.id).message_count == 2
    finally:
        upgraded.dispose()


# -- create / append / get -----------------------------------------------------------------------------------------
def test_turns_come_back_in_order_with_model_params_stats_and_time(db: Database) -> None:
    conv = create_conversation(db, model=MODEL, use_case="chat")
    assert len(conv.id) == 32 and int(conv.id, 16) >= 0
    assert (conv.title, conv.model, conv.use_case, conv.message_count) == ("", MODEL, "chat", 0)

    stats = GenerationStats(
        prompt_tokens=31, completion_tokens=8, ttft_s=0.12, tokens_per_s=48.5, total_s=0.3, finish_reason="stop"
    )
    append_message(db, conv.id, role="system", content="You are terse.")
    append_message(db, conv.id, role="user", content="Name a prime.", params={"temperature": 0.2, "stop": ["\n"]})
    reply = append_message(db, conv.id, role="assistant", content="7", model="acme/other", stats=stats)
    assert reply.position == 2
    assert reply.stats == stats.to_dict()

    got = get_conversation(db, conv.id)
    assert [(m.position, m.role, m.content) for m in got.messages] == [
        (0, "system", "You are terse."),
        (1, "user", "Name a prime."),
        (2, "assistant", "7"),
    ]
    assert [m.model for m in got.messages] == [MODEL, MODEL, "acme/other"]  # default: the conversation's model
    assert got.messages[1].params == {"temperature": 0.2, "stop": ["\n"]}
    assert got.messages[0].params == {}
    assert got.messages[2].stats == {
        "prompt_tokens": 31,
        "completion_tokens": 8,
        "ttft_s": 0.12,
        "tokens_per_s": 48.5,
        "total_s": 0.3,
        "finish_reason": "stop",
    }
    assert got.messages[0].stats is None
    assert got.message_count == 3
    assert all(m.created_at.tzinfo is not None for m in got.messages)
    assert got.messages[0].created_at <= got.messages[2].created_at
    assert got.updated_at >= got.created_at


def test_append_bumps_updated_at(db: Database) -> None:
    conv = create_conversation(db, model=MODEL)
    time.sleep(0.002)
    append_message(db, conv.id, role="user", content="hi")
    assert get_conversation(db, conv.id).updated_at > conv.updated_at


def test_title_is_the_first_user_message_cut_short(db: Database) -> None:
    conv = create_conversation(db, model=MODEL)
    append_message(db, conv.id, role="system", content="Be helpful.")  # a system prompt does not name it
    assert get_conversation(db, conv.id).title == ""
    long = "Explain   the difference between\nprocesses and threads in an operating system, with examples please"
    append_message(db, conv.id, role="user", content=long)
    append_message(db, conv.id, role="user", content="second question")  # only the first user message counts
    title = get_conversation(db, conv.id).title
    assert title == "Explain the difference between processes and threads in an…"
    assert len(title) <= 61
    assert get_conversation(db, conv.id).messages[1].content == long  # the turn itself is stored untouched


def test_a_given_title_is_kept(db: Database) -> None:
    conv = create_conversation(db, model=MODEL, title="  Primes  ")
    append_message(db, conv.id, role="user", content="Name a prime.")
    assert get_conversation(db, conv.id).title == "Primes"


def test_auto_title() -> None:
    assert auto_title("  hi \n there ") == "hi there"
    assert auto_title("x" * 100) == "x" * 60 + "…"  # one long word is cut, not dropped
    assert auto_title("word " * 30).endswith("word…")


def test_empty_assistant_reply_is_allowed(db: Database) -> None:
    conv = create_conversation(db, model=MODEL)
    assert append_message(db, conv.id, role="assistant", content="").content == ""


# -- validation and errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"role": "bot", "content": "hi"}, "role"),
        ({"role": "User", "content": "hi"}, "role"),
        ({"role": "user", "content": "   \n"}, "content"),
        ({"role": "user", "content": "nul\x00byte"}, "content"),
        ({"role": "user", "content": "hi", "params": {"seed": object()}}, "params"),
        ({"role": "assistant", "content": "x", "stats": {"tokens_per_s": float("nan")}}, "stats"),
        ({"role": "assistant", "content": "x", "model": "m" * 513}, "model"),
    ],
)
def test_bad_turn_is_a_validation_error_naming_the_field(db: Database, fields: dict, param: str) -> None:
    conv = create_conversation(db, model=MODEL)
    with pytest.raises(ValidationError) as info:
        append_message(db, conv.id, **fields)
    assert info.value.param == param
    assert info.value.status_code == 400
    assert _counts(db) == (1, 0)


def test_bad_role_message_lists_the_allowed_roles(db: Database) -> None:
    conv = create_conversation(db, model=MODEL)
    with pytest.raises(ValidationError, match=r"'bot'.*system, user, assistant"):
        append_message(db, conv.id, role="bot", content="hi")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": "  "}, "model"),
        ({"model": MODEL, "title": "t" * 201}, "title"),
        ({"model": MODEL, "use_case": "u" * 129}, "use_case"),
    ],
)
def test_bad_conversation_fields_are_refused(db: Database, fields: dict, param: str) -> None:
    with pytest.raises(ValidationError) as info:
        create_conversation(db, **fields)
    assert info.value.param == param
    assert _counts(db) == (0, 0)


def test_unknown_conversation_is_not_found_naming_the_id(db: Database) -> None:
    missing = uuid.uuid4().hex
    calls = [
        lambda: get_conversation(db, missing),
        lambda: append_message(db, missing, role="user", content="hi"),
        lambda: save_exchange(db, missing, _exchange("hi", "yo"), model=MODEL),
        lambda: rename_conversation(db, missing, "new"),
        lambda: delete_conversation(db, missing),
    ]
    for call in calls:
        with pytest.raises(NotFoundError) as info:
            call()
        assert missing in info.value.message
        assert info.value.status_code == 404
        assert info.value.param == "conversation_id"
    assert _counts(db) == (0, 0)


# -- save_exchange: one transaction ------------------------------------------------------------------------------
def test_save_exchange_creates_then_appends(db: Database) -> None:
    first = save_exchange(db, None, _exchange("Name a prime.", "7"), model=MODEL, use_case="math")
    assert (first.title, first.model, first.use_case, first.message_count) == ("Name a prime.", MODEL, "math", 2)
    assert [m.position for m in first.messages] == [0, 1]

    second = save_exchange(db, first.id, _exchange("Another?", "11"), model="acme/other")
    assert second.id == first.id
    assert second.model == "acme/other"  # the conversation follows the model it is continued with
    assert second.use_case == "math"  # kept when not given
    assert second.title == "Name a prime."
    assert [(m.position, m.content, m.model) for m in second.messages] == [
        (0, "Name a prime.", MODEL),
        (1, "7", MODEL),
        (2, "Another?", "acme/other"),
        (3, "11", "acme/other"),
    ]
    assert get_conversation(db, first.id) == second


def test_save_exchange_with_a_bad_turn_stores_nothing(db: Database) -> None:
    bad = [MessageCreate(role="user", content="fine"), MessageCreate(role="robot", content="no")]
    with pytest.raises(ValidationError) as info:
        save_exchange(db, None, bad, model=MODEL)
    assert info.value.param == "messages.1.role"
    assert _counts(db) == (0, 0)

    with pytest.raises(ValidationError, match="at least one"):
        save_exchange(db, None, [], model=MODEL)
    assert _counts(db) == (0, 0)


def test_save_exchange_failing_mid_transaction_leaves_nothing(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The conversation row is already flushed when the second turn fails: all of it must be undone."""
    real_append = conv_mod._append
    calls = 0

    def append_then_crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("disk full")
        return real_append(*args, **kwargs)

    monkeypatch.setattr(conv_mod, "_append", append_then_crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_exchange(db, None, _exchange("hi", "hello"), model=MODEL)
    assert calls == 2
    assert _counts(db) == (0, 0)


def test_failed_save_to_an_existing_conversation_changes_nothing(db: Database) -> None:
    conv = save_exchange(db, None, _exchange("hi", "hello"), model=MODEL, use_case="chat")
    with pytest.raises(ValidationError) as info:  # found only after updated_at was bumped inside the transaction
        save_exchange(db, conv.id, _exchange("more", "sure"), model="acme/other", title="t" * 201)
    assert info.value.param == "title"
    after = get_conversation(db, conv.id)
    assert after == conv
    assert after.updated_at == conv.updated_at
    assert _counts(db) == (1, 2)


def test_concurrent_appends_get_distinct_positions(db: Database) -> None:
    conv = create_conversation(db, model=MODEL)
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for i in range(15):
                append_message(db, conv.id, role="user", content=f"{tag}{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = get_conversation(db, conv.id)
    assert [m.position for m in got.messages] == list(range(45))
    for tag in "abc":  # each writer's turns keep their own order
        assert [m.content for m in got.messages if m.content[0] == tag] == [f"{tag}{i}" for i in range(15)]


# -- history: list, filter, rename, delete -------------------------------------------------------------------------
def test_list_is_newest_first_with_counts_and_filters(db: Database) -> None:
    a = save_exchange(db, None, _exchange("alpha", "1"), model="m1", use_case="chat")
    b = save_exchange(db, None, _exchange("beta", "2"), model="m2", use_case="coding")
    c = create_conversation(db, model="m1", use_case="coding")
    assert [x.id for x in list_conversations(db)] == [c.id, b.id, a.id]
    time.sleep(0.002)
    append_message(db, a.id, role="user", content="again")  # continuing a conversation moves it to the top
    listed = list_conversations(db)
    assert [x.id for x in listed] == [a.id, c.id, b.id]
    assert [x.message_count for x in listed] == [3, 0, 2]
    assert [x.title for x in listed] == ["alpha", "", "beta"]

    assert [x.id for x in list_conversations(db, model="m1")] == [a.id, c.id]
    assert [x.id for x in list_conversations(db, use_case="coding")] == [c.id, b.id]
    assert [x.id for x in list_conversations(db, model="m1", use_case="coding")] == [c.id]
    assert list_conversations(db, model="nope") == []
    assert [x.id for x in list_conversations(db, limit=1)] == [a.id]
    with pytest.raises(ValidationError) as info:
        list_conversations(db, limit=0)
    assert info.value.param == "limit"


def test_facets_list_the_models_and_use_cases_in_use(db: Database) -> None:
    create_conversation(db, model="m2", use_case="coding")
    create_conversation(db, model="m1")
    create_conversation(db, model="m1", use_case="chat")
    facets = conversation_facets(db)
    assert facets.models == ["m1", "m2"]
    assert facets.use_cases == ["chat", "coding"]


def test_rename(db: Database) -> None:
    conv = save_exchange(db, None, _exchange("hi", "hello"), model=MODEL)
    renamed = rename_conversation(db, conv.id, "  Greetings ")
    assert (renamed.title, renamed.message_count) == ("Greetings", 2)
    assert get_conversation(db, conv.id).title == "Greetings"
    with pytest.raises(ValidationError) as info:
        rename_conversation(db, conv.id, "  ")
    assert info.value.param == "title"
    assert get_conversation(db, conv.id).title == "Greetings"


def test_delete_removes_the_conversation_and_its_turns_only(db: Database) -> None:
    gone = save_exchange(db, None, _exchange("hi", "hello"), model=MODEL)
    kept = save_exchange(db, None, _exchange("keep", "me"), model=MODEL)
    delete_conversation(db, gone.id)
    assert [x.id for x in list_conversations(db)] == [kept.id]
    with db.session() as s:
        left = s.exec(select(ConversationMessage.conversation_id)).all()
    assert left == [kept.id, kept.id]
    with pytest.raises(NotFoundError):
        get_conversation(db, gone.id)
    with pytest.raises(NotFoundError):
        delete_conversation(db, gone.id)


def test_the_database_cascades_deletes_by_itself(db: Database) -> None:
    """ON DELETE CASCADE is enforced by the database (SQLite needs PRAGMA foreign_keys=ON for that)."""
    conv = save_exchange(db, None, _exchange("hi", "hello"), model=MODEL)
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM conversation WHERE id = :id"), {"id": conv.id})
    assert _counts(db) == (0, 0)


def test_a_turn_cannot_point_at_a_missing_conversation(db: Database) -> None:
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), db.session() as s:
        s.add(ConversationMessage(conversation_id="0" * 32, position=0, role="user", content="orphan"))
    assert _counts(db) == (0, 0)


def test_conversations_survive_reopening_the_database(db: Database, tmp_path: Path) -> None:
    conv = save_exchange(db, None, _exchange("persist me", "ok"), model=MODEL, use_case="chat")
    db.dispose()
    again = Database(f"sqlite:///{tmp_path}/studio.db")
    try:
        assert get_conversation(again, conv.id) == conv
    finally:
        again.dispose()


# -- PostgreSQL ------------------------------------------------------------------------------------------------


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    """A fresh, empty PostgreSQL database for one test (migrated by ``Database``), dropped afterwards."""
    database = Database(pg_url)
    try:
        yield database
    finally:
        database.dispose()


def test_conversations_on_postgresql(pg_db: Database) -> None:
    db = pg_db
    assert db.engine.dialect.name == "postgresql"
    assert current_version(db.engine) == len(MIGRATIONS)
    [fk] = inspect(db.engine).get_foreign_keys("conversation_message")
    assert fk["options"].get("ondelete") == "CASCADE"

    a = save_exchange(db, None, _exchange("alpha", "1", stats={"completion_tokens": 1}), model="m1", use_case="chat")
    b = save_exchange(db, None, _exchange("beta", "2"), model="m2")
    time.sleep(0.002)
    append_message(db, a.id, role="user", content="again", params={"top_p": 0.9})
    got = get_conversation(db, a.id)
    assert [(m.position, m.role, m.content) for m in got.messages] == [
        (0, "user", "alpha"),
        (1, "assistant", "1"),
        (2, "user", "again"),
    ]
    assert got.messages[1].stats == {"completion_tokens": 1}
    assert got.messages[2].params == {"top_p": 0.9}
    assert got.created_at.tzinfo is not None
    assert [(x.id, x.message_count) for x in list_conversations(db)] == [(a.id, 3), (b.id, 2)]
    assert [x.id for x in list_conversations(db, model="m2")] == [b.id]
    assert [x.id for x in list_conversations(db, use_case="chat")] == [a.id]

    with pytest.raises(ValidationError):
        save_exchange(
            db, None, [MessageCreate(role="user", content="ok"), MessageCreate(role="x", content="")], model="m"
        )
    with pytest.raises(ValidationError):  # fails after the row lock was taken: rolled back
        save_exchange(db, b.id, _exchange("more", "x"), model="m2", title="t" * 201)
    assert get_conversation(db, b.id) == b

    delete_conversation(db, a.id)
    with pytest.raises(NotFoundError):
        get_conversation(db, a.id)
    with db.engine.connect() as conn:
        left = conn.execute(text("SELECT conversation_id FROM conversation_message")).scalars().all()
    assert left == [b.id, b.id]
    with db.engine.begin() as conn:  # the database's own cascade
        conn.execute(text("DELETE FROM conversation WHERE id = :id"), {"id": b.id})
        assert conn.execute(text("SELECT count(*) FROM conversation_message")).scalar_one() == 0
