"""Safety → Scan: paste text or upload a file, see the findings highlighted (entity type and score), the
anonymised text and a findings table. ``safety_scan`` (text → the scan's JSON) is the public endpoint; the
highlighting and the table are drawn from that JSON. Wiring only: ``studio.safety.scan``."""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from studio.context import AppContext
from studio.safety.scan import read_scan_file, scan_text

FINDING_COLUMNS = ["Type", "Check", "Start", "End", "Score", "Text"]
EXAMPLE = "Contact John Smith at john.smith@example.com or 555-123-4567; card 4111 1111 1111 1111."


def highlight_value(text: str, result: dict[str, Any]) -> dict[str, Any]:
    """The HighlightedText value for a scan: each finding labelled ``TYPE score``."""
    entities = [
        {"entity": f"{f['type']} {f['score']:.2f}", "start": f["start"], "end": f["end"]}
        for f in result.get("findings", [])
    ]
    return {"text": text, "entities": entities}


def engines_line(result: dict[str, Any]) -> str:
    """Which PII engine and toxicity scorer produced the scan."""
    parts = []
    if result.get("pii_engine"):
        parts.append(f"**PII:** {result['pii_engine']}")
    tox = result.get("toxicity")
    if tox:
        parts.append(f"**Toxicity:** {tox['scorer']} — highest paragraph score {tox['max_score']}")
    count = len(result.get("findings", []))
    return f"{count} finding{'s' if count != 1 else ''}. " + " · ".join(parts)


def create_scan_panel(ctx: AppContext, policy_path: gr.Dropdown) -> dict[str, Any]:
    store = ctx.engines.safety.policies

    gr.Markdown(
        "Paste text or upload a text file: personal data, offensive words and toxic paragraphs are found with the "
        "policy below and highlighted; the anonymised text masks them. `studio safety scan FILE --json` does "
        "the same from the command line."
    )
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(
                label="Text to scan", lines=6, placeholder=EXAMPLE, elem_id="safety-scan-text", max_lines=30
            )
        with gr.Column(scale=1):
            upload = gr.File(
                label="…or a text file (UTF-8, up to 10 MB)",
                file_types=["text", ".txt", ".md", ".csv", ".json"],
                elem_id="safety-scan-file",
            )
            scan_btn = gr.Button("Scan", variant="primary", elem_id="safety-scan-btn")
    summary = gr.Markdown(elem_id="safety-scan-summary")
    highlighted = gr.HighlightedText(
        label="Findings (type and score)", combine_adjacent=False, show_legend=False, elem_id="safety-scan-highlight"
    )
    anonymized = gr.Textbox(label="Anonymised text", lines=4, interactive=False, elem_id="safety-scan-anonymized")
    table = gr.Dataframe(
        headers=FINDING_COLUMNS, interactive=False, wrap=True, label="Findings", elem_id="safety-scan-table"
    )
    with gr.Accordion("Raw JSON (what the safety_scan endpoint returns)", open=False):
        raw = gr.JSON(elem_id="safety-scan-json")

    @handle_errors
    def scan(value: str, name: str | None) -> dict[str, Any]:
        _path, policy = store.load(name)
        return scan_text(value or "", store.resolved(policy)).to_dict()

    def render(value: str, result: dict[str, Any] | None) -> tuple[Any, ...]:
        result = result or {"findings": [], "anonymized": ""}
        rows = [[f["type"], f["check"], f["start"], f["end"], f["score"], f["text"]] for f in result["findings"]]
        return highlight_value(value or "", result), result["anonymized"], rows, engines_line(result)

    @handle_errors
    def read_upload(path: str | None) -> Any:
        return read_scan_file(path) if path else gr.skip()

    scanned = scan_btn.click(scan, [text, policy_path], [raw], api_name="safety_scan")
    scanned.success(render, [text, raw], [highlighted, anonymized, table, summary], api_visibility="private")
    uploaded = upload.upload(read_upload, [upload], [text], api_visibility="private")
    uploaded.success(scan, [text, policy_path], [raw], api_visibility="private").success(
        render, [text, raw], [highlighted, anonymized, table, summary], api_visibility="private"
    )
    return {"text": text, "scan_btn": scan_btn, "json": raw, "anonymized": anonymized}
