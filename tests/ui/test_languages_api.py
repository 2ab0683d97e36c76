"""The model pickers' language filter (issue 21, point 4) through `gradio_client`, against the launched studio:
the Playground's model picker, Compare's contenders, blind pool and batch sides, and the Fine-Tune wizard's base
model, each narrowed to the models that declare the chosen language ("any" keeps every model)."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from gradio_client import Client

pytestmark = pytest.mark.slow

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"  # its GGUF declares en
FRENCH = "lang-probe/french"  # a model folder whose card declares fr, added for these tests only
SILENT = "lang-probe/silent"  # one whose files name no language


def choices(update: dict[str, Any]) -> list[str]:
    return [c[0] if isinstance(c, list | tuple) else c for c in update["choices"]]


@pytest.fixture(scope="module")
def client(server) -> Iterator[Client]:  # type: ignore[no-untyped-def]
    """The session's server with a French model and a model that declares no language in its models folder
    (removed again afterwards: other tests list the same models)."""
    folders = []
    for name, card in ((FRENCH, "---\nlanguage: fr\n---\n"), (SILENT, "# no language here\n")):
        folder = server.home / "models" / name.replace("/", "--")
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
        (folder / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")  # listed, never loaded here
        (folder / "README.md").write_text(card, encoding="utf-8")
        folders.append(folder)
    try:
        yield Client(server.url, verbose=False)
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def test_playground_and_wizard_pickers_narrow_to_a_language(client: Client) -> None:
    for api in ("/playground_filter_models", "/finetune_filter_models"):
        french = client.predict("fr", BUNDLED, api_name=api)
        assert choices(french) == [FRENCH]
        assert french["value"] == FRENCH  # the English model is no longer offered: the French one is picked

        english = client.predict("en", BUNDLED, api_name=api)
        assert BUNDLED in choices(english) and FRENCH not in choices(english) and SILENT not in choices(english)
        assert english["value"] == BUNDLED  # still offered: kept

        every = client.predict("any", FRENCH, api_name=api)
        assert {BUNDLED, FRENCH, SILENT} <= set(choices(every)) and every["value"] == FRENCH


def test_compare_pickers_narrow_to_a_language(client: Client) -> None:
    contenders = client.predict("en", [BUNDLED, FRENCH], api_name="/compare_filter_contenders")
    assert FRENCH not in choices(contenders) and BUNDLED in choices(contenders)
    assert contenders["value"][0] == BUNDLED and FRENCH not in contenders["value"]

    pool = client.predict("fr", [BUNDLED, SILENT], api_name="/compare_filter_pool")
    assert choices(pool) == [FRENCH] and pool["value"] == [FRENCH]

    side_a, side_b = client.predict("fr", BUNDLED, SILENT, api_name="/compare_filter_sides")
    assert choices(side_a) == choices(side_b) == [FRENCH]
    assert side_a["value"] == side_b["value"] == FRENCH


def test_a_language_no_model_declares_offers_nothing_and_a_bad_one_is_refused(client: Client) -> None:
    nothing = client.predict("sw", BUNDLED, api_name="/finetune_filter_models")
    assert choices(nothing) == [] and nothing["value"] == BUNDLED  # the picker keeps its value
    with pytest.raises(Exception, match="language must be 'any' or a language code"):
        client.predict("en; fr!", BUNDLED, api_name="/playground_filter_models")
