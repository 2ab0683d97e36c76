"""DatasetStore: imports, versions by content hash, atomicity, cards, preview, conversations, built-ins."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from studio.datasets import builtin
from studio.datasets import store as store_module
from studio.datasets.builtin import BUILTIN_DATASETS, ensure_builtin_datasets
from studio.datasets.formats import ColumnMapping
from studio.datasets.schemas import examples_label
from studio.datasets.store import DatasetStore, content_hash
from studio.db.engine import Database
from studio.db.tables import Dataset, DatasetVersion
from studio.errors import ConflictError, NotFoundError, ValidationError
from studio.playground.conversations import MessageCreate, save_exchange
from studio.settings import Settings


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database("sqlite:///" + str(tmp_path / "t.db"))
    yield database
    database.dispose()


@pytest.fixture
def store(tmp_path: Path, db: Database) -> DatasetStore:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    return DatasetStore(settings, db)


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def qa(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"prompt": f"Question {i}?", "completion": f"Answer {i}."} for i in range(start, start + n)]


def files(store: DatasetStore) -> list[Path]:
    return sorted(p for p in store.root.rglob("*") if p.is_file())


def table_rows(db: Database) -> tuple[int, int]:
    with db.session() as s:
        return len(s.exec(select(Dataset)).all()), len(s.exec(select(DatasetVersion)).all())


def test_import_writes_canonical_jsonl_named_by_its_hash(store: DatasetStore) -> None:
    result = store.import_upload("faq", jsonl(qa(12)), "faq.jsonl", description="Frequent questions")
    assert result.created
    v = result.version
    assert (v.number, v.format, v.kind, v.num_examples, v.source) == (
        1,
        "prompt_completion",
        "supervised",
        12,
        "upload",
    )
    path = store.settings.home / v.path
    assert v.path == f"datasets/{result.dataset.id}/{v.content_hash}.jsonl"
    data = path.read_bytes()
    assert content_hash(data) == v.content_hash
    assert v.size_bytes == len(data)
    first = json.loads(data.splitlines()[0])
    assert first == {
        "messages": [{"content": "Question 0?", "role": "user"}, {"content": "Answer 0.", "role": "assistant"}]
    }
    assert store.load_examples(v)[0] == first
    assert result.dataset.latest_version_id == v.id
    assert result.dataset.description == "Frequent questions"
    assert v.lineage["filename"] == "faq.jsonl"
    assert result.report is not None and result.report.ok


def test_same_content_twice_is_one_version(store: DatasetStore, db: Database) -> None:
    first = store.import_upload("faq", jsonl(qa(12)), "faq.jsonl")
    # the same examples as CSV with different column names: same canonical content, same hash
    csv = "question,answer\n" + "".join(f"Question {i}?,Answer {i}.\n" for i in range(12))
    again = store.import_upload("faq", csv.encode(), "faq.csv")
    assert not again.created
    assert again.version.id == first.version.id
    assert table_rows(db) == (1, 1)
    assert len(files(store)) == 1


def test_changed_content_is_version_two(store: DatasetStore) -> None:
    v1 = store.import_upload("faq", jsonl(qa(12)), "faq.jsonl").version
    result = store.import_upload("faq", jsonl(qa(13)), "faq.jsonl")
    v2 = result.version
    assert result.created
    assert (v2.number, v2.parent_version_id, v2.num_examples) == (2, v1.id, 13)
    assert v2.content_hash != v1.content_hash
    assert result.dataset.latest_version_id == v2.id
    assert [v.number for v in store.versions("faq")] == [2, 1]
    assert store.get_version("faq").id == v2.id
    assert store.get_version("faq", 1).id == v1.id
    assert len(files(store)) == 2
    # going back to the first content finds version 1 again: versions are immutable, never renumbered
    back = store.import_upload("faq", jsonl(qa(12)), "faq.jsonl")
    assert not back.created and back.version.number == 1


def test_reject_imports_nothing(store: DatasetStore, db: Database) -> None:
    rows = [*qa(12), {"prompt": "Q", "completion": ""}]
    with pytest.raises(ValidationError, match="row 13"):
        store.import_upload("faq", jsonl(rows), "faq.jsonl")
    assert table_rows(db) == (0, 0)
    assert files(store) == []


def test_drop_imports_the_valid_rows(store: DatasetStore) -> None:
    rows = [*qa(12), {"prompt": "Q", "completion": ""}, qa(1)[0]]
    result = store.import_upload("faq", jsonl(rows), "faq.jsonl", on_invalid="drop")
    assert result.version.num_examples == 12
    assert result.report is not None
    assert (result.report.dropped_rows, result.report.duplicate_rows) == (1, 1)
    assert result.version.lineage["rows"] == {"total": 14, "dropped_invalid": 1, "duplicates": 1}


def test_manual_mapping(store: DatasetStore) -> None:
    rows = [{"q": f"Q{i}", "a": f"A{i}", "persona": "Be brief."} for i in range(10)]
    with pytest.raises(ValidationError, match="could not detect"):
        store.inspect_upload(jsonl(rows), "x.jsonl")
    mapping = ColumnMapping(format="prompt_completion", prompt="q", completion="a", system="persona")
    report = store.inspect_upload(jsonl(rows), "x.jsonl", mapping)
    assert report.ok and report.columns == ["q", "a", "persona"]
    version = store.import_upload("x", jsonl(rows), "x.jsonl", mapping).version
    assert store.load_examples(version)[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert version.lineage["mapping"] == {
        "format": "prompt_completion",
        "prompt": "q",
        "completion": "a",
        "system": "persona",
    }


def test_kind_of_a_dataset_cannot_change(store: DatasetStore) -> None:
    store.import_upload("faq", jsonl(qa(12)), "faq.jsonl")
    pref = [{"prompt": f"Q{i}", "chosen": "good", "rejected": "bad"} for i in range(10)]
    with pytest.raises(ConflictError, match="holds supervised examples"):
        store.import_upload("faq", jsonl(pref), "p.jsonl")


def test_a_failed_db_write_leaves_no_file_and_no_row(
    store: DatasetStore, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_clock() -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(store_module, "utcnow", broken_clock)  # fails after the dataset row was flushed
    with pytest.raises(RuntimeError, match="disk full"):
        store.import_upload("faq", jsonl(qa(12)), "faq.jsonl")
    assert table_rows(db) == (0, 0)
    assert files(store) == []
    assert list(store.root.iterdir()) == []


def test_a_failed_second_version_keeps_the_first(
    store: DatasetStore, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = store.import_upload("faq", jsonl(qa(12)), "faq.jsonl").version
    monkeypatch.setattr(store_module, "utcnow", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        store.import_upload("faq", jsonl(qa(13)), "faq.jsonl")
    assert table_rows(db) == (1, 1)
    assert files(store) == [store.settings.home / v1.path]
    assert store.get("faq").latest_version_id == v1.id


def test_two_imports_racing_for_a_name(store: DatasetStore, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = store_module._write_atomic

    def write_then_rival_commits(path: Path, data: bytes) -> bool:
        created = real_write(path, data)
        with db.session() as s:  # another import creates the same name between our file write and our insert
            s.add(Dataset(name="faq", kind="supervised"))
        return created

    monkeypatch.setattr(store_module, "_write_atomic", write_then_rival_commits)
    with pytest.raises(ConflictError, match="created by another import"):
        store.import_upload("faq", jsonl(qa(12)), "faq.jsonl")
    assert files(store) == []
    assert table_rows(db) == (1, 0)


def test_cards(store: DatasetStore) -> None:
    store.import_upload("faq", jsonl(qa(12)), "faq.jsonl")
    store.import_upload("faq", jsonl(qa(15)), "faq.jsonl")
    pref = [{"prompt": f"Q{i}", "chosen": "good", "rejected": "bad"} for i in range(10)]
    store.import_upload("prefs", jsonl(pref), "p.jsonl")
    cards = {c.name: c for c in store.list_cards()}
    faq, prefs = cards["faq"], cards["prefs"]
    assert (faq.badge, faq.examples_label, faq.version, faq.versions) == ("Supervised", "15 pairs", 2, 2)
    assert (prefs.badge, prefs.examples_label, prefs.version) == ("Preference", "10 preference pairs", 1)
    assert faq.size_bytes == store.get_version("faq").size_bytes
    assert faq.size_label.endswith(" KB") or faq.size_label.endswith(" B")
    assert faq.format_label == "Prompt / completion"
    assert next(c.name for c in store.list_cards()) == "prefs"  # most recently updated first
    assert examples_label("supervised", 1) == "1 pair"


def test_preview(store: DatasetStore) -> None:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Sys"},
                {"role": "user", "content": f"Q{i}"},
                {"role": "assistant", "content": "x" * 400},
            ]
        }
        for i in range(12)
    ]
    version = store.import_upload("chat", jsonl(rows), "c.jsonl").version
    preview = store.preview(version, n=5)
    assert preview.headers == ["#", "system", "user", "assistant", "turns"]
    assert preview.total == 12 and len(preview.rows) == 5
    row = preview.rows[0]
    assert row[:3] == [1, "Sys", "Q0"] and row[4] == 3
    assert isinstance(row[3], str) and len(row[3]) == 300 and row[3].endswith("…")
    pref = [{"prompt": f"Q{i}", "chosen": "good", "rejected": "bad"} for i in range(10)]
    pv = store.preview(store.import_upload("prefs", jsonl(pref), "p.jsonl").version)
    assert pv.headers == ["#", "prompt", "chosen", "rejected"]
    assert pv.rows[9] == [10, "Q9", "good", "bad"]


def test_not_found_messages(store: DatasetStore) -> None:
    store.import_upload("faq", jsonl(qa(12)), "faq.jsonl")
    with pytest.raises(NotFoundError, match="dataset 'nope' not found; known datasets: faq"):
        store.get("nope")
    with pytest.raises(NotFoundError, match="has no version 7; its versions are 1"):
        store.get_version("faq", 7)


def test_create_version_from_canonical_examples(store: DatasetStore) -> None:
    base = store.import_upload("faq", jsonl(qa(12)), "faq.jsonl").version
    examples = store.load_examples(base)
    edited = [
        *examples[:5],
        {"messages": [{"role": "user", "content": "New?"}, {"role": "assistant", "content": "Yes."}]},
    ]
    result = store.create_version("faq", edited, source="edit", parent_version_id=base.id, lineage={"edit": "trim"})
    v = result.version
    assert result.created and (v.number, v.source, v.parent_version_id, v.num_examples) == (2, "edit", base.id, 6)
    assert v.lineage == {"edit": "trim"} and v.format == "messages"
    assert not store.create_version("faq", edited).created
    with pytest.raises(ValidationError, match=r"example 1: .*exactly the keys"):
        store.create_version("faq", [{"prompt": "Q", "completion": "A"}])
    with pytest.raises(ValidationError, match="source must be one of"):
        store.create_version("faq", edited, source="magic")
    with pytest.raises(ValidationError, match="does not belong"):
        other = store.create_version("other", edited).version
        store.create_version("faq", edited[:3], parent_version_id=other.id)


def test_delete_removes_rows_and_files(store: DatasetStore, db: Database) -> None:
    store.import_upload("faq", jsonl(qa(12)), "faq.jsonl")
    store.import_upload("faq", jsonl(qa(13)), "faq.jsonl")
    store.delete("faq")
    assert table_rows(db) == (0, 0)
    assert files(store) == []
    with pytest.raises(NotFoundError):
        store.delete("faq")


def test_load_examples_detects_a_changed_file(store: DatasetStore) -> None:
    version = store.import_upload("faq", jsonl(qa(12)), "faq.jsonl").version
    (store.settings.home / version.path).write_text("{}\n")
    with pytest.raises(Exception, match="changed on disk"):
        store.load_examples(version)


def test_names_are_checked(store: DatasetStore) -> None:
    with pytest.raises(ValidationError, match="needs a name"):
        store.import_upload("  ", jsonl(qa(12)), "faq.jsonl")
    with pytest.raises(ValidationError, match="at most 200"):
        store.import_upload("x" * 201, jsonl(qa(12)), "faq.jsonl")


def _conversation(db: Database, turns: list[tuple[str, str]]) -> str:
    conv = save_exchange(db, None, [MessageCreate(role=r, content=c) for r, c in turns], model="m")
    return conv.id


def test_from_conversations(store: DatasetStore, db: Database) -> None:
    a = _conversation(db, [("system", "Be kind."), ("user", "Hi"), ("assistant", "Hello!")])
    b = _conversation(db, [("user", "2+2?"), ("assistant", "4."), ("user", "and 3+3?")])  # unanswered last turn
    result = store.from_conversations([a, b], "chats")
    v = result.version
    assert (v.source, v.kind, v.num_examples, v.lineage) == (
        "conversations",
        "supervised",
        2,
        {"conversations": [a, b]},
    )
    assert store.load_examples(v) == [
        {
            "messages": [
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
            ]
        },
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4."}]},
    ]
    assert not store.from_conversations([a, b], "chats").created


def test_from_conversations_without_reply(store: DatasetStore, db: Database) -> None:
    a = _conversation(db, [("user", "Hi"), ("assistant", "Hello!")])
    empty = _conversation(db, [("user", "Anyone?")])
    with pytest.raises(ValidationError, match=f"conversation {empty}: .*no assistant reply"):
        store.from_conversations([a, empty], "chats")
    result = store.from_conversations([a, empty], "chats", on_invalid="drop")
    assert result.version.lineage == {"conversations": [a]}
    assert result.report is not None and result.report.dropped_rows == 1
    with pytest.raises(NotFoundError):
        store.from_conversations(["0" * 32], "chats")


def test_builtin_datasets_import_once(store: DatasetStore) -> None:
    assert ensure_builtin_datasets(store) == [b.name for b in BUILTIN_DATASETS]
    cards = {c.name: c for c in store.list_cards()}
    demo = cards["whetstone-assistant"]
    assert demo.kind == "supervised" and demo.num_examples >= 40
    assert cards["preference-sample"].kind == "preference" and cards["preference-sample"].num_examples >= 12
    assert store.get_version("whetstone-assistant").source == "builtin"
    assert ensure_builtin_datasets(store) == []
    store.delete("preference-sample")
    assert ensure_builtin_datasets(store) == []  # a deleted built-in does not come back


def test_builtin_files_are_clean() -> None:
    """Every shipped row is valid, none repeats, and each asks something different."""
    from studio.datasets.parse import parse_file
    from studio.datasets.validate import validate_records

    for b in BUILTIN_DATASETS:
        parsed = parse_file(b.path)
        report = validate_records(parsed.records).report
        assert report.invalid_rows == 0 and report.duplicates == [], (b.name, report.errors)
    demo = parse_file(builtin.BUILTIN_DIR / "whetstone-assistant.jsonl").records
    questions = [next(m["content"] for m in r["messages"] if m["role"] == "user") for r in demo]
    assert len(set(questions)) == len(questions) >= 40
