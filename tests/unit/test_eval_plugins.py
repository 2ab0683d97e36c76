"""Metric plugins: a Python file and YAML metrics registered and scoring; broken plugins isolated and reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.evaluation.job import _RunRecord, score_sample
from studio.evaluation.metrics import MetricContext, Sample
from studio.evaluation.plugins import extract_json, load_registry, plugin_rows

POLITE = '''"""Politeness metrics."""


def polite(sample):
    """1 when the reply says please or thank you."""
    text = sample.output.lower()
    return float("please" in text or "thank" in text)


def words(sample, ctx):
    return {"n_words": len(sample.output.split()), "model_is_m": float(sample.model == "m")}


def register(registry):
    registry.add("polite", polite, higher_is_better=True)
    registry.add("words", words, "Word count", keys=["n_words"], higher_is_better=None)
'''

BROKEN_IMPORT = "raise RuntimeError('this plugin cannot even load')\n"

RAISES_WHILE_SCORING = """
def boom(sample):
    raise ZeroDivisionError("plugin bug at scoring time")


def register(registry):
    registry.add("boom", boom, "Always fails")
"""


def sample(output: str, reference: str | None = None) -> Sample:
    return Sample(0, "q", reference, output, model="m")


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "polite.py").write_text(POLITE, encoding="utf-8")
    (folder / "broken.py").write_text(BROKEN_IMPORT, encoding="utf-8")
    (folder / "boom.py").write_text(RAISES_WHILE_SCORING, encoding="utf-8")
    (folder / "paris.yaml").write_text(
        "name: mentions_paris\ntype: regex\npattern: '\\bparis\\b'\nignore_case: true\n"
        "description: The reply names Paris\n",
        encoding="utf-8",
    )
    (folder / "rules.yml").write_text(
        """metrics:
  - name: on_topic
    type: keywords
    include: [capital, france]
    exclude: [sorry]
  - name: any_fruit
    type: keywords
    mode: any
    include: [apple, pear]
  - name: valid_person
    type: json_schema
    schema:
      type: object
      required: [name, age]
      properties: {name: {type: string}, age: {type: integer, minimum: 0}}
  - name: strict
    type: judge
    template: "Grade {output} against {reference}. Score: 0-10"
    min_score: 0
    max_score: 10
""",
        encoding="utf-8",
    )
    (folder / "bad.yaml").write_text("name: bad\ntype: regex\n", encoding="utf-8")  # no pattern
    (folder / "_private.py").write_text(BROKEN_IMPORT, encoding="utf-8")  # skipped: starts with _
    return folder


def test_python_and_yaml_plugins_register_metrics(plugins: Path) -> None:
    registry = load_registry(folder=plugins, entry_points=False)
    names = registry.names()
    for name in ("polite", "words", "boom", "mentions_paris", "on_topic", "any_fruit", "valid_person", "strict"):
        assert name in names
    ctx = MetricContext()
    assert registry.get("polite").run(sample("Thank you!"), ctx) == {"polite": 1.0}
    assert registry.get("polite").source == str(plugins / "polite.py")
    assert registry.get("polite").description == "1 when the reply says please or thank you."
    assert registry.get("words").run(sample("a b c"), ctx) == {"n_words": 3.0, "model_is_m": 1.0}
    assert registry.get("mentions_paris").run(sample("It is PARIS."), ctx) == {"mentions_paris": 1.0}
    assert registry.get("mentions_paris").run(sample("Parisian food"), ctx) == {"mentions_paris": 0.0}
    assert registry.get("on_topic").run(sample("The capital of France."), ctx) == {"on_topic": 1.0}
    assert registry.get("on_topic").run(sample("Sorry, the capital of France."), ctx) == {"on_topic": 0.0}
    assert registry.get("on_topic").run(sample("The capital."), ctx) == {"on_topic": 0.0}
    assert registry.get("any_fruit").run(sample("a pear"), ctx) == {"any_fruit": 1.0}
    person = registry.get("valid_person")
    assert person.run(sample('Here: ```json\n{"name": "Ada", "age": 36}\n```'), ctx) == {"valid_person": 1.0}
    assert person.run(sample('{"name": "Ada", "age": -1}'), ctx) == {"valid_person": 0.0}
    assert person.run(sample("no json at all"), ctx) == {"valid_person": 0.0}
    judged = registry.get("strict").run(sample("x", "y"), MetricContext(judge_chat=lambda p, n: "Score: 7"))
    assert judged == {"strict": 0.7, "strict_raw": 7.0, "strict_valid": 1.0}


def test_broken_plugins_are_listed_with_name_and_traceback(plugins: Path) -> None:
    registry = load_registry(folder=plugins, entry_points=False)
    by_name = {p.name: p for p in registry.plugins}
    assert set(by_name) == {"polite", "broken", "boom", "paris", "rules", "bad"}
    assert by_name["broken"].error is not None
    assert "Traceback" in by_name["broken"].error and "this plugin cannot even load" in by_name["broken"].error
    assert by_name["bad"].error is not None and "pattern" in by_name["bad"].error
    assert by_name["polite"].error is None and by_name["polite"].metrics == ("polite", "words")
    assert by_name["polite"].description == "Politeness metrics."
    rows = {r[0]: r for r in plugin_rows(registry.plugins)}
    assert rows["broken"][2].startswith("failed: RuntimeError: this plugin cannot even load")


def test_a_metric_that_raises_is_isolated(plugins: Path) -> None:
    registry = load_registry(folder=plugins, entry_points=False)
    specs = [registry.get(n) for n in ("polite", "boom", "exact_match")]
    record = _RunRecord()
    scores, error = score_sample(sample("Thanks", "thanks"), specs, MetricContext(), record)
    assert scores == {"polite": 1.0, "exact_match": 1.0}
    assert error == "boom: ZeroDivisionError: plugin bug at scoring time"
    failure = record.metric_errors["boom"]
    assert failure["count"] == 1 and "Traceback" in failure["traceback"] and "ZeroDivisionError" in failure["traceback"]


def test_extract_json() -> None:
    assert extract_json("  [1, 2] ") == [1, 2]
    assert extract_json('text {"a": {"b": 1}} more') == {"a": {"b": 1}}
    with pytest.raises(ValueError):
        extract_json("{not json")


def test_home_plugins_folder_is_the_default(tmp_path: Path) -> None:
    from studio.settings import Settings

    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    (settings.home / "plugins" / "p.yaml").write_text("name: yes_no\ntype: regex\npattern: '^(yes|no)'\n")
    registry = load_registry(settings, entry_points=False)
    assert "yes_no" in registry.names() and registry.plugins[0].kind == "yaml"
