"""Curation steps on hand-made rows (English, Hindi, French, mixed script), MinHash dedupe on planted
near-duplicates, pipeline YAML and its errors, and curate/preview against a real DatasetStore."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studio.curation.dedupe import near_duplicate_clusters
from studio.curation.pipeline import (
    SHIPPED_DIR,
    CurationPipeline,
    curate,
    dump_pipeline,
    get_pipeline,
    list_pipelines,
    load_pipeline,
    preview,
    run_steps,
    save_pipeline,
    token_counter,
)
from studio.curation.steps import (
    STEP_KINDS,
    CleanConfig,
    DedupeConfig,
    EmptyConfig,
    LanguageConfig,
    LengthConfig,
    PiiConfig,
    QualityConfig,
    RefusalConfig,
    RepetitionConfig,
    StepConfig,
    StepContext,
    SymbolsConfig,
    ToxicityConfig,
    run_step,
    symbol_ratio,
    words,
)
from studio.datasets.store import DatasetStore
from studio.db.engine import Database
from studio.errors import NotFoundError, PayloadTooLargeError, ValidationError
from studio.settings import Settings

HINDI = "यह एक परीक्षण वाक्य है जो हिंदी में लिखा गया है"
HINDI_REPLY = "हाँ, यह वाक्य हिंदी भाषा में लिखा गया है और इसे आसानी से पढ़ा जा सकता है।"
FRENCH = "Bonjour, pouvez-vous m'expliquer comment fonctionne la photosynthèse des plantes vertes ?"
FRENCH_REPLY = "Bien sûr : les plantes utilisent la lumière du soleil pour transformer l'eau et le gaz carbonique."
# code-mixed Hindi: Devanagari with English terms in Latin script
MIXED = "मुझे यह बताइए कि machine learning क्या है"
MIXED_REPLY = "Machine learning एक ऐसी तकनीक है जिसमें computer डेटा से सीखते हैं।"


def sft(user: str, reply: str, system: str | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return {"messages": messages}


def reply_of(row: dict[str, Any]) -> str:
    return str(row["messages"][-1]["content"])


def run(rows: list[dict[str, Any]], config: Any, context: StepContext | None = None) -> Any:
    return run_step(rows, config, context)


# -- text helpers ------------------------------------------------------------------------------------------------
def test_hindi_words_keep_their_vowel_signs_and_are_not_symbols() -> None:
    assert words(HINDI) == ["यह", "एक", "परीक्षण", "वाक्य", "है", "जो", "हिंदी", "में", "लिखा", "गया", "है"]
    assert symbol_ratio(HINDI) == 0.0
    assert words("机器学习 ok") == ["机", "器", "学", "习", "ok"]


# -- clean -------------------------------------------------------------------------------------------------------
def test_clean_mends_mojibake_markup_controls_and_whitespace_but_not_code_or_hindi() -> None:
    code = "Use it like this:\n```html\n<p>keep    me</p>\n```"
    rows = [
        sft("Where is the cafÃ© ?", "<p>It is <b>round</b> the&nbsp;corner.</p><script>x()</script>"),
        sft("  Tabs\x07 and\u200b   spaces   ", "Line one   \n\n\n\nLine two"),
        sft("Show HTML", code),
        sft(HINDI, HINDI_REPLY),
    ]
    out = run(rows, CleanConfig())
    cleaned = out.rows
    assert cleaned[0]["messages"][0]["content"] == "Where is the café ?"
    assert reply_of(cleaned[0]) == "It is round the\u00a0corner."
    assert cleaned[1]["messages"][0]["content"] == "Tabs and spaces"
    assert reply_of(cleaned[1]) == "Line one\n\nLine two"
    assert reply_of(cleaned[2]) == code  # inside the fence nothing changes
    assert cleaned[3] == rows[3]  # Hindi text is already clean: NFC and no control characters touched
    assert out.report.changed == 2 and out.report.dropped == 0
    assert {"mojibake", "markup", "whitespace", "control characters", "trimmed"} <= set(out.report.reasons)
    before, after = out.report.changed_examples[0]
    assert before == rows[0] and after == cleaned[0]
    assert rows[0]["messages"][0]["content"] == "Where is the cafÃ© ?"  # the input rows are not modified


def test_clean_nfkc_folds_full_width_and_a_reply_cleaned_to_nothing_is_dropped() -> None:
    rows = [sft("Ｆｕｌｌ width", "ﬁne"), sft("Only markup?", "<br><div></div>")]
    out = run(rows, CleanConfig(unicode="NFKC"))
    assert [m["content"] for m in out.rows[0]["messages"]] == ["Full width", "fine"]
    assert out.report.dropped == 1 and out.report.reasons["became empty"] == 1
    assert out.report.dropped_examples[0] == (rows[1], "became empty")


# -- filters -----------------------------------------------------------------------------------------------------
def test_length_in_characters_and_tokens() -> None:
    rows = [sft("Hi", "Ok."), sft("Tell me about tea", "Tea is an aromatic drink made from leaves.")]
    out = run(rows, LengthConfig(apply_to="response", min_chars=10))
    assert out.rows == [rows[1]] and out.report.reasons == {"too short": 1}
    out = run(rows, LengthConfig(min_chars=0, max_chars=20))
    assert out.rows == [rows[0]] and out.report.reasons == {"too long": 1}
    by_words = StepContext(count_tokens=lambda text: len(text.split()))
    out = run(rows, LengthConfig(apply_to="response", max_tokens=5), by_words)
    assert out.rows == [rows[0]] and out.report.reasons == {"too many tokens": 1}
    with pytest.raises(ValidationError) as err:
        run(rows, LengthConfig(max_tokens=5))
    assert err.value.param == "tokenizer_model"


def test_repetition_drops_looping_text_and_keeps_hindi() -> None:
    loop = "I am here to help. " * 8
    rows = [sft("Say something", loop), sft(HINDI, HINDI_REPLY), sft("Name a colour", "Blue, like the sky.")]
    out = run(rows, RepetitionConfig(n=3, max_ratio=0.3))
    assert out.rows == rows[1:] and out.report.reasons == {"repetitive": 1}


def test_symbols_drop_symbol_soup_and_keep_hindi_and_mixed_script() -> None:
    rows = [sft("$$$ ### !!!", "@@@ %%% ^^^ &&& ***"), sft(HINDI, HINDI_REPLY), sft(MIXED, MIXED_REPLY)]
    out = run(rows, SymbolsConfig(max_ratio=0.3))
    assert out.rows == rows[1:] and out.report.dropped == 1


def test_empty_drops_wordless_echoes_and_same_preference_replies_but_not_tool_calls() -> None:
    tool_call = {
        "messages": [
            {"role": "user", "content": "What time is it in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "clock", "arguments": {"city": "Paris"}}}],
            },
        ]
    }
    pair = {"prompt": [{"role": "user", "content": "Agree?"}], "chosen": "Yes.", "rejected": "yes"}
    rows = [sft("Hello there", "..."), sft("Repeat me", "repeat me!"), tool_call, pair, sft("Hi", "Hello!")]
    out = run(rows, EmptyConfig())
    assert out.rows == [tool_call, rows[4]]
    assert out.report.reasons == {
        "empty response": 1,
        "response repeats the prompt": 1,
        "chosen and rejected say the same": 1,
    }


def test_refusal_drops_replies_that_refuse_and_keeps_rejected_or_undesirable_refusals() -> None:
    rows = [
        sft("Write a poem", "As an AI language model, I cannot write poems."),
        sft("Summarise this", "Sure. " + "The report covers sales. " * 20 + "I won't bore you with details."),
        {"prompt": [{"role": "user", "content": "Help?"}], "chosen": "Of course.", "rejected": "I can't help."},
        {
            "prompt": [{"role": "user", "content": "Help?"}],
            "completion": "I can\u2019t help with that.",
            "label": False,
        },
        {"prompt": [{"role": "user", "content": "Help?"}], "completion": "I can\u2019t help with that.", "label": True},
    ]
    out = run(rows, RefusalConfig())
    assert out.rows == rows[1:4] and out.report.reasons == {"refusal": 2}
    custom = run([sft("Q", "Computer says no.")], RefusalConfig(phrases=["computer says no"]))
    assert custom.rows == []


def test_language_keeps_the_chosen_languages_and_reports_the_mix() -> None:
    rows = [
        sft("What is the capital of France?", "The capital of France is Paris."),
        sft(HINDI, HINDI_REPLY),
        sft(FRENCH, FRENCH_REPLY),
        sft("2+2", "4"),
    ]
    out = run(rows, LanguageConfig(keep=["en"]))
    assert out.rows == [rows[0], rows[3]]  # "2+2 → 4" has too few letters to tell: kept
    assert out.report.reasons == {"language hi": 1, "language fr": 1}
    assert out.report.details["languages"] == {"en": 1, "hi": 1, "fr": 1, "und": 1}
    hindi = run(rows, LanguageConfig(keep=["hi", "fr"], keep_undetermined=False))
    assert hindi.rows == [rows[1], rows[2]]
    only_hindi_replies = run([sft(MIXED, HINDI_REPLY)], LanguageConfig(keep=["hi"], apply_to="response"))
    assert len(only_hindi_replies.rows) == 1


def test_language_of_a_mixed_script_row_is_its_grammar_and_needs_enough_confidence() -> None:
    rows = [sft(MIXED, MIXED_REPLY)]
    assert run(rows, LanguageConfig(keep=["hi"], min_probability=0.9)).rows == rows
    english = run(rows, LanguageConfig(keep=["en"]))
    assert english.rows == [] and english.report.reasons == {"language hi": 1}
    strict = run(rows, LanguageConfig(keep=["hi"], min_probability=1.0))
    assert strict.rows == [] and strict.report.reasons == {"uncertain language": 1}


def test_pii_masks_or_drops_personal_data() -> None:
    rows = [sft("Mail me at jane.doe@example.com please", "I will write to you."), sft("Hi", "Hello!")]
    masked = run(rows, PiiConfig(entities=["EMAIL_ADDRESS"], action="mask"))
    assert masked.rows[0]["messages"][0]["content"] == "Mail me at <EMAIL_ADDRESS> please"
    assert masked.rows[1] == rows[1]
    assert masked.report.changed == 1 and masked.report.reasons == {"masked EMAIL_ADDRESS": 1}
    dropped = run(rows, PiiConfig(entities=["EMAIL_ADDRESS"], action="drop", apply_to="prompt"))
    assert dropped.rows == [rows[1]] and dropped.report.reasons == {"personal data (EMAIL_ADDRESS)": 1}
    replies_only = run(rows, PiiConfig(entities=["EMAIL_ADDRESS"], action="drop", apply_to="response"))
    assert replies_only.rows == rows


def test_toxicity_drops_rows_the_offline_scorer_rates_toxic() -> None:
    rows = [sft("Tell me about dogs", "Dogs are loyal companions."), sft("Insult me", "You are a fucking idiot.")]
    out = run(rows, ToxicityConfig(max_score=0.5))
    assert out.rows == [rows[0]] and out.report.reasons == {"toxic": 1}
    assert out.report.details["scorer"] == "profanity-check"


# -- dedupe ------------------------------------------------------------------------------------------------------
DISTINCT = [
    "The river flows quietly past the old mill where farmers once brought their grain every autumn to be ground "
    "into flour for the long winter months ahead of them",
    "Quantum computers use qubits that can hold superpositions of states which lets certain algorithms search "
    "large spaces far faster than any classical machine could manage",
    "To bake sourdough bread you first feed the starter then mix flour water and salt and let the dough rise "
    "slowly overnight in a cool kitchen",
    "The museum opened a new wing dedicated to medieval tapestries woven in Flanders and restored over a decade "
    "by a small team of patient conservators",
    "Marathon runners train for months building endurance with long slow runs interval sessions and careful "
    "attention to sleep nutrition and recovery",
]


def test_minhash_finds_planted_near_duplicates_and_keeps_the_distinct_rows() -> None:
    near = [
        DISTINCT[0].replace("autumn", "spring"),
        DISTINCT[2].replace("overnight", "all night"),
        DISTINCT[0].replace("farmers", "villagers"),
    ]
    texts = [*DISTINCT, *near]  # rows 5 and 7 copy row 0, row 6 copies row 2
    assert near_duplicate_clusters(texts, threshold=0.7) == [[0, 5, 7], [2, 6]]
    rows = [sft(f"Question {i}", t) for i, t in enumerate(texts)]
    out = run(rows, DedupeConfig(threshold=0.7, apply_to="response"))
    assert out.rows == rows[:5]
    assert out.report.reasons == {"near-duplicate": 3}
    assert out.report.clusters == [[0, 5, 7], [2, 6]]
    assert out.report.details["clusters"] == 2
    # a strict threshold only merges identical shingle sets
    assert run(rows, DedupeConfig(threshold=1.0, apply_to="response")).rows == rows


def test_dedupe_ignores_a_shared_system_prompt_unless_asked() -> None:
    system = " ".join(DISTINCT)  # a long system prompt every row shares
    rows = [sft("What is two plus two?", "Four."), sft("Name a red fruit.", "A strawberry.")]
    rows = [{"messages": [{"role": "system", "content": system}, *r["messages"]]} for r in rows]
    assert run(rows, DedupeConfig()).rows == rows
    assert len(run(rows, DedupeConfig(include_system=True)).rows) == 1


# -- quality -----------------------------------------------------------------------------------------------------
def test_quality_scores_rows_cuts_and_sorts() -> None:
    good = sft("Explain rain", "Rain forms when water vapour condenses into droplets heavy enough to fall.")
    refusal = sft("Explain rain", "As an AI, I cannot explain rain.")
    short = sft("Explain rain", "Water.")
    rows = [refusal, short, good]
    pipeline = CurationPipeline(name="q", steps=[QualityConfig(sort=True), LengthConfig(min_chars=40)])
    result = run_steps(rows, pipeline)
    assert result.kept == [good, refusal]  # sorted best first; the short one then fails the length step
    assert result.scores is not None and result.scores[0] > 0.99 and 0.5 < result.scores[1] < 1.0
    cut = run(rows, QualityConfig(min_score=0.9))
    assert cut.rows == [good] and cut.report.reasons == {"score below 0.9": 2}


# -- pipelines ---------------------------------------------------------------------------------------------------
def test_every_registered_step_is_in_the_pipeline_schema_with_documented_fields() -> None:
    union = typing.get_args(typing.get_args(StepConfig)[0])
    assert [m.model_fields["step"].default for m in union] == list(STEP_KINDS)
    for kind in STEP_KINDS.values():
        assert kind.description
        for name, info in kind.config_model.model_fields.items():
            assert name == "step" or info.description, f"{kind.name}.{name} has no help text"


def test_pipeline_yaml_round_trip_and_the_shipped_example() -> None:
    pipeline = CurationPipeline(
        name="mine",
        description="all of it",
        tokenizer_model="default",
        steps=[CleanConfig(unicode="NFKC"), LanguageConfig(keep=["hi", "en"]), DedupeConfig(threshold=0.9)],
    )
    text = dump_pipeline(pipeline)
    assert "threshold: 0.9" in text and "- hi" in text
    assert load_pipeline(text) == pipeline
    shipped = load_pipeline((SHIPPED_DIR / "sft-clean.yaml").read_text(encoding="utf-8"))
    assert shipped.name == "sft-clean" and shipped.steps[0].step == "clean"
    assert load_pipeline(dump_pipeline(shipped)) == shipped


@pytest.mark.parametrize(
    ("steps", "param", "words_in_message"),
    [
        ("- {step: dedupe, threshold: 1.5}", "steps[0].threshold", ["between 0.5 and 1", "1.5"]),
        ("- {step: clean}\n  - {step: length, min_chars: 50, max_chars: 10}", "steps[1]", ["min_chars", "max_chars"]),
        ("- {step: sharpen}", "steps[0].step", ["unknown step 'sharpen'", "dedupe"]),
        ("- {step: dedupe, thresold: 0.9}", "steps[0].thresold", ["did you mean 'threshold'"]),
        ("- {step: language, keep: [english]}", "steps[0].keep", ["2-3 letters"]),
    ],
)
def test_pipeline_errors_name_the_field(steps: str, param: str, words_in_message: list[str]) -> None:
    with pytest.raises(ValidationError) as err:
        load_pipeline(f"name: bad\nsteps:\n  {steps}\n")
    assert err.value.param == param
    assert f"{param}:" in err.value.message
    for word in words_in_message:
        assert word in err.value.message


def test_pipeline_yaml_syntax_and_shape_errors() -> None:
    with pytest.raises(ValidationError, match=r"line 3, column 1: not valid YAML") as err:
        load_pipeline("name: x\nsteps: [\n")
    assert err.value.param == "yaml"
    with pytest.raises(ValidationError) as err:
        load_pipeline("name: x\nsteps: []\n")
    assert err.value.param == "steps"
    with pytest.raises(ValidationError) as err:
        load_pipeline("name: ../escape\nsteps: [{step: clean}]\n")
    assert err.value.param == "name"


# -- against a store ---------------------------------------------------------------------------------------------
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


def seed(store: DatasetStore, name: str = "faq") -> list[dict[str, Any]]:
    rows = [sft(f"Question {i}?", t) for i, t in enumerate(DISTINCT)]
    rows += [sft("Question 9?", DISTINCT[0].replace("autumn", "spring")), sft("Hi", "As an AI, I cannot say.")]
    store.create_version(name, rows, source="upload")
    return rows


PIPELINE = CurationPipeline(
    name="tidy", steps=[RefusalConfig(), DedupeConfig(threshold=0.7, apply_to="response"), QualityConfig()]
)


def files(store: DatasetStore) -> list[Path]:
    return sorted(p for p in store.root.rglob("*") if p.is_file())


def test_curate_writes_a_new_version_with_parent_and_lineage(store: DatasetStore) -> None:
    rows = seed(store)
    source = store.get_version("faq")
    outcome = curate(store, "faq", PIPELINE)
    v = outcome.import_result.version
    assert outcome.import_result.created and v.number == 2 and v.source == "curate"
    assert v.parent_version_id == source.id
    assert store.load_examples(v) == rows[:5]
    assert v.lineage["source"] == {"dataset": "faq", "version": 1, "version_id": source.id}
    assert v.lineage["pipeline"]["name"] == "tidy"
    assert v.lineage["pipeline"]["steps"][1]["threshold"] == 0.7
    assert [(s["step"], s["rows_in"], s["rows_out"]) for s in v.lineage["steps"]] == [
        ("refusal", 7, 6),
        ("dedupe", 6, 5),
        ("quality", 5, 5),
    ]
    assert store.get_version("faq").id == v.id
    again = curate(store, "faq", PIPELINE)  # the curated rows are already a version: nothing new
    assert not again.import_result.created and again.import_result.version.number == 2


def test_curate_into_another_dataset_records_the_source(store: DatasetStore) -> None:
    seed(store)
    outcome = curate(store, "faq", PIPELINE, version=1, into="faq-clean")
    v = outcome.import_result.version
    assert outcome.import_result.dataset.name == "faq-clean" and v.number == 1
    assert v.parent_version_id is None
    assert v.lineage["source"]["dataset"] == "faq"
    assert [x.number for x in store.versions("faq")] == [1]


def test_a_pipeline_that_drops_every_row_is_refused_and_writes_nothing(store: DatasetStore) -> None:
    seed(store)
    before = files(store)
    drop_all = CurationPipeline(name="harsh", steps=[CleanConfig(), LengthConfig(min_chars=100_000)])
    with pytest.raises(ValidationError) as err:
        curate(store, "faq", drop_all)
    assert err.value.param == "steps"
    assert "every one of the 7 rows" in err.value.message
    assert "length: 7 → 0" in err.value.message and "too short 7" in err.value.message
    assert [v.number for v in store.versions("faq")] == [1]
    assert files(store) == before


def test_preview_runs_on_a_sample_and_writes_nothing(store: DatasetStore) -> None:
    seed(store)
    before = files(store)
    result = preview(store, "faq", PIPELINE, sample=3)
    assert (result.rows_in, result.total, result.sampled) == (3, 7, True)
    assert result.reports[0].rows_in == 3
    full = preview(store, "faq", PIPELINE)
    assert len(full.kept) == 5 and full.reports[1].clusters == [[0, 5]]
    assert files(store) == before and len(store.versions("faq")) == 1


def test_a_dataset_over_the_size_limit_is_refused(store: DatasetStore, tmp_path: Path, db: Database) -> None:
    seed(store)
    small = DatasetStore(Settings(home=store.settings.home, max_upload_bytes=1024), db)
    with pytest.raises(PayloadTooLargeError) as err:
        preview(small, "faq", PIPELINE)
    assert err.value.param == "dataset" and "STUDIO_MAX_UPLOAD_BYTES" in err.value.message


def test_tokens_without_a_tokenizer_model_are_refused_before_running(store: DatasetStore) -> None:
    seed(store)
    pipeline = CurationPipeline(name="tok", steps=[LengthConfig(max_tokens=100)])
    with pytest.raises(ValidationError) as err:
        preview(store, "faq", pipeline)
    assert err.value.param == "tokenizer_model"
    result = preview(store, "faq", pipeline, count_tokens=lambda text: len(text.split()))
    assert len(result.kept) == 7


class FakeTokenizers:
    """Stands in for the Fine-Tune tab's TokenizerCache: a whitespace tokenizer that adds a BOS token unless told
    not to, recording which model was asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def get(self, model: str) -> Any:
        self.asked.append(model)
        return lambda text, add_special_tokens=True: {"input_ids": ["<s>"] * add_special_tokens + text.split()}


def test_token_counter_counts_with_the_model_tokenizer_and_no_special_tokens(tmp_path: Path) -> None:
    tokenizers = FakeTokenizers()
    count = token_counter(Settings(home=tmp_path), "default", tokenizers)  # type: ignore[arg-type]
    assert count("one two three") == 3 and tokenizers.asked == ["default"]


def test_saved_pipelines_are_listed_and_read_back(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    assert "sft-clean" in list_pipelines(settings)  # the shipped example
    path = save_pipeline(settings, PIPELINE)
    assert path == settings.home / "pipelines" / "tidy.yaml"
    assert list_pipelines(settings) == sorted({"tidy", "sft-clean"} | set(list_pipelines(settings)))
    assert get_pipeline(settings, "tidy") == PIPELINE
    with pytest.raises(NotFoundError, match=r"known pipelines: .*tidy"):
        get_pipeline(settings, "missing")
    with pytest.raises(ValidationError):
        get_pipeline(settings, "../etc/passwd")
