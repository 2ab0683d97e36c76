"""The top tab bar names each tab once, whichever tabs a person has opened, on a desktop and on a phone (issue 15,
point 3: once Safety had been opened the bar showed "Safety" twice; a component left between two tabs shifted
the next tab's position in the bar)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: tab label -> an element that shows once that tab's content is on screen
TABS = {
    "Aliases": "#aliases-table",
    "Models": "#models-table",
    "Playground": "#playground-input",
    "Compare A/B": "#compare-temperature",
    "Fine-Tune": "#finetune-dashboard-title",
    "Evaluate": "#evaluate-run",
    "Safety": "#safety-scan-text",
    "Resources": "#resources-title",
    "Account": "#account-signed-in",
}
SCREENSHOTS = Path(os.environ.get("STUDIO_SCREENSHOTS", "")) if os.environ.get("STUDIO_SCREENSHOTS") else None


def offered_tabs(page: Page) -> list[str]:
    """What the top bar offers: the tabs shown in the bar plus those behind its "More tabs" menu (narrow screens)."""
    bar = page.locator("#studio-tabs > .tab-wrapper")
    return bar.locator("[role=tablist] > button[role=tab], .overflow-dropdown > button").all_inner_texts()


def open_tab(page: Page, label: str) -> None:
    """Click a top-level tab, through the "More tabs" menu when the bar has no room for it."""
    bar = page.locator("#studio-tabs > .tab-wrapper")
    direct = bar.locator("[role=tablist] > button[role=tab]", has_text=label)
    if direct.count() and direct.first.is_visible():
        direct.first.click()
    else:
        bar.locator(".overflow-menu > button").click()
        bar.locator(".overflow-dropdown > button", has_text=label).first.click()
    expect(page.locator(TABS[label]).first).to_be_visible(timeout=30_000)


@pytest.mark.parametrize(("width", "height"), [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_each_tab_is_offered_once_after_opening_every_tab(  # type: ignore[no-untyped-def]
    server, browser, width: int, height: int, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(server.url + "/")
    page.wait_for_selector("#playground-input textarea", timeout=90_000)
    tabs = page.locator("#studio-tabs > .tab-wrapper").locator(
        "[role=tablist] > button[role=tab], .overflow-dropdown > button"
    )
    for label in [*TABS, "Playground"]:
        open_tab(page, label)
        expect(tabs).to_have_count(len(TABS))  # waits: a duplicate shows a moment after the tab opens
        assert Counter(offered_tabs(page)) == Counter(list(TABS)), f"after opening {label}: {offered_tabs(page)}"
    selected = page.locator("#studio-tabs > .tab-wrapper [role=tablist] > button[aria-selected=true]")
    expect(selected).to_have_text(["Playground"])
    open_tab(page, "Safety")
    expect(tabs).to_have_count(len(TABS))
    for folder in filter(None, [tmp_path, SCREENSHOTS]):
        page.screenshot(path=str(folder / f"tab-bar-{width}.png"))
