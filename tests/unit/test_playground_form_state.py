"""The Playground's form follows what the person picked and what the studio holds (issue 15, point 5): picking a
model clears the use case it no longer matches, and the load status line is written from the engines' state."""

from __future__ import annotations

from studio.playground.prompts import use_case
from studio.playground.session import default_system_prompt, use_case_after_model_pick

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
