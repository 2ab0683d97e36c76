"""Token statistics and length limits with the bundled model's real tokenizer and chat template."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studio.datasets.builtin import ensure_builtin_datasets
from studio.datasets.store import DatasetStore
from studio.db.engine import Database
from studio.settings import Settings

pytestmark = pytest.mark.slow

BUNDLED_DIR_NAME = "HuggingFaceTB--SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def tokenizer(studio_home: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(studio_home / "models" / BUNDLED_DIR_NAME))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DatasetStore]:
    db = Database("sqlite:///" + str(tmp_path / "t.db"))
    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    yield DatasetStore(settings, db)
    db.dispose()


def _reference_length(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_token_stats_of_the_demo_dataset(store: DatasetStore, tokenizer: Any) -> None:
    ensure_builtin_datasets(store)
    version = store.get_version("whetstone-assistant")
    examples = store.load_examples(version)
    expected = sorted(_reference_length(tokenizer, e["messages"]) for e in examples)
    stats = store.token_stats(version, tokenizer, max_length=256)
    assert stats.count == len(examples) == version.num_examples
    assert (stats.min, stats.max, stats.total) == (expected[0], expected[-1], sum(expected))
    assert stats.min <= stats.p50 <= stats.p95 <= stats.max
    assert abs(stats.mean - sum(expected) / len(expected)) < 1e-9
    assert sum(stats.histogram.counts) == len(examples)
    assert stats.histogram.edges[0] == stats.min and stats.histogram.edges[-1] == stats.max
    assert stats.over_max_length == 0  # the demo fits the demo config's max_length
    # the chat template adds SmolLM2's default system prompt where a row has none: more than the text alone
    assert stats.min > 20
    # stored on the version and shown on the card
    assert store.get_version("whetstone-assistant").stats["tokens"]["max"] == stats.max
    card = next(c for c in store.list_cards() if c.name == "whetstone-assistant")
    assert card.token_stats == stats


def test_preference_token_stats_count_the_longer_reply(store: DatasetStore, tokenizer: Any) -> None:
    ensure_builtin_datasets(store)
    version = store.get_version("preference-sample")
    examples = store.load_examples(version)
    longest = max(
        max(
            _reference_length(tokenizer, [*e["prompt"], {"role": "assistant", "content": e["chosen"]}]),
            _reference_length(tokenizer, [*e["prompt"], {"role": "assistant", "content": e["rejected"]}]),
        )
        for e in examples
    )
    assert store.token_stats(version, tokenizer).max == longest


def test_over_long_rows_are_named_with_the_real_tokenizer(store: DatasetStore, tokenizer: Any) -> None:
    rows = [f'{{"prompt": "Question {i}?", "completion": "Answer {i}."}}' for i in range(10)]
    rows.append('{"prompt": "' + "word " * 300 + '", "completion": "ok"}')
    report = store.inspect_upload("\n".join(rows).encode(), "d.jsonl", tokenizer=tokenizer, max_length=128)
    assert [e.row for e in report.errors] == [11]
    assert "limit is max_length=128" in report.errors[0].message
    assert report.unique_rows == 10
