"""A wrong or missing value is explained next to its field, in the user's words (issue 15, point 8): the field is
highlighted, the sentence comes from the schema ("Temperature must be between 0 and 2 (you entered 5)", not
pydantic's "Input should be less than or equal to 2"), and the outputs of the refused action keep their content
instead of showing large red "Error" badges."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def open_studio(server, browser) -> Page:  # type: ignore[no-untyped-def]
    page: Page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server.url + "/")
    expect(page.locator("#playground-input textarea")).to_be_visible(timeout=90_000)
    return page


def field_message(page: Page, elem_id: str):  # type: ignore[no-untyped-def]
    """The validation message Gradio shows with a field (inline for text boxes, a tag for other widgets)."""
    return page.locator(f"#{elem_id}").locator("div.validation-error, .validation-error:not(textarea):not(input)")


def test_an_out_of_range_alias_value_is_explained_at_its_field(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = open_studio(server, browser)
    page.get_by_role("tab", name="Aliases").click()
    page.fill("#aliases-name textarea", "web:too-hot")
    page.fill("#aliases-temperature textarea", "5")

    page.click("#aliases-validate")
    message = field_message(page, "aliases-temperature")
    expect(message).to_have_text("Temperature must be between 0 and 2 (you entered 5)")
    expect(page.locator("#aliases-temperature textarea")).to_have_class(re.compile(r"\bvalidation-error\b"))
    report = page.locator("#aliases-report")
    expect(report).not_to_contain_text("valid —")
    expect(report).not_to_contain_text("Input should be")

    page.fill("#aliases-temperature textarea", "0.5")  # typing clears the mark
    expect(message).to_have_count(0)
    page.fill("#aliases-temperature textarea", "5")
    page.click("#aliases-save")
    expect(message).to_have_text("Temperature must be between 0 and 2 (you entered 5)")
    expect(page.locator("#aliases-table").get_by_text("Error", exact=True)).to_have_count(0)
    assert not (server.home / "aliases" / "web--too-hot.yaml").exists()
    page.screenshot(path=str(tmp_path / "alias-field-error.png"))


def test_an_empty_export_says_what_is_missing(server, browser) -> None:  # type: ignore[no-untyped-def]
    page = open_studio(server, browser)
    page.get_by_role("tab", name="Export / Import").click()
    page.fill("#playground-export-prompt textarea", "")
    page.click("#playground-export-btn")
    expect(field_message(page, "playground-export-prompt")).to_have_text("type the prompt to export first")
    for output in ("#playground-export-file", "#playground-export-json"):
        expect(page.locator(output).get_by_text("Error", exact=True)).to_have_count(0)

    page.get_by_role("tab", name="Aliases").click()
    page.click("#aliases-export")
    expect(field_message(page, "aliases-selected")).to_have_text("click a row in the table first")
    expect(page.locator("#aliases-export-file").get_by_text("Error", exact=True)).to_have_count(0)
