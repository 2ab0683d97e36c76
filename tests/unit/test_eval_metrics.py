"""Built-in metrics against hand-computed values and the libraries' own results (no model here; perplexity and
LAMBADA against a forward pass are in tests/integration/test_eval_model_metrics.py)."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from studio.errors import ValidationError
from studio.evaluation.config import EvalConfig, JudgeConfig
from studio.evaluation.lm import split_last_word
from studio.evaluation.metrics import (
    JudgeRubric,
    MetricContext,
    MetricRegistry,
    MetricUnavailableError,
    Sample,
    ToxicityAdapter,
    as_scores,
    bleu_corpus,
    builtin_metrics,
    load_rubric,
    mean_scores,
    normalise,
    perplexity_aggregate,
)

PAIRS = [
    ("The cat sat on the mat.", "The cat is sitting on the mat."),
    ("Paris is the capital of France.", "The capital of France is Paris."),
    ("It rains a lot in autumn here.", "In autumn it rains a lot here."),
]


def metric(name: str):  # type: ignore[no-untyped-def]
    return {m.name: m for m in builtin_metrics()}[name]


def sample(output: str, reference: str | None = "x", **stats: float | None) -> Sample:
    return Sample(0, "question", reference, output, stats=stats, model="m")


def test_normalise_ignores_case_punctuation_and_spacing() -> None:
    assert normalise("  The capital: PARIS!  ") == "the capital paris"


def test_exact_and_contains_match_by_hand() -> None:
    ctx = MetricContext()
    em, contains = metric("exact_match"), metric("contains")
    assert em.run(sample("Paris.", "paris"), ctx) == {"exact_match": 1.0}
    assert em.run(sample("It is Paris.", "Paris"), ctx) == {"exact_match": 0.0}
    assert contains.run(sample("It is Paris.", "Paris"), ctx) == {"contains": 1.0}
    assert contains.run(sample("It is Parisian.", "Paris"), ctx) == {"contains": 0.0}  # word boundaries
    assert em.run(sample("anything", None), ctx) == {}  # no reference: not applicable


def test_bleu_matches_sacrebleu_sentence_and_corpus() -> None:
    ctx = MetricContext()
    bleu = metric("bleu")
    samples = [sample(out, ref) for ref, out in PAIRS]
    per_example = [bleu.run(s, ctx) for s in samples]
    for (ref, out), row in zip(PAIRS, per_example, strict=True):
        assert row["bleu"] == pytest.approx(sacrebleu.sentence_bleu(out, [ref]).score)
    corpus = sacrebleu.corpus_bleu([o for _, o in PAIRS], [[r for r, _ in PAIRS]]).score
    assert bleu.summarise(per_example, samples) == {"bleu": pytest.approx(corpus)}
    assert bleu.run(sample("the same words here", "the same words here"), ctx)["bleu"] == pytest.approx(100.0)
    assert bleu_corpus([], []) == {"bleu": None}


def test_rouge_by_hand_and_against_rouge_score() -> None:
    ctx = MetricContext()
    rouge = metric("rouge")
    got = rouge.run(sample("the cat sat", "the cat sat on the mat"), ctx)
    # unigrams: 3 of 3 output words match, 3 of 6 reference words → F1 = 2·1·0.5/1.5
    assert got["rouge1"] == pytest.approx(2 / 3)
    # bigrams: 2 of 2 output bigrams, 2 of 5 reference bigrams → F1 = 2·1·0.4/1.4
    assert got["rouge2"] == pytest.approx(2 * 0.4 / 1.4)
    assert got["rougeL"] == pytest.approx(2 / 3)  # LCS "the cat sat" = 3
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for ref, out in PAIRS:
        lib = scorer.score(ref, out)
        mine = rouge.run(sample(out, ref), ctx)
        assert mine == {k: pytest.approx(lib[k].fmeasure) for k in ("rouge1", "rouge2", "rougeL")}


def test_length_and_latency_statistics() -> None:
    ctx = MetricContext()
    s = sample("one two three", completion_tokens=4, ttft_s=0.25, tokens_per_s=20.0, latency_s=0.4)
    assert metric("length").run(s, ctx) == {"output_words": 3.0, "output_chars": 13.0, "output_tokens": 4.0}
    assert metric("latency").run(s, ctx) == {"latency_s": 0.4, "ttft_s": 0.25, "tokens_per_s": 20.0}
    rows = [{"latency_s": 1.0, "ttft_s": None}, {"latency_s": 3.0, "ttft_s": 0.5}]
    assert mean_scores(rows) == {"latency_s": 2.0, "ttft_s": 0.5}


def test_perplexity_aggregate_is_token_weighted() -> None:
    rows = [
        {"perplexity": math.e, "perplexity_tokens": 2.0},  # NLL 2 over 2 tokens
        {"perplexity": math.e**2, "perplexity_tokens": 1.0},  # NLL 2 over 1 token
    ]
    got = perplexity_aggregate(rows, [])
    assert got["perplexity"] == pytest.approx(math.exp(4 / 3))
    assert got["perplexity_tokens"] == 3.0


def test_toxicity_rate_uses_the_threshold() -> None:
    ctx = MetricContext(cache={"toxicity": ToxicityAdapter(lambda t: 0.9 if "awful" in t else 0.1, 0.5, "fake")})
    tox = metric("toxicity")
    rows = [tox.run(sample(t), ctx) for t in ("you are awful", "have a nice day", "awful awful", "fine")]
    assert [r["toxic_rate"] for r in rows] == [1.0, 0.0, 1.0, 0.0]
    assert tox.summarise(rows, [])["toxic_rate"] == pytest.approx(0.5)


def test_toxicity_without_a_scorer_is_reported_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import studio.evaluation.metrics as m

    def missing() -> ToxicityAdapter:
        raise MetricUnavailableError("toxicity unavailable: the Safety layer is not installed")

    monkeypatch.setattr(m, "load_toxicity_adapter", missing)
    with pytest.raises(MetricUnavailableError, match="unavailable"):
        metric("toxicity").run(sample("text"), MetricContext())


def test_judge_score_is_parsed_and_validated() -> None:
    rubric = JudgeRubric("r", "Q {input} R {reference} A {output}", 1, 5)
    assert rubric.scores("Reasoning... Score: 4") == {"judge": 0.75, "judge_raw": 4.0, "judge_valid": 1.0}
    assert rubric.scores("score = **2**")["judge_raw"] == 2.0
    assert rubric.scores("Score: 9") == {"judge": None, "judge_raw": None, "judge_valid": 0.0}  # out of range
    assert rubric.scores("I like it") == {"judge": None, "judge_raw": None, "judge_valid": 0.0}
    assert rubric.prompt(sample("out", "ref")) == "Q question R ref A out"


def test_judge_metric_asks_the_judge_with_the_shipped_rubric() -> None:
    asked: list[str] = []

    def judge(prompt: str, max_tokens: int) -> str:
        asked.append(prompt)
        return "Score: 5"

    config = EvalConfig(models=["m"], dataset="d", metrics=["judge"], judge=JudgeConfig(model="m"))
    ctx = MetricContext(config=config, judge_chat=judge)
    got = metric("judge").run(sample("Paris", "The capital is Paris."), ctx)
    assert got == {"judge": 1.0, "judge_raw": 5.0, "judge_valid": 1.0}
    assert "ANSWER: Paris" in asked[0] and "REFERENCE: The capital is Paris." in asked[0]
    assert load_rubric("judge_rubric.yaml").max_score == 5
    with pytest.raises(MetricUnavailableError):
        metric("judge").run(sample("x"), MetricContext(config=EvalConfig(models=["m"], dataset="d", metrics=["x"])))


def test_split_last_word() -> None:
    assert split_last_word("the cat sat on the mat.") == ("the cat sat on the", " mat")
    assert split_last_word("He said it's") == ("He said", " it's")
    assert split_last_word("word") is None


def test_registry_names_unknown_metrics_and_protects_builtins() -> None:
    registry = MetricRegistry(builtin_metrics())
    with pytest.raises(ValidationError, match="known metrics: perplexity, lambada, bleu"):
        registry.get("nope")
    with pytest.raises(ValidationError, match="built in"):
        registry.add("bleu", lambda s: 1.0)
    spec = registry.add("shout", lambda s: float(s.output.isupper()), "All capitals")
    assert spec.run(sample("HI"), MetricContext()) == {"shout": 1.0}
    assert as_scores("x", True) == {"x": 1.0}
    with pytest.raises(TypeError):
        as_scores("x", "high")  # type: ignore[arg-type]
