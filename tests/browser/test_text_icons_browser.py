"""Every label, button and status line is drawn with the fonts a browser has without an emoji font (issue 15,
point 11): emoji such as a check mark, a stop square or the safety summary's shield showed as empty boxes on
Linux desktops and in Docker images. This machine has no emoji font (DejaVu and Liberation only), so a character
no font can draw renders exactly like a private-use character: the test compares the pixels."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Characters that need an emoji font (or have an emoji form): pictographs, dingbats, the symbols blocks,
#: media-control signs, and the emoji presentation selector.
EMOJI = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2300-\u23ff\u2b00-\u2bff\ufe0f\u2139\u2194-\u2199\u21a9\u21aa\u3030\u303d]"
)

#: {character: font} of every character outside ASCII in the visible text (and the values and placeholders of
#: visible inputs), with the font its element asks for.
VISIBLE_CHARACTERS = """() => {
  const found = {};
  const add = (text, el) => {
    const font = getComputedStyle(el);
    for (const ch of text || '') {
      if (ch.codePointAt(0) >= 128) found[ch] = `${font.fontWeight} 32px ${font.fontFamily}`;
    }
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (el && el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) add(node.nodeValue, el);
  }
  for (const el of document.querySelectorAll('input, textarea')) {
    if (el.checkVisibility()) { add(el.value, el); add(el.placeholder, el); }
  }
  return found;
}"""

#: The characters among ``chars`` ({character: font}) that render exactly like a character no font has.
UNDRAWABLE = """(chars) => {
  const canvas = document.createElement('canvas');
  canvas.width = 64; canvas.height = 64;
  const g = canvas.getContext('2d', {willReadFrequently: true});
  const draw = (ch, font) => {
    g.clearRect(0, 0, 64, 64); g.font = font; g.textBaseline = 'top'; g.fillStyle = '#000'; g.fillText(ch, 4, 4);
    return g.getImageData(0, 0, 64, 64).data.join(',');
  };
  return Object.entries(chars).filter(([ch, font]) => draw(ch, font) === draw('\\u{10FFFD}', font)).map(([ch]) => ch);
}"""


def check_page(page: Page, where: str, seen: dict[str, str]) -> None:
    chars = page.evaluate(VISIBLE_CHARACTERS)
    boxes = page.evaluate(UNDRAWABLE, chars)
    emoji = sorted({ch for ch in chars if EMOJI.match(ch)})
    for ch in chars:
        seen.setdefault(ch, where)
    assert boxes == [], f"{where}: drawn as empty boxes: {[f'{c} U+{ord(c):04X}' for c in boxes]}"
    assert emoji == [], f"{where}: emoji: {[f'{c} U+{ord(c):04X}' for c in emoji]}"


def visit_every_tab(page: Page, seen: dict[str, str]) -> None:
    top = page.locator("#studio-tabs > .tab-wrapper [role=tablist] > button[role=tab]")
    for label in top.all_inner_texts():
        tab = top.filter(has_text=label).first
        tab.click()
        expect(tab).to_have_attribute("aria-selected", "true")
        check_page(page, label, seen)
        subs = page.locator(".tabitem:visible .tab-wrapper [role=tablist] > button[role=tab]:visible")
        for sub in subs.all_inner_texts():
            sub_tab = subs.filter(has_text=sub).first
            sub_tab.click()
            expect(sub_tab).to_have_attribute("aria-selected", "true")
            check_page(page, f"{label} / {sub}", seen)


def test_no_label_or_status_needs_an_emoji_font(server, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server.url + "/")
    expect(page.locator("#playground-input textarea")).to_be_visible(timeout=90_000)
    # the check itself: this browser has no emoji font, so an emoji is drawn as the empty box
    assert page.evaluate(UNDRAWABLE, {"\u2705": "32px sans-serif", "A": "32px sans-serif"}) == ["\u2705"]
    seen: dict[str, str] = {}
    visit_every_tab(page, seen)

    # status lines written after an action: loading, the memory estimate, a chat with the safety filter
    page.locator("#studio-tabs > .tab-wrapper [role=tablist] > button[role=tab]", has_text="Playground").click()
    page.get_by_role("tab", name="Chat", exact=True).click()
    page.click("#playground-estimate")
    expect(page.locator("#playground-load-status")).to_contain_text("Estimate:", timeout=60_000)
    check_page(page, "Playground estimate", seen)
    page.click("#playground-load")
    expect(page.locator("#playground-load-status")).to_contain_text("loaded", timeout=120_000)
    check_page(page, "Playground load", seen)
    for name, value in (("temperature", "0"), ("max_tokens", "12")):
        page.locator(f"#playground-{name} input[type=number]").fill(value)
        page.locator(f"#playground-{name} input[type=number]").press("Enter")
    page.locator("#playground-safety input[type=checkbox]").check()
    page.fill("#playground-input textarea", "What is the capital of France?")
    page.click("#playground-send")
    stats = page.locator("#playground-stats")
    expect(stats).to_contain_text("finish:", timeout=120_000)
    expect(stats).to_contain_text("afety", timeout=30_000)  # the safety summary, shield gone
    check_page(page, "Playground safety summary", seen)

    # the alias form's check
    page.locator("#studio-tabs > .tab-wrapper [role=tablist] > button[role=tab]", has_text="Aliases").click()
    page.fill("#aliases-name textarea", "icons:check")
    page.fill("#aliases-temperature textarea", "0.5")
    page.click("#aliases-validate")
    expect(page.locator("#aliases-report")).to_contain_text("ready to save", timeout=30_000)
    check_page(page, "Aliases validation ok", seen)
    assert seen, "no text outside ASCII at all: the page did not render"
