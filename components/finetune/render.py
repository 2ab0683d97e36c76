"""HTML and Markdown the Fine-Tune panels show: dataset cards, method cards, the validation report, the job
header with its progress bar. Pure functions of ``studio`` data (no gradio, no I/O), every text escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

import pandas as pd

from studio.datasets.schemas import DatasetCard
from studio.datasets.stats import TokenStats
from studio.datasets.validate import ValidationReport
from studio.training.config import MethodSpec
from studio.training.service import DashboardSummary, JobView

STATE_COLOURS: dict[str, str] = {
    "queued": "#6b7280",
    "running": "#2563eb",
    "succeeded": "#16a34a",
    "failed": "#dc2626",
    "cancelled": "#a16207",
    "interrupted": "#c2410c",
}

CSS = """
.ft-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 12px; }
.ft-card { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 12px 14px;
  background: var(--block-background-fill); }
.ft-card h4 { margin: 0 0 6px 0; font-size: 1.02em; }
.ft-card .ft-row { display: flex; justify-content: space-between; gap: 10px; font-size: 0.92em; margin: 2px 0; }
.ft-card .ft-row span:last-child { text-align: right; }
.ft-card .ft-muted, .ft-muted { color: var(--body-text-color-subdued); font-size: 0.88em; }
.ft-badge { display: inline-block; border-radius: 999px; padding: 1px 9px; font-size: 0.78em; font-weight: 600;
  background: #dcfce7; color: #166534; margin-left: 6px; }
.ft-badge.pref { background: #ede9fe; color: #5b21b6; }
.ft-badge.warn { background: #fef3c7; color: #92400e; }
.ft-badge.off { background: #e5e7eb; color: #374151; }
.ft-card.selected { border: 2px solid #2563eb; }
.ft-card.unavailable { opacity: 0.65; }
.ft-card ul { margin: 6px 0 0 18px; padding: 0; font-size: 0.9em; }
.ft-io { display: flex; gap: 12px; margin: 10px 0; flex-wrap: wrap; }
.ft-io div { flex: 1; min-width: 180px; border: 1px solid var(--border-color-primary); border-radius: 8px;
  padding: 8px 12px; }
.ft-bar { background: var(--border-color-primary); border-radius: 6px; height: 14px; overflow: hidden; }
.ft-bar > div { height: 14px; background: #2563eb; }
.ft-state { display: inline-block; border-radius: 6px; padding: 1px 8px; color: white; font-weight: 600; }
.ft-stats { display: flex; gap: 12px; flex-wrap: wrap; }
.ft-stat { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 14px; min-width: 110px; }
.ft-stat b { font-size: 1.4em; display: block; }
"""

SFT_HERO = """
<div class="ft-card">
<h4>What is Supervised Fine-Tuning?</h4>
<p>Supervised fine-tuning teaches your AI model by showing it labeled examples where each example contains:</p>
<div class="ft-io">
  <div><b>INPUT</b><br><span class="ft-muted">User questions or requests</span></div>
  <div><b>OUTPUT</b><br><span class="ft-muted">Your desired AI responses</span></div>
</div>
<p>The model learns patterns from these labeled pairs and answers new inputs the same way. Example:<br>
<b>INPUT:</b> "What's the refund policy?" → <b>OUTPUT:</b> "We offer a 30-day money-back guarantee..."</p>
</div>
"""

SFT_WIZARD_NOTE = """**What is Supervised Fine-Tuning?** Supervised fine-tuning teaches your AI model by showing it
labeled examples:

* **INPUT**: user questions or requests
* **OUTPUT**: your desired AI responses

Example — INPUT: "What's the refund policy?" → OUTPUT: "We offer a 30-day money-back guarantee..."

Only the OUTPUT tokens count in the loss: the model learns to answer, not to repeat the question."""

UPLOAD_HELP = """#### Upload Labeled Examples
Upload a file with input → output pairs for supervised learning.

* Best for prepared labeled datasets
* Each example: question + desired answer
* Supports **JSONL, CSV, JSON** (OpenAI chat `messages` with tool calls, `prompt`/`completion`, Alpaca
  `instruction`/`input`/`output`/`history`, ShareGPT `conversations` with function calls and `tools`, preference
  `chosen`/`rejected`, KTO `label`; LLaMA-Factory's `dataset_info.json` entry as the mapping)
* Minimum **10** labeled examples required; up to 100 MB

The report below shows the detected format, the columns and every problem **before** anything is imported."""

FORMAT_HELP = """#### Supervised Learning Format
Each example shows: INPUT (user question) → OUTPUT (desired response)

```json
{"messages": [
  {"role": "system", "content": "Context/instructions"},
  {"role": "user", "content": "INPUT: What is AI?"},
  {"role": "assistant", "content": "OUTPUT: AI is..."}
]}
```

* **User** messages = inputs (what you want to handle)
* **Assistant** messages = outputs (how you want to respond)
* **System** messages = context/instructions for the model"""


def as_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> pd.DataFrame:
    """Rows with their column names: what a Dataframe output gets (clients receive headers + data)."""
    return pd.DataFrame([list(r) for r in rows], columns=list(headers))


def _badge(text: str, cls: str = "") -> str:
    return f'<span class="ft-badge {cls}">{escape(text)}</span>'


def dashboard_stats_html(summary: DashboardSummary) -> str:
    """The dashboard's figures: datasets (total, ready for supervised learning) and jobs by state."""
    cells = [
        f'<div class="ft-stat"><span class="ft-muted">Training Datasets</span><b>{summary.datasets}</b>'
        f'<span class="ft-muted">labeled examples · {summary.supervised} ready for supervised learning'
        + (f" · {summary.preference} preference" if summary.preference else "")
        + "</span></div>"
    ]
    cells.append(f'<div class="ft-stat"><span class="ft-muted">Training jobs</span><b>{summary.jobs}</b></div>')
    for state, n in summary.jobs_by_state.items():
        colour = STATE_COLOURS.get(state, "#6b7280")
        cells.append(
            f'<div class="ft-stat" data-state="{escape(state)}"><span class="ft-muted" style="color:{colour}">'
            f"{escape(state)}</span><b>{n}</b></div>"
        )
    return f'<div class="ft-stats" id="finetune-counts">{"".join(cells)}</div>'


def dataset_cards_html(cards: list[DatasetCard]) -> str:
    """One card per dataset: name, Supervised/Preference badge, "150 pairs", size, format, versions, tokens."""
    if not cards:
        return '<p class="ft-muted">No datasets yet: upload labeled examples above.</p>'
    out = []
    for card in cards:
        badge = _badge(card.badge, "" if card.kind == "supervised" else "pref")
        tokens = ""
        if card.token_stats is not None:
            t = card.token_stats
            tokens = f'<div class="ft-row"><span>Tokens</span><span>mean {t.mean:.0f} · max {t.max}</span></div>'
        if card.languages is not None and card.languages.rows:
            mix = escape(card.languages.summary(3))
            tokens += f'<div class="ft-row"><span>Languages</span><span>{mix}</span></div>'
        out.append(
            f'<div class="ft-card" data-dataset="{escape(card.name)}"><h4>{escape(card.name)} {badge}</h4>'
            f'<div class="ft-row"><span>Labeled Examples</span><span>{escape(card.examples_label)}</span></div>'
            f'<div class="ft-row"><span>Size</span><span>{escape(card.size_label)}</span></div>'
            f'<div class="ft-row"><span>Format</span><span>{escape(card.format_label)}</span></div>'
            f'<div class="ft-row"><span>Version</span><span>v{card.version} of {card.versions}</span></div>'
            f"{tokens}"
            + (
                f'<div class="ft-row"><span>Owner</span><span>{escape(card.owner)}'
                f"{' · private' if card.private else ''}</span></div>"
                if card.owner
                else ""
            )
            + (f'<div class="ft-muted">{escape(card.description)}</div>' if card.description else "")
            + "</div>"
        )
    return f'<div class="ft-cards">{"".join(out)}</div>'


def report_markdown(report: ValidationReport, *, imported: str = "") -> str:
    """The validation report shown before an import: format, columns, mapping, counts and the verdict."""
    verdict = (
        "**Ready to import**"
        if report.ok
        else (
            "**Some rows are invalid:** import with *drop invalid rows* to leave them out, or fix the file"
            if report.enough
            else f"**Not enough valid examples** (at least {report.min_examples} are needed)"
        )
    )
    lines = [
        f"**Detected format:** {report.mapping.describe()} · kind **{report.kind}**",
        f"**Columns in the file:** {', '.join(f'`{c}`' for c in report.columns) or '(none)'}",
        *(
            [f"**Columns not used (not imported):** {', '.join(f'`{c}`' for c in report.unused_columns)}"]
            if report.unused_columns
            else []
        ),
        f"**Rows:** {report.summary()}",
        f"**Would import:** {report.unique_rows} unique valid examples",
    ]
    if report.duplicates:
        groups = "; ".join(f"row {g.row} = rows {', '.join(map(str, g.copies))}" for g in report.duplicates[:10])
        lines.append(f"**Duplicates (kept once):** {groups}")
    if report.max_length:
        lines.append(f"**Length check:** examples over {report.max_length} tokens count as invalid")
    lines.append(imported or verdict)
    return "\n\n".join(lines)


def error_rows(report: ValidationReport) -> list[list[Any]]:
    """Row-level errors for the errors table: row, file line, field, message."""
    return [[e.row, e.line if e.line is not None else "", e.field, e.message] for e in report.errors]


def token_stats_markdown(stats: TokenStats) -> str:
    """Summary figures of a version's token lengths."""
    tokenizer = stats.tokenizer.rstrip("/").rsplit("/", 1)[-1]
    text = (
        f"**{stats.count} examples** with `{tokenizer}`'s chat template: min {stats.min}, mean "
        f"{stats.mean:.1f}, median {stats.p50:.0f}, p95 {stats.p95:.0f}, max {stats.max} tokens "
        f"({stats.total} in total)"
    )
    if stats.max_length is not None and stats.over_max_length is not None:
        text += f"; **{stats.over_max_length}** longer than max_length {stats.max_length}"
    return text


def method_label(spec: MethodSpec, unavailable: str | None) -> str:
    """The method radio's label: ``LoRA — Most Efficient (recommended)``."""
    if unavailable:
        return f"{spec.label} — unavailable here"
    suffix = " (recommended)" if spec.recommended else (" (heavy)" if spec.method == "full" else "")
    return f"{spec.label} — {spec.badge}{suffix}"


def method_cards_html(specs: list[MethodSpec], selected: str, unavailable: dict[str, str]) -> str:
    """The method cards: description, efficiency badge, bullets; the chosen one outlined."""
    out = []
    for spec in specs:
        why = unavailable.get(spec.method)
        cls = "ft-card" + (" selected" if spec.method == selected else "") + (" unavailable" if why else "")
        badge_cls = "warn" if spec.method == "full" else ""
        title = escape(spec.label) + (" (Recommended)" if spec.recommended else "")
        bullets = "".join(f"<li>{escape(b)}</li>" for b in spec.bullets)
        note = f'<p class="ft-muted"><b>Unavailable on this machine:</b> {escape(why)}</p>' if why else ""
        out.append(
            f'<div class="{cls}" data-method="{escape(spec.method)}"><h4>{title} {_badge(spec.badge, badge_cls)}'
            + (" (selected)" if spec.method == selected else "")
            + f'</h4><div>{escape(spec.summary)}</div><ul>{bullets}</ul><p class="ft-muted">'
            f"{escape(spec.description)}</p>{note}</div>"
        )
    return f'<div class="ft-cards">{"".join(out)}</div>'


def job_header_html(view: JobView | None) -> str:
    """Name, state, progress bar, step/epoch, ETA and the last status message of a job."""
    if view is None:
        return '<p class="ft-muted">No job selected: click a row of the jobs table, or submit one in New job.</p>'
    colour = STATE_COLOURS.get(view.state, "#6b7280")
    percent = view.progress * 100
    parts = [f"{percent:.0f}%"]
    if view.step or view.total_steps:
        parts.append(f"step {view.step}/{view.total_steps}" if view.total_steps else f"step {view.step}")
    if view.epoch is not None:
        parts.append(f"epoch {view.epoch:.2f}")
    if view.eta_label:
        parts.append(view.eta_label)
    method = str(view.config.get("method", ""))
    dataset = view.config.get("dataset", "")
    version = view.config.get("dataset_version")
    base = view.config.get("base_model", "")
    what = f"{method} on {base} · dataset {dataset}" + (f" v{version}" if version else "")
    return (
        f'<div class="ft-card" data-job="{escape(view.id)}" data-state="{escape(view.state)}">'
        f'<h4>{escape(view.name or view.id)} <span class="ft-state" style="background:{colour}">'
        f"{escape(view.state)}</span></h4>"
        f'<div class="ft-muted">{escape(view.id)} · {escape(what)}</div>'
        f'<div class="ft-bar" role="progressbar" aria-valuenow="{percent:.0f}" aria-valuemin="0" '
        f'aria-valuemax="100"><div style="width:{percent:.1f}%"></div></div>'
        f'<div class="ft-row"><span>{escape(" · ".join(parts))}</span></div>'
        + (f'<div class="ft-muted" data-cost="1">Cost: {escape(view.cost)}</div>' if view.cost else "")
        + f"<div>{escape(view.message)}</div></div>"
    )


def artifact_markdown(view: JobView | None) -> str:
    """Where the trained adapter/model is and how to use it, once the job succeeded."""
    if view is None or not view.can_load:
        return ""
    name = view.registered_as
    what = "adapter" if view.artifact_kind == "adapter" else "model"
    text = f"Trained {what} saved in `{view.artifact_path}`"
    if name:
        where = "adapters" if what == "adapter" else "models"
        text += f", registered as **{name}** (`STUDIO_HOME/{where}/{name}`)"
        if what == "adapter":
            text += f"; use it in an alias or type `{name}` in the Playground's adapter box"
    return text + "."
