"""Compare with users (issue 19, point 3) on a real SQLite file, and on PostgreSQL when STUDIO_TEST_DATABASE_URL
answers: battles and votes belong to the user who ran them, the leaderboard counts the whole team's votes, and a
ranking's annotator is the signed-in user whatever name is typed. The single user (no principal) works as before."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from studio.auth import Principal
from studio.compare import battles as b
from studio.compare.export import preference_pairs
from studio.compare.leaderboard import compute_leaderboard
from studio.compare.ranking import (
    agreement_report,
    annotator_history,
    generate_candidates,
    get_annotator,
    next_item_for,
    signed_in_annotator,
    submit_annotation,
)
from studio.compare.tables import Annotator, Battle
from studio.db.engine import Database
from studio.errors import ConflictError, NotFoundError, ValidationError
from studio.inference.params import make_sampling_params
from studio.users.acting import acting_as
from tests.unit.test_compare_service import FakeEngines

PARAMS = make_sampling_params(temperature=0, max_tokens=16)
ANN = Principal("ann", "session", role="member", user_id="u-ann")
BOB = Principal("bob", "session", role="member", user_id="u-bob")
OPERATOR = Principal("studio", "bearer")  # the operator key: no user behind it


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path}/studio.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture
def engines() -> FakeEngines:
    return FakeEngines(delay=0.0)


def _blind(engines: FakeEngines, db: Database, prompt: str) -> str:
    *_, (_views, battle) = b.blind_battle(engines, db, ["m1", "m2"], prompt, PARAMS, rng=random.Random(1))  # type: ignore[arg-type]
    assert battle.battle_id is not None
    return battle.battle_id


def _batch(engines: FakeEngines, db: Database, prompts: list[str]) -> str:
    return list(b.run_batch(engines, db, "m1", "m2", prompts, PARAMS))[-1].batch_id  # type: ignore[arg-type]


def _owners(db: Database) -> dict[str, str | None]:
    with db.session() as session:
        return {row.prompt: row.user_id for row in session.exec(select(Battle)).all()}


# -- battles -----------------------------------------------------------------------------------------------------
def test_each_user_sees_and_votes_on_only_their_own_battles(engines: FakeEngines, db: Database) -> None:
    with acting_as(ANN):
        ann_battle = _blind(engines, db, "ann asks")
        ann_batch = _batch(engines, db, ["ann one", "ann two"])
    with acting_as(BOB):
        bob_battle = _blind(engines, db, "bob asks")
        bob_batch = _batch(engines, db, ["bob one"])
    assert _owners(db) == {
        "ann asks": "u-ann", "ann one": "u-ann", "ann two": "u-ann", "bob asks": "u-bob", "bob one": "u-bob",
    }  # fmt: skip

    with acting_as(ANN):
        assert b.get_battle(db, ann_battle).prompt == "ann asks"
        assert [x.prompt for x in b.batch_battles(db, ann_batch)] == ["ann one", "ann two"]
        first = b.next_unvoted(db, ann_batch)
        assert first is not None and first.prompt == "ann one"
        # bob's battles and batches do not exist for ann: not found, not "forbidden"
        with pytest.raises(NotFoundError, match="not found"):
            b.get_battle(db, bob_battle)
        with pytest.raises(NotFoundError, match="not found"):
            b.batch_battles(db, bob_batch)
        with pytest.raises(NotFoundError, match="not found"):
            b.next_unvoted(db, bob_batch)
        with pytest.raises(NotFoundError, match="not found"):
            b.cast_vote(db, bob_battle, "a")
        assert b.cast_vote(db, ann_battle, "A is better").winner == "a"
    with acting_as(BOB):
        with pytest.raises(NotFoundError):
            b.cast_vote(db, ann_battle, "b")  # not a second vote on ann's battle: it is not bob's to see
        assert b.get_battle(db, bob_battle).winner is None  # ann's attempt left bob's battle unvoted
        assert b.cast_vote(db, bob_battle, "tie").winner == "tie"
        with pytest.raises(ConflictError):
            b.cast_vote(db, bob_battle, "a")
    assert b.get_battle(db, ann_battle).winner == "a"  # the single user / CLI sees every battle


def test_leaderboard_and_export_count_the_whole_teams_votes(engines: FakeEngines, db: Database) -> None:
    with acting_as(ANN):
        b.cast_vote(db, _blind(engines, db, "ann asks"), "a")
    with acting_as(BOB):
        b.cast_vote(db, _blind(engines, db, "bob asks"), "b")
        board = compute_leaderboard(db)
        pairs = preference_pairs(db)
    assert board.battles == 2 and sum(r.battles for r in board.rows) == 4
    assert sum(r.wins for r in board.rows) == 2
    assert [e["prompt"][-1]["content"] for e in pairs.examples] == ["ann asks", "bob asks"]
    with acting_as(ANN):
        assert compute_leaderboard(db).battles == 2


def test_single_user_battles_have_no_owner_and_stay_visible(engines: FakeEngines, db: Database) -> None:
    battle_id = _blind(engines, db, "mine")
    with acting_as(OPERATOR):  # the operator key acts as the single user
        other = _blind(engines, db, "operator's")
        assert b.get_battle(db, battle_id).prompt == "mine"
    assert _owners(db) == {"mine": None, "operator's": None}
    assert b.cast_vote(db, other, "b").winner == "b"
    with acting_as(ANN), pytest.raises(NotFoundError):  # a battle from before there were users is no user's
        b.cast_vote(db, battle_id, "a")


# -- rankings ----------------------------------------------------------------------------------------------------
def test_rankings_are_recorded_under_the_signed_in_user_whatever_name_is_typed(
    engines: FakeEngines, db: Database
) -> None:
    item = generate_candidates(engines, db, ["m1", "m2", "m3"], "Name a colour", 3, PARAMS)  # type: ignore[arg-type]
    with acting_as(ANN):
        assert signed_in_annotator() == "ann"
        submit_annotation(db, item.id, "bob", order=[1, 0, 2])  # ann types bob's name: still ann's judgement
        submit_annotation(db, item.id, "", order=[1, 0, 2])  # and no name at all: ann's again, replacing it
        assert next_item_for(db, "bob") is None  # ann has judged the only item
        assert [h.judgement for h in annotator_history(db, "bob")] == ["#2 > #1 > #3"]
    with acting_as(BOB):
        assert next_item_for(db, "ann") is not None and annotator_history(db, "ann") == []
        submit_annotation(db, item.id, "ann", scores=[5, 7, 1])  # the same preferences as ann's order
        assert [h.judgement for h in annotator_history(db, "")] == ["#1: 5, #2: 7, #3: 1"]
    with db.session() as session:
        rows = sorted((a.name, a.user_id) for a in session.exec(select(Annotator)).all())
    assert rows == [("ann", "u-ann"), ("bob", "u-bob")]
    report = agreement_report(db)
    assert report.annotators == 2 and report.pairs == [["ann", "bob", 3, "1.000"]]


def test_a_name_typed_before_sign_in_becomes_that_users_annotator(engines: FakeEngines, db: Database) -> None:
    item = generate_candidates(engines, db, ["m1", "m2"], "Pick one", 2, PARAMS)  # type: ignore[arg-type]
    submit_annotation(db, item.id, "ann", order=[0, 1])  # the single user typed "ann"
    legacy = get_annotator(db, "ann", create=False)
    assert legacy.user_id is None
    with acting_as(ANN):
        mine = get_annotator(db, "whatever")
        assert (mine.id, mine.name, mine.user_id) == (legacy.id, "ann", "u-ann")
        assert [h.judgement for h in annotator_history(db, "")] == ["#1 > #2"]
    # a later user of a removed user's name does not take over those judgements
    later = Principal("ann", "session", role="member", user_id="u-ann-2")
    with acting_as(later), pytest.raises(ConflictError, match="another user's judgements"):
        submit_annotation(db, item.id, "ann", order=[1, 0])
    assert [h.judgement for h in annotator_history(db, "ann")] == ["#1 > #2"]


def test_single_user_rankings_keep_free_text_annotator_names(engines: FakeEngines, db: Database) -> None:
    item = generate_candidates(engines, db, ["m1", "m2"], "Pick one", 2, PARAMS)  # type: ignore[arg-type]
    assert signed_in_annotator() is None
    for who in (None, OPERATOR):
        with acting_as(who):
            submit_annotation(db, item.id, "cy", order=[0, 1])
            submit_annotation(db, item.id, "dee", scores=[2, 6])
            with pytest.raises(ValidationError, match="annotator name"):
                submit_annotation(db, item.id, "  ", order=[0, 1])
    with db.session() as session:
        rows: list[Any] = sorted((a.name, a.user_id) for a in session.exec(select(Annotator)).all())
    assert rows == [("cy", None), ("dee", None)]
    assert next_item_for(db, "cy") is None and next_item_for(db, "ed") is not None
    assert len(annotator_history(db, "dee")) == 1 and annotator_history(db, "ed") == []
