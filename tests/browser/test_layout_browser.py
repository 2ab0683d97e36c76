"""Layout a new user can read (issue 15, point 9), measured in chromium at 1440x900: the token view's per-token
table starts folded; the attention map's colours show structure and its labels do not overlap; tables give
every column room for its header and cells (no letters stacked vertically, no 142 px header, nothing cut).
STUDIO_UPDATE_SCREENSHOTS=1 writes the screenshots to docs/screenshots/."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"

#: For one table (a CSS selector): the header cells and body cells too narrow for their longest word (its letters
#: stack or it runs out of the cell), the body cells whose text is cut (scrolled out of sight or ended with an
#: ellipsis), and the header's height. Gradio draws the header as a <table> and the rows as gridcell <div>s.
TABLE_PROBLEMS = """(sel) => {
  const root = document.querySelector(sel);
  const header = root && root.querySelector('table thead');
  if (!header) return {missing: true};
  const canvas = document.createElement('canvas').getContext('2d');
  const longestWord = (el) => {  // a line may break at a space or after a hyphen
    const s = getComputedStyle(el);
    canvas.font = `${s.fontWeight} ${s.fontSize} ${s.fontFamily}`;
    return Math.ceil(Math.max(0, ...el.innerText.split(/\\s+|(?<=-)/).map(w => canvas.measureText(w).width)));
  };
  const room = (el) => {
    const s = getComputedStyle(el);
    return el.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight);
  };
  const text = (cell) => cell.querySelector('span.text, .header, span') || cell;
  const squeezed = [...header.querySelectorAll('th'), ...root.querySelectorAll('[role=gridcell]')]
    .filter(cell => cell.innerText.trim())
    .map(cell => ({text: cell.innerText.trim().slice(0, 40), room: room(text(cell)), needs: longestWord(text(cell))}))
    .filter(c => c.room + 1 < c.needs);
  const overflows = (e) => e && e.scrollWidth > e.clientWidth + 1;
  const cut = [...root.querySelectorAll('[role=gridcell]')].filter(cell => cell.innerText.trim())
    .filter(cell => [cell, cell.querySelector('.cell-wrap'), text(cell)].some(overflows))
    .map(cell => cell.innerText.trim().slice(0, 40));
  return {squeezed, cut, header: Math.round(header.getBoundingClientRect().height),
          rows: root.querySelectorAll('[role=row]').length - 1};
}"""


def screenshots(tmp_path: Path) -> Path:
    """docs/screenshots/ when asked for (STUDIO_UPDATE_SCREENSHOTS=1), else the test's own folder."""
    return ROOT / "docs" / "screenshots" if os.environ.get("STUDIO_UPDATE_SCREENSHOTS") else tmp_path


def open_page(server, browser) -> Page:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server.url + "/")
    expect(page.locator("#playground-input textarea")).to_be_visible(timeout=90_000)
    return page


def readable_table(page: Page, selector: str, *, max_header: int = 60) -> dict[str, Any]:
    expect(page.locator(f"{selector} [role=gridcell]").filter(has_text=re.compile(r"\S")).first).to_be_visible(
        timeout=30_000
    )
    found = page.evaluate(TABLE_PROBLEMS, selector)
    assert not found.get("missing"), f"{selector}: no table"
    assert found["squeezed"] == [], f"{selector}: cells narrower than their longest word: {found['squeezed']}"
    assert found["header"] <= max_header, f"{selector}: the header row is {found['header']} px tall"
    assert found["cut"] == [], f"{selector}: cells whose text is cut: {found['cut']}"
    return found  # type: ignore[no-any-return]


def attention_view(page: Page) -> dict[str, Any]:
    """What the attention plot draws: the colour position (0..1 along the scale) of each cell a query can see
    (keys up to its own position), and each tick label's box and font size."""
    return page.evaluate(  # type: ignore[no-any-return]
        """() => {
      const gd = document.querySelector('#playground-attention-plot .js-plotly-plot');
      const trace = gd.data[0];
      const rows = (v) => {  // the figure's numbers may arrive as plotly's typed-array spec (base64 + shape)
        if (!v || !v.bdata) return v;
        const bin = atob(v.bdata), bytes = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
        const kinds = {f4: Float32Array, f8: Float64Array, i1: Int8Array, u1: Uint8Array, i2: Int16Array,
                       u2: Uint16Array, i4: Int32Array, u4: Uint32Array};
        const flat = new kinds[v.dtype](bytes.buffer);
        const [r, c] = String(v.shape).split(',').map(Number);
        return Array.from({length: r}, (_, i) => flat.subarray(i * c, (i + 1) * c));
      };
      const z = rows(trace.z), lo = trace.zmin, hi = trace.zmax, n = z.length;
      const positions = [];
      for (let q = 0; q < n; q++) for (let k = 1; k <= q; k++) positions.push((z[q][k] - lo) / (hi - lo));
      const ticks = (axis) => [...gd.querySelectorAll(`.${axis}tick text`)].filter(t => t.textContent).map(t => {
        const r = t.getBoundingClientRect();
        return {x: r.x, y: r.y, w: r.width, h: r.height, size: parseFloat(getComputedStyle(t).fontSize)};
      });
      return {positions, n, title: gd.layout.title.text, x: ticks('x'), y: ticks('y')};
    }"""
    )


def overlapping(boxes: list[dict[str, float]]) -> list[tuple[int, int]]:
    def inter(a: dict[str, float], b: dict[str, float]) -> float:
        w = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
        h = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
        return max(0.0, w) * max(0.0, h)

    return [
        (i, j)
        for i in range(len(boxes))
        for j in range(i + 1, len(boxes))
        if inter(boxes[i], boxes[j]) > 0.15 * min(boxes[i]["w"] * boxes[i]["h"], boxes[j]["w"] * boxes[j]["h"])
    ]


def test_token_view_attention_map_and_conversations_are_readable(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shots = screenshots(tmp_path)
    page = open_page(server, browser)
    for name, value in (("temperature", "0"), ("max_tokens", "24")):
        page.locator(f"#playground-{name} input[type=number]").fill(value)
        page.locator(f"#playground-{name} input[type=number]").press("Enter")
    page.fill("#playground-input textarea", "What is the capital of France?")
    page.click("#playground-send")
    expect(page.locator("#playground-stats")).to_contain_text("finish:", timeout=120_000)

    # the token view: coloured tokens first; the per-token table is folded until asked for (it made the page
    # 16,600 px tall for a 256-token reply)
    page.get_by_role("tab", name="Token view & attention").click()
    page.click("#playground-token-view-btn")
    tokens = page.locator("#playground-token-view .wt-tok")
    expect(tokens.first).to_be_visible(timeout=60_000)
    details = page.locator("#playground-token-view .token-details details")
    expect(details).not_to_have_attribute("open", "")
    expect(page.locator("#playground-token-view .token-details table")).to_be_hidden()
    expect(page.locator("#playground-token-view .token-details summary")).to_be_visible()
    tokens.nth(2).click()  # a token still leads to its row: the table unfolds there
    expect(page.locator("#playground-token-view tr#wt-tok-2")).to_be_in_viewport()
    page.locator("#playground-token-view .token-details summary").click()  # fold it again
    expect(page.locator("#playground-token-view .token-details table")).to_be_hidden()

    # the attention map shown first: colours spread over the scale (layer 0 on a 0..1 scale was ~99% the darkest
    # quarter), tick labels at a readable size that do not run into each other
    page.click("#playground-attention-btn")
    plot = page.locator("#playground-attention-plot .js-plotly-plot")
    expect(plot).to_be_visible(timeout=120_000)
    expect(plot.locator(".xtick text").first).to_be_visible()
    view = attention_view(page)
    positions = sorted(view["positions"])
    lit = sum(p >= 0.25 for p in positions) / len(positions)
    spread = positions[3 * len(positions) // 4] - positions[len(positions) // 4]
    assert lit >= 0.25, f"{view['title']}: only {lit:.0%} of the visible cells are above the darkest quarter"
    assert spread >= 0.1, f"{view['title']}: the middle half of the cells spans {spread:.2f} of the colour scale"
    for axis in ("x", "y"):
        sizes = {t["size"] for t in view[axis]}
        assert min(sizes) >= 10, f"{axis} tick labels at {sorted(sizes)} px"
        assert overlapping(view[axis]) == [], f"{axis} tick labels overlap: {overlapping(view[axis])[:5]}"
    assert len(view["y"]) == view["n"], "every query token is labelled"
    page.locator("#playground-attention-box").screenshot(path=str(shots / "playground-attention.png"))
    page.locator("#playground-token-view").screenshot(path=str(shots / "playground-token-view.png"))

    # the saved conversations: every column readable, nothing cut off
    page.get_by_role("tab", name="Conversations", exact=True).click()
    readable_table(page, "#playground-conversations")
    page.locator("#playground-conversations").screenshot(path=str(shots / "playground-conversations.png"))


def test_aliases_and_experiments_tables_give_each_column_room(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from gradio_client import Client

    shots = screenshots(tmp_path)
    client = Client(server.url, verbose=False)
    config = {
        "models": [BUNDLED],
        "dataset_file": "configs/eval/data/quick-qa.jsonl",
        "dataset": "eval-quick-qa",
        "metrics": ["exact_match"],
        "generation": {"temperature": 0.0, "max_tokens": 8},
        "limit": 1,
    }
    job_id, _status = client.predict(yaml.safe_dump(config), api_name="/evaluate_run_yaml")
    with contextlib.suppress(Exception):  # it may have finished already: the row is what matters here
        client.predict(job_id, api_name="/evaluate_cancel")

    page = open_page(server, browser)
    page.get_by_role("tab", name="Aliases", exact=True).click()
    readable_table(page, "#aliases-table")  # its header was 142-205 px tall, letters stacked
    page.locator("#aliases-table").screenshot(path=str(shots / "aliases-table.png"))

    page.get_by_role("tab", name="Evaluate", exact=True).click()
    page.get_by_role("tab", name="Experiments", exact=True).click()
    expect(page.locator("#evaluate-exp-table")).to_contain_text(job_id, timeout=30_000)
    readable_table(page, "#evaluate-exp-table")  # 'tags', 'archived' were one letter per line
    page.locator("#evaluate-exp-table").screenshot(path=str(shots / "evaluate-experiments-table.png"))


def test_audit_tables_give_each_column_room(server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shots = screenshots(tmp_path)
    page = open_page(server, browser)
    page.get_by_role("tab", name="Safety", exact=True).click()
    page.get_by_role("tab", name="Audits", exact=True).click()
    expect(page.locator("#safety-audit-start")).to_be_visible(timeout=30_000)
    for template in ("job-story", "neighbour", "joke", "trust", "complete"):  # the smallest audit: 2 generations
        page.locator("#safety-audit-templates label", has_text=template).click()
    page.fill("#safety-audit-groups textarea", "gender: man, woman")
    page.fill("#safety-audit-samples input", "1")
    page.fill("#safety-audit-max-tokens input", "48")  # replies long enough to claim the room
    page.fill("#safety-audit-name textarea", "layout audit")
    page.click("#safety-audit-start")
    expect(page.locator("#safety-audit-status")).to_contain_text("succeeded", timeout=300_000)
    page.click("#safety-review-refresh")  # the generations to review, the replies among them
    for table in ("#safety-audit-disparity", "#safety-audit-groups-table", "#safety-review-table"):
        readable_table(page, table)
        page.locator(table).screenshot(path=str(shots / f"{table[1:]}.png"))
