"""The Playground's form follows what the person picked and what the studio holds (issue 15, point 5): picking a
model clears the use case it no longer matches, and the load status line is written from the engines' state."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from studio.errors import NotFoundError
from studio.inference.base import LoadedModelInfo
from studio.playground.prompts import use_case
from studio.playground.session import default_system_prompt, use_case_after_model_pick
from studio.playground.status import load_status_line, loaded_model_line

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_picking_a_model_clears_the_use_case_and_the_system_prompt_it_suggested() -> None:
    suggested = use_case("Chatbot").system_prompt
    fields = use_case_after_model_pick("Chatbot", suggested)
    assert fields.use_case == ""
    assert fields.system_prompt == default_system_prompt() == ""


def test_picking_a_model_keeps_a_system_prompt_the_person_wrote() -> None:
    assert use_case_after_model_pick("Chatbot", "Answer in French.").system_prompt == "Answer in French."
    assert use_case_after_model_pick("", "Answer in French.").system_prompt == "Answer in French."
    gone = use_case_after_model_pick("No such use case", "Be brief.")
    assert (gone.use_case, gone.system_prompt) == ("", "Be brief.")


def info(**extra: str) -> LoadedModelInfo:
    return LoadedModelInfo(
        model_id=MODEL,
        backend="transformers",
        path=Path("/models/smol"),
        dtype="bfloat16",
        device="cpu",
        parameters=135_000_000,
        memory_bytes=270 * 2**20,
        load_seconds=1.0,
        extra={"quantization": "none", **extra},
    )


def test_the_loaded_line_names_the_active_adapter() -> None:
    assert loaded_model_line(info()) == (
        f"**{MODEL}** loaded (transformers engine) on cpu as bfloat16 (quantization: none), 270 MiB"
    )
    assert loaded_model_line(info(active_adapter="tuned")).endswith("; adapter **tuned** active")


class FakeEngines:
    """The two questions the status line asks an engine manager: is it loaded, and what does the name mean."""

    def __init__(self, loaded: dict[str, LoadedModelInfo], known: dict[str, str]) -> None:
        self.loaded, self.known = loaded, known

    def engine(self, name: str) -> Any:
        if name not in self.known:
            raise NotFoundError(f"alias '{name}' not found")
        if self.known[name] not in self.loaded:
            raise NotFoundError(f"model '{name}' is not loaded")
        return SimpleNamespace(info=self.loaded[self.known[name]])

    def resolve(self, name: str) -> Any:
        if name not in self.known:
            raise NotFoundError(f"alias '{name}' not found")
        return SimpleNamespace(entry=SimpleNamespace(id=self.known[name]))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (None, f"**{MODEL}** loaded"),
        ("smol:tuned", f"**{MODEL}** loaded"),
        ("other", "**other-model** is not loaded yet: press Load, or send a message (the first one loads it)."),
        ("half-typ", ""),
    ],
)
def test_the_status_line_says_what_is_loaded(model: str | None, expected: str) -> None:
    engines = FakeEngines(
        {MODEL: info(active_adapter="tuned")},
        {"default": MODEL, "smol:tuned": MODEL, MODEL: MODEL, "other": "other-model"},
    )
    line = load_status_line(engines, model)  # type: ignore[arg-type]
    assert line.startswith(expected) if expected else line == ""
    if expected.endswith("loaded"):
        assert "adapter **tuned** active" in line
