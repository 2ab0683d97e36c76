"""The quality step's LLM judge: a model grades each row 1-10 against a rubric, and the grade is blended with the
heuristic score to sort and cut by. A deterministic fake judge for the arithmetic and the failures; the bundled
model through the engine manager and `studio data curate` at the end (~5 s each once the session's ``ctx`` has the
model converted, so not marked slow)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studio.context import AppContext
from studio.curation.judge import (
    DEFAULT_RUBRIC,
    JUDGE_TEXT_CHARS,
    JudgeError,
    engine_chat,
    judge_prompt,
    parse_score,
)
from studio.curation.pipeline import CurationPipeline, curate, dump_pipeline, load_pipeline, preview, run_steps
from studio.curation.steps import CleanConfig, QualityConfig, StepContext, run_step
from studio.datasets.store import DatasetStore
from studio.db.engine import Database
from studio.errors import GenerationError, ModelNotFoundError, ValidationError
from studio.settings import Settings


def sft(user: str, reply: str, system: str | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return {"messages": messages}


# The heuristics like a long, fluent reply whatever it says; the judge knows better.
RIGHT = sft("What is the capital of France?", "Paris.")
WRONG = sft(
    "What is the capital of France?", "Berlin has been the seat of government there since the days of the empire"
)
VAGUE = sft("What is the capital of Japan?", "It is a big city somewhere in Asia with many people.")
ROWS = [WRONG, VAGUE, RIGHT]


class FakeJudge:
    """Answers each prompt with the reply given for the first key found in it; records what it was asked."""

    def __init__(self, replies: dict[str, str], fail: Exception | None = None) -> None:
        self.replies = replies
        self.fail = fail
        self.asked: list[tuple[str, str, int]] = []

    def __call__(self, model: str, prompt: str, max_tokens: int) -> str:
        self.asked.append((model, prompt, max_tokens))
        if self.fail is not None:
            raise self.fail
        return next(reply for key, reply in self.replies.items() if key in prompt)


GRADES = {"Berlin": "2", "Asia": "Score: 5/10", "Paris.": "10"}


def heuristic(rows: list[dict[str, Any]]) -> list[float]:
    scores = run_step(rows, QualityConfig()).scores
    assert scores is not None
    return scores


def test_the_judge_grade_is_blended_with_the_heuristics_and_reorders_and_cuts() -> None:
    h = heuristic(ROWS)
    assert h[0] > h[1] > h[2]  # the heuristics alone rank the wrong answer first
    judge = FakeJudge(GRADES)
    config = QualityConfig(judge_model="judge-a", judge_weight=0.5, min_score=0.6, sort=True)
    outcome = run_step(ROWS, config, StepContext(chat=judge))

    expected = [round(0.5 * h[0] + 0.5 * 1 / 9, 4), round(0.5 * h[1] + 0.5 * 4 / 9, 4), round(0.5 * h[2] + 0.5, 4)]
    assert expected[0] < 0.6 <= expected[1]
    assert outcome.rows == [RIGHT, VAGUE]  # best first by the blended score; Berlin cut
    assert outcome.scores == [expected[2], expected[1]]
    assert outcome.report.reasons == {"score below 0.6": 1}
    assert [(model, tokens) for model, _, tokens in judge.asked] == [("judge-a", 16)] * 3
    assert DEFAULT_RUBRIC in judge.asked[0][1] and "Berlin" in judge.asked[0][1]

    details = outcome.report.details
    assert (details["judge_model"], details["judged"], details["judge_no_score"]) == ("judge-a", 3, 0)
    assert details["judge_mean"] == round((2 + 5 + 10) / 3, 2)
    assert [(s["row"], s["judge"], s["heuristic"], s["score"]) for s in details["judge_scores"]] == [
        (0, 2, h[0], expected[0]),
        (1, 5, h[1], expected[1]),
        (2, 10, h[2], expected[2]),
    ]
    assert details["judge_scores"][1]["reply"] == "Score: 5/10"
    assert "judge judge-a: 3 rows graded, mean grade 5.67/10" in outcome.report.summary()


def test_weight_one_ranks_by_the_judge_alone_and_the_rubric_and_token_limit_are_used() -> None:
    judge = FakeJudge(GRADES)
    config = QualityConfig(judge_model="j", judge_weight=1.0, rubric="Is it true?", judge_max_tokens=8, sort=True)
    outcome = run_step(ROWS, config, StepContext(chat=judge))
    assert outcome.scores == [1.0, round(4 / 9, 4), round(1 / 9, 4)]
    assert judge.asked[0][1].startswith("Is it true?") and DEFAULT_RUBRIC not in judge.asked[0][1]
    assert {tokens for _, _, tokens in judge.asked} == {8}


def test_a_reply_without_a_grade_keeps_the_heuristic_score_and_is_counted() -> None:
    h = heuristic(ROWS)
    judge = FakeJudge({"Berlin": "I would rather not say.", "Asia": "0 out of 100", "Paris.": "9"})
    outcome = run_step(ROWS, QualityConfig(judge_model="j"), StepContext(chat=judge))
    assert outcome.scores == [h[0], h[1], round(0.5 * h[2] + 0.5 * 8 / 9, 4)]
    details = outcome.report.details
    assert details["judge_no_score"] == 2 and details["judge_mean"] == 9
    assert [s["judge"] for s in details["judge_scores"]] == [None, None, 9]
    assert "no grade in 2 replies" in outcome.report.summary()
    none = run_step(ROWS, QualityConfig(judge_model="j"), StepContext(chat=FakeJudge({"": "good"})))
    assert none.scores == h and none.report.details["judge_mean"] is None


def test_weight_zero_is_the_heuristics_alone_and_asks_no_judge() -> None:
    judge = FakeJudge(GRADES, fail=AssertionError("the judge was asked"))
    config = QualityConfig(judge_model="j", judge_weight=0.0, sort=True)
    with_chat = run_step(ROWS, config, StepContext(chat=judge))
    without_chat = run_steps(ROWS, CurationPipeline(name="q", steps=[config]))  # no chat needed either
    assert with_chat.scores == sorted(heuristic(ROWS), reverse=True) == without_chat.scores
    assert judge.asked == [] and "judge_model" not in with_chat.report.details


@pytest.mark.parametrize(
    ("reply", "grade"),
    [
        ("7", 7),
        ("Score: 8/10", 8),
        ("10", 10),
        ("I'd rate it a 3.", 3),
        ("On a scale of 1 to 10, I give it 6.", 6),
        ("1-10: 4", 4),
        ("7.5, so 8", 8),
        ("0", None),
        ("42 points", None),
        ("Excellent answer!", None),
        ("", None),
    ],
)
def test_the_first_whole_number_from_1_to_10_is_the_grade(reply: str, grade: int | None) -> None:
    assert parse_score(reply) == grade


def test_the_prompt_shows_the_conversation_and_the_graded_reply() -> None:
    multi = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Capital of Italy?"},
            {"role": "assistant", "content": "Rome."},
        ]
    }
    prompt = judge_prompt(multi, "RUBRIC")
    assert prompt.startswith("RUBRIC\n")
    assert "System: Be brief.\nUser: Hi\nAssistant: Hello!\nUser: Capital of Italy?\nAnswer: Rome." in prompt
    assert prompt.rstrip().endswith("Reply with a number only.")
    pair = {"prompt": [{"role": "user", "content": "Name a colour"}], "chosen": "Blue.", "rejected": "Seven."}
    assert "Answer: Blue." in judge_prompt(pair, "R") and "Seven" not in judge_prompt(pair, "R")
    kto = {"prompt": [{"role": "user", "content": "Name a colour"}], "completion": "Green.", "label": True}
    assert "Answer: Green." in judge_prompt(kto, "R")
    long = judge_prompt(sft("Q", "x" * (JUDGE_TEXT_CHARS + 500)), "R")
    assert "x" * JUDGE_TEXT_CHARS + " […cut]" in long and "x" * (JUDGE_TEXT_CHARS + 1) not in long


def test_judge_fields_round_trip_and_out_of_range_values_are_named() -> None:
    step = QualityConfig(judge_model=" deploy:my-server ", rubric="Is it kind?", judge_weight=0.3, judge_max_tokens=32)
    assert step.judge_model == "deploy:my-server"
    pipeline = CurationPipeline(name="judged", steps=[step])
    text = dump_pipeline(pipeline)
    assert "judge_model: deploy:my-server" in text and load_pipeline(text) == pipeline
    assert QualityConfig(judge_model="").judge_model is None  # an emptied field: no judge
    for field, value in (("judge_weight", 1.5), ("judge_max_tokens", 200), ("judge_max_tokens", 4), ("rubric", "")):
        with pytest.raises(ValidationError) as err:
            load_pipeline(f"name: p\nsteps:\n  - step: quality\n    judge_model: default\n    {field}: {value!r}\n")
        assert err.value.param == f"steps[0].{field}", err.value.message


def test_a_judge_without_a_chat_function_is_refused_naming_the_field() -> None:
    pipeline = CurationPipeline(name="p", steps=[CleanConfig(), QualityConfig(judge_model="default")])
    with pytest.raises(ValidationError) as err:
        run_steps(ROWS, pipeline, context=StepContext(count_tokens=len))
    assert err.value.param == "steps[1].judge_model"
    assert "'default'" in err.value.message and "judge_model" in err.value.message
    with pytest.raises(ValidationError) as err:
        run_step(ROWS, QualityConfig(judge_model="default"))  # one step alone: steps[0]
    assert err.value.param == "steps[0].judge_model"


# -- against a store ---------------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[DatasetStore]:
    db = Database("sqlite:///" + str(tmp_path / "t.db"))
    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    store = DatasetStore(settings, db)
    store.create_version("faq", ROWS, source="upload")
    yield store
    db.dispose()


def files(store: DatasetStore) -> list[Path]:
    return sorted(p for p in store.root.rglob("*") if p.is_file())


JUDGED = CurationPipeline(name="judged", steps=[CleanConfig(), QualityConfig(judge_model="judge-a", min_score=0.6)])


def test_curate_with_a_judge_keeps_what_it_grades_well_and_records_the_judge(store: DatasetStore) -> None:
    before = files(store)
    with pytest.raises(ValidationError) as err:
        preview(store, "faq", JUDGED)
    assert err.value.param == "steps[1].judge_model" and files(store) == before

    shown = preview(store, "faq", JUDGED, context=StepContext(chat=FakeJudge(GRADES)))
    assert shown.kept == [VAGUE, RIGHT] and files(store) == before
    outcome = curate(store, "faq", JUDGED, context=StepContext(chat=FakeJudge(GRADES)))
    v = outcome.import_result.version
    assert store.load_examples(v) == [VAGUE, RIGHT]
    assert v.lineage["pipeline"]["steps"][1]["judge_model"] == "judge-a"
    assert v.lineage["steps"][1]["reasons"] == {"score below 0.6": 1}
    assert outcome.result.to_dict()["steps"][1]["details"]["judged"] == 3


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (GenerationError("generation failed on 'x' (RuntimeError)"), JudgeError),
        (ModelNotFoundError("model 'judge-a' not found; known: default"), ValidationError),
    ],
)
def test_a_judge_that_fails_stops_the_run_naming_the_model_and_writes_nothing(
    store: DatasetStore, error: Exception, raised: type[Exception]
) -> None:
    before = files(store)
    judge = FakeJudge(GRADES, fail=error)
    with pytest.raises(raised) as err:
        curate(store, "faq", JUDGED, context=StepContext(chat=judge))
    assert isinstance(err.value, ValidationError | JudgeError)
    assert err.value.param == "steps[1].judge_model"
    assert "judge model 'judge-a'" in err.value.message and str(error) in err.value.message
    assert len(judge.asked) == 1  # stopped at the first failure
    assert files(store) == before and [v.number for v in store.versions("faq")] == [1]


# -- the bundled model -------------------------------------------------------------------------------------------
def test_the_bundled_model_grades_rows_greedily_through_the_engine_manager(ctx: AppContext) -> None:
    from sqlmodel import col, func, select

    from studio.db import RequestLog

    def judge_requests() -> int:
        with ctx.db.session() as session:
            query = select(func.count()).select_from(RequestLog).where(col(RequestLog.endpoint) == "curation.judge")
            return int(session.exec(query).one())

    asked_before = judge_requests()
    config = QualityConfig(judge_model="default", judge_max_tokens=8)
    context = StepContext(chat=engine_chat(ctx.engines))
    first = run_step(ROWS, config, context).report.details
    assert first["judge_model"] == "default" and first["judged"] == 3
    graded = [s["judge"] for s in first["judge_scores"]]
    assert all(g is None or 1 <= g <= 10 for g in graded)
    assert first["judge_no_score"] == graded.count(None)
    assert all(s["reply"] for s in first["judge_scores"])  # the model answered every row
    assert judge_requests() == asked_before + 3  # one logged request per row, through the engine manager
    again = run_step(ROWS, config, context).report.details
    assert again["judge_scores"] == first["judge_scores"]  # greedy: the same grades again

    with pytest.raises(ValidationError) as err:
        run_step(ROWS, QualityConfig(judge_model="no-such-judge"), context)
    assert err.value.param == "steps[0].judge_model" and "'no-such-judge'" in err.value.message


def test_studio_data_curate_loads_the_judge_in_process(
    studio_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from studio.cli import main

    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(studio_home / "models", target_is_directory=True)
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("STUDIO_HF_CACHE", str(studio_home / "hf-cache"))
    monkeypatch.delenv("STUDIO_DATABASE_URL", raising=False)
    settings = Settings()
    settings.ensure_dirs()
    db = Database(settings.db_url)
    DatasetStore(settings, db).create_version("faq", ROWS, source="upload")
    db.dispose()
    (home / "judged.yaml").write_text(
        "name: judged\nsteps:\n  - step: quality\n    judge_model: default\n    judge_max_tokens: 8\n", encoding="utf-8"
    )
    capsys.readouterr()
    assert main(["data", "curate", str(home / "judged.yaml"), "--dataset", "faq", "--preview", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["steps"][0]["details"]["judge_model"] == "default" and shown["steps"][0]["details"]["judged"] == 3

    (home / "broken.yaml").write_text(
        "name: broken\nsteps:\n  - step: quality\n    judge_model: no-such-judge\n", encoding="utf-8"
    )
    assert main(["data", "curate", str(home / "broken.yaml"), "--dataset", "faq"]) == 2
    err = capsys.readouterr().err
    assert "steps[0].judge_model" in err and "'no-such-judge'" in err
    db = Database(settings.db_url)
    assert [v.number for v in DatasetStore(settings, db).versions("faq")] == [1]  # nothing written
    db.dispose()


def test_an_augmentation_filter_with_a_judge_is_refused_at_submit(tmp_path: Path) -> None:
    """The filter after generation has no judge to ask: refused when the job is submitted, not after generating."""
    from studio.curation.augment import AugmentConfig, prepare_augment

    db = Database(f"sqlite:///{tmp_path}/s.db")
    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    rows = [{"messages": [{"role": "user", "content": f"q{i}?"}, {"role": "assistant", "content": f"a{i}."}]}
            for i in range(3)]  # fmt: skip
    DatasetStore(settings, db).create_version("src", rows)
    judged = CurationPipeline(name="f", steps=[QualityConfig(judge_model="default")])
    with pytest.raises(ValidationError) as err:
        prepare_augment(AugmentConfig(dataset="src", filter=judged), settings, db)
    assert err.value.param == "filter.steps[0].judge_model"
    db.dispose()
