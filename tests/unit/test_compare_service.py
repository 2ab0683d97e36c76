"""Compare core without a model: a deterministic fake engine manager (records what it was asked) drives named
mode, blind battles, votes, batches, rankings, the leaderboard and the preference export on a real SQLite DB."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from studio.compare import battles as b
from studio.compare.export import export_preferences, preference_pairs
from studio.compare.leaderboard import compute_leaderboard, leaderboard_figure
from studio.compare.ranking import (
    agreement_report,
    annotator_history,
    generate_candidates,
    next_item_for,
    order_from_ranks,
    submit_annotation,
)
from studio.compare.stream import ContenderSpec, parse_contenders, stream_sides
from studio.datasets.store import DatasetStore
from studio.db.engine import Database
from studio.errors import ConflictError, ValidationError
from studio.inference.base import ChatMessage, EngineCapabilities, GenerationEnd, GenerationStart, TokenEvent
from studio.inference.manager import _DONE, GenerationHandle
from studio.inference.params import SamplingParams, make_sampling_params
from studio.settings import Settings


class FakeEngine:
    backend = "fake"
    capabilities = EngineCapabilities(adapters=True)

    def __init__(self) -> None:
        self.adapters: dict[str, Path] = {}
        self.active_adapter: str | None = None


class FakeEngines:
    """Answers ``"<model>[+adapter] heard: <last user message>"`` word by word, with a small delay per token."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.loaded: dict[str, FakeEngine] = {}
        self.calls: list[dict[str, Any]] = []

    def load(self, name: str, **_: Any) -> FakeEngine:
        return self.loaded.setdefault(name, FakeEngine())

    def load_adapter_on(self, engine: FakeEngine, adapter: str, name: str | None = None) -> str:
        key = name or Path(adapter).name
        engine.adapters[key] = Path(adapter)
        engine.active_adapter = key
        return key

    def swap_adapter(self, model: str, adapter: str | None) -> str | None:
        engine = self.loaded[model]
        engine.active_adapter = None if adapter in (None, "", "base") else adapter
        return engine.active_adapter

    def start_chat(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams, **kw: Any
    ) -> GenerationHandle:
        self.calls.append({"model": model, "messages": list(messages), "adapter": kw.get("adapter")})
        handle = GenerationHandle(uuid.uuid4().hex, model, threading.Event(), kw.get("owner"))
        who = model if kw.get("adapter") in (None, "base") else f"{model}+{kw['adapter']}"
        words = f"{who} heard: {messages[-1].content}".split(" ")[: params.max_tokens]

        def emit(item: Any) -> None:
            handle.result.add(item)
            handle._queue.put(item)

        def run() -> None:
            emit(GenerationStart(len(messages), time.perf_counter()))
            for i, w in enumerate(words):
                time.sleep(self.delay)
                emit(TokenEvent(i, w, w if i == 0 else " " + w, -0.1, (), time.perf_counter()))
            emit(GenerationEnd("stop", time=time.perf_counter()))
            handle._queue.put(_DONE)

        threading.Thread(target=run, daemon=True).start()
        return handle


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database("sqlite:///" + str(tmp_path / "t.db"))
    yield database
    database.dispose()


@pytest.fixture
def engines() -> FakeEngines:
    return FakeEngines()


PARAMS = make_sampling_params(temperature=0, max_tokens=64)


def test_contender_parsing() -> None:
    assert ContenderSpec.parse("default") == ContenderSpec("default")
    assert ContenderSpec.parse("default + lora-a") == ContenderSpec("default", "lora-a")
    assert ContenderSpec.parse("org/m+x").label == "org/m + x"
    assert ContenderSpec.parse("default + base") == ContenderSpec("default")
    with pytest.raises(ValidationError, match="2 to 4"):
        parse_contenders(["a"])
    with pytest.raises(ValidationError, match="2 to 4"):
        parse_contenders(["a", "b", "c", "d", "e"])


def test_named_mode_streams_all_sides_continues_and_regenerates_one(engines: FakeEngines) -> None:
    session = b.NamedSession()
    snapshots = [v for v, _c in b.named_turn(engines, session, ["m1", "m2 + ad"], "hello there", PARAMS)]  # type: ignore[arg-type]
    # one generator yields updates of both sides while both are still running
    assert any(all(s.running and s.text for s in snap) for snap in snapshots)
    final = snapshots[-1]
    assert [s.text for s in final] == ["m1 heard: hello there", "m2+ad heard: hello there"]
    assert all(not s.running and s.stats and s.stats["completion_tokens"] == 4 for s in final)
    assert "tok/s" in final[0].stats_text
    # the plain model is asked for its base weights, the adapter side for its adapter
    assert [c["adapter"] for c in engines.calls] == ["base", "ad"]
    assert engines.loaded["m2"].active_adapter is None  # loading the adapter did not change the active one

    list(b.named_turn(engines, session, ["m1", "m2 + ad"], "and then?", PARAMS))  # type: ignore[arg-type]
    assert [m.role for m in session.histories[0]] == ["user", "assistant", "user", "assistant"]
    assert engines.calls[-1]["messages"][1].content == "m2+ad heard: hello there"  # each side sees its own reply

    before = len(engines.calls)
    views = [v for v, _c in b.regenerate_side(engines, session, 1, PARAMS)][-1]  # type: ignore[arg-type]
    assert len(engines.calls) == before + 1 and engines.calls[-1]["model"] == "m2"
    assert views[0].text == "m1 heard: and then?" and views[1].text == "m2+ad heard: and then?"
    assert session.transcript(1)[-1] == {"role": "assistant", "content": "m2+ad heard: and then?"}
    # other contenders: a new conversation
    list(b.named_turn(engines, session, ["m1", "m3"], "new", PARAMS))  # type: ignore[arg-type]
    assert len(session.histories[0]) == 2


def test_stream_sides_shows_a_side_that_could_not_start(engines: FakeEngines) -> None:
    handle = engines.start_chat("m1", [ChatMessage("user", "x")], PARAMS)
    last = list(stream_sides([handle, ValidationError("model 'nope' not found")]))[-1]
    assert last[0].text == "m1 heard: x" and last[1].error == "model 'nope' not found"


def _blind(engines: FakeEngines, db: Database, prompt: str = "Say hi", **kw: Any) -> tuple[list[Any], b.BlindBattle]:
    updates = list(
        b.blind_battle(engines, db, ["m1", "m2", "m3"], prompt, PARAMS, rng=random.Random(3), **kw)  # type: ignore[arg-type]
    )
    return [v for v, _ in updates], updates[-1][1]


def test_blind_battle_hides_names_until_the_vote(engines: FakeEngines, db: Database) -> None:
    views, battle = _blind(engines, db, use_case="chat", tags=["smoke"])
    assert battle.battle_id is not None and len({s.label for s in battle.specs}) == 2
    names = [s.label for s in battle.specs]
    # what a UI shows comes from the views: replies and figures only (the fake's replies say who spoke, so
    # compare the view fields other than the text)
    for snapshot in views:
        for side in snapshot:
            assert not any(n in side.stats_text for n in names)
    stored = b.get_battle(db, battle.battle_id)
    assert stored.winner is None and stored.prompt == "Say hi" and stored.mode == "blind"
    assert stored.params["max_tokens"] == 64 and stored.stats_a["completion_tokens"] == 4
    revealed = b.cast_vote(db, battle.battle_id, "A is better", "clearer")
    assert revealed.winner == "a" and revealed.note == "clearer" and revealed.voted_at is not None
    assert names[0] in b.reveal_text(revealed) and names[1] in b.reveal_text(revealed)
    with pytest.raises(ConflictError):
        b.cast_vote(db, battle.battle_id, "b")
    with pytest.raises(ValidationError, match="a vote is one of"):
        b.cast_vote(db, battle.battle_id, "maybe")


def test_blind_needs_two_different_contenders(engines: FakeEngines, db: Database) -> None:
    with pytest.raises(ValidationError, match="at least two different"):
        list(b.blind_battle(engines, db, ["m1", "m1"], "x", PARAMS))  # type: ignore[arg-type]


def test_leaderboard_from_votes_with_filters(engines: FakeEngines, db: Database) -> None:
    for vote, use_case in (("a", "chat"), ("a", "chat"), ("tie", "code"), ("both_bad", "chat")):
        _views, battle = _blind(engines, db, use_case=use_case, tags=["t1"] if use_case == "chat" else [])
        assert battle.battle_id
        b.cast_vote(db, battle.battle_id, vote)
    _views, _unvoted = _blind(engines, db)  # not voted: not counted
    board = compute_leaderboard(db)
    assert board.battles == 4
    assert sum(r.battles for r in board.rows) == 8
    assert sum(r.ties for r in board.rows) == 4  # tie and both-bad count as ties for both sides
    assert board.rows[0].ci_low is not None and board.rows[0].rating >= board.rows[-1].rating
    assert len(board.matrix) == len(board.rows)
    assert compute_leaderboard(db, use_case="code").battles == 1
    assert compute_leaderboard(db, tag="t1").battles == 3
    fig = leaderboard_figure(board)
    assert fig.data[0].type == "heatmap" and list(fig.data[0].x) == board.names


def test_leaderboard_after_one_battle_says_n_too_small_instead_of_a_zero_width_interval(
    engines: FakeEngines, db: Database
) -> None:
    """Issue 15, point 6: what the leaderboard table shows after a first vote."""
    _views, battle = _blind(engines, db)
    assert battle.battle_id
    b.cast_vote(db, battle.battle_id, "a")
    table = compute_leaderboard(db).table()
    assert [row[3] for row in table] == ["n too small (1 battle)"] * 2
    assert all(" – " not in str(row[3]) for row in table)


def test_batch_runs_every_prompt_and_votes_in_sequence(engines: FakeEngines, db: Database) -> None:
    prompts = b.parse_prompts("one\n\n two \nthree")
    assert prompts == ["one", "two", "three"]
    progress = list(b.run_batch(engines, db, "m1", "m2 + ad", prompts, PARAMS))  # type: ignore[arg-type]
    assert [p.done for p in progress] == [1, 2, 3]
    batch_id = progress[0].batch_id
    rows = b.batch_battles(db, batch_id)
    assert [r.prompt for r in rows] == prompts and rows[1].reply_b == "m2+ad heard: two"
    first = b.next_unvoted(db, batch_id)
    assert first is not None and first.position == 0
    b.cast_vote(db, first.id, "b")
    nxt = b.next_unvoted(db, batch_id)
    assert nxt is not None and nxt.position == 1


def test_ranking_annotation_history_and_agreement(engines: FakeEngines, db: Database) -> None:
    item = generate_candidates(engines, db, ["m1", "m2", "m3"], "Name a colour", 3, PARAMS)  # type: ignore[arg-type]
    assert [c["label"] for c in item.candidates] == ["m1", "m2", "m3"]
    with pytest.raises(ValidationError, match="2 to 6"):
        generate_candidates(engines, db, ["m1"], "x", 7, PARAMS)  # type: ignore[arg-type]
    assert order_from_ranks([2, 1, 3]) == [1, 0, 2]
    with pytest.raises(ValidationError, match="exactly once"):
        order_from_ranks([1, 1, 2])
    submit_annotation(db, item.id, "ann", order=[1, 0, 2])
    submit_annotation(db, item.id, "bob", scores=[5, 7, 1])  # the same preferences as ann
    with pytest.raises(ValidationError, match="exactly once"):
        submit_annotation(db, item.id, "cy", order=[0, 0, 1])
    with pytest.raises(ValidationError, match="score from 1 to 7"):
        submit_annotation(db, item.id, "cy", scores=[8, 1, 1])
    assert next_item_for(db, "ann") is None and next_item_for(db, "cy") is not None
    history = annotator_history(db, "bob")
    assert len(history) == 1 and history[0].judgement == "#1: 5, #2: 7, #3: 1"
    report = agreement_report(db)
    assert report.annotators == 2
    assert report.pairs == [["ann", "bob", 3, "1.000"]]
    assert report.alpha == pytest.approx(1.0)
    # resubmitting replaces the judgement
    submit_annotation(db, item.id, "bob", order=[2, 1, 0])
    assert len(annotator_history(db, "bob")) == 1
    assert agreement_report(db).alpha is not None and agreement_report(db).alpha < 0  # type: ignore[operator]


def test_export_pairs_and_dataset_version(engines: FakeEngines, db: Database, tmp_path: Path) -> None:
    votes = ["a", "b", "tie", "both_bad"]
    ids = []
    for vote in votes:
        _v, battle = _blind(engines, db, prompt=f"prompt {vote}")
        assert battle.battle_id
        b.cast_vote(db, battle.battle_id, vote)
        ids.append(battle.battle_id)
    item = generate_candidates(engines, db, ["m1", "m2", "m3"], "rank me", 3, PARAMS)  # type: ignore[arg-type]
    ann = submit_annotation(db, item.id, "ann", order=[2, 0, 1])
    submit_annotation(db, item.id, "bob", scores=[4, 4, 6])  # the tie between 0 and 1 gives no pair

    pairs = preference_pairs(db)
    assert pairs.skipped_ties == 2
    assert pairs.battle_ids == ids[:2]
    texts = {c["label"]: c["text"] for c in item.candidates}
    ranked = [(e["chosen"], e["rejected"]) for e in pairs.examples if e["prompt"][-1]["content"] == "rank me"]
    # ann: 3 > 1 > 2 → three pairs; bob: 3 > 1 and 3 > 2 → two pairs
    assert ranked == [
        (texts["m3"], texts["m1"]), (texts["m3"], texts["m2"]), (texts["m1"], texts["m2"]),
        (texts["m3"], texts["m1"]), (texts["m3"], texts["m2"]),
    ]  # fmt: skip
    first = b.get_battle(db, ids[0])
    assert pairs.examples[0] == {
        "prompt": [{"role": "user", "content": "prompt a"}], "chosen": first.reply_a, "rejected": first.reply_b,
    }  # fmt: skip
    second = b.get_battle(db, ids[1])
    assert (pairs.examples[1]["chosen"], pairs.examples[1]["rejected"]) == (second.reply_b, second.reply_a)

    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    store = DatasetStore(settings, db)
    result = export_preferences(store, db, "prefs")
    assert result.created and result.version == 1 and result.pairs == 7 and result.battles == 2
    assert result.annotations == 2 and result.distinct == 5 and "7 preference pair(s) (5 distinct)" in result.summary()
    version = store.get_version("prefs")
    assert (
        version.kind == "preference" and version.source == "feedback" and version.num_examples == 5
    )  # bob's pairs repeat ann's
    assert version.lineage["battle_ids"] == ids[:2] and ann.id in version.lineage["ranking_annotation_ids"]
    assert store.load_examples(version)[0]["prompt"][-1]["role"] == "user"
    again = export_preferences(store, db, "prefs")
    assert not again.created and again.version == 1


def test_export_with_nothing_to_export_says_what_to_do(db: Database, tmp_path: Path) -> None:
    store = DatasetStore(Settings(home=tmp_path / "h"), db)
    with pytest.raises(ValidationError, match="vote A or B"):
        export_preferences(store, db, "empty")
