"""Evaluate "Sweeps": grid and random searches over a job config, each run as N queued jobs. Lists the sweeps,
ranks one sweep's runs by a metric (best first, the varied fields as columns, with their state), overlays their
curves, queues a new sweep from YAML (or checks it: dry run) and cancels one. A ``gr.Timer`` redraws the sweep
shown while its jobs are queued or running. Wiring only: ``studio.jobs.sweeps``."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from components.common import handle_errors
from components.tables import column_widths
from studio.context import AppContext
from studio.jobs.sweeps import (
    EXAMPLE_SWEEP,
    SweepView,
    base_kind,
    cancel_sweep,
    get_path,
    list_sweeps,
    plan_sweep,
    spec_from_yaml,
    submit_sweep,
    sweep_status,
)

REFRESH_S = 3.0
SWEEP_COLUMNS = ("id", "name", "method", "state", "jobs", "best", "created")
SWEEP_WIDTHS = {"id": 290, "name": 180, "method": 90, "state": 100, "jobs": 220, "best": 220, "created": 150}
MODES = [("the sweep's", ""), ("lowest first (min)", "min"), ("highest first (max)", "max")]
ACTIVE_STATES = ("queued", "running")


def sweep_rows(views: list[SweepView]) -> list[list[Any]]:
    """Sweeps as rows of ``SWEEP_COLUMNS``."""
    rows = []
    for v in views:
        best = v.best
        shown = f"{v.metric} {best.value:.4g} ({best.job.name})" if best and best.value is not None else ""
        jobs = ", ".join(f"{n} {s}" for s, n in sorted(v.counts.items()))
        created = v.sweep.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
        rows.append([v.sweep.id, v.sweep.name, v.sweep.method, v.state, jobs, shown, created])
    return rows


def create_sweeps_panel(ctx: AppContext) -> dict[str, Any]:
    gr.Markdown("## Sweeps", elem_id="evaluate-sweeps-title")
    with gr.Row():
        gr.Markdown(
            "A sweep runs one job per combination (grid) or draw (random) of the fields it varies. "
            "Click a sweep to rank its runs.",
            elem_id="evaluate-sweeps-help",
        )
        list_btn = gr.Button("List", scale=0, min_width=90, elem_id="evaluate-sweeps-list")
    table = gr.Dataframe(
        value=sweep_rows(list_sweeps(ctx.db)),
        headers=list(SWEEP_COLUMNS),
        column_widths=column_widths(SWEEP_COLUMNS, SWEEP_WIDTHS, default=120),
        interactive=False,
        wrap=True,
        max_height=260,
        label="Sweeps, newest first",
        elem_id="evaluate-sweeps-table",
    )
    with gr.Row():
        sweep_id = gr.Textbox(label="Sweep (id or name)", scale=3, elem_id="evaluate-sweep-id")
        metric = gr.Textbox(
            label="Rank by metric", placeholder="the sweep's (e.g. eval_loss)", scale=2, elem_id="evaluate-sweep-metric"
        )
        mode = gr.Dropdown(MODES, value="", label="Order", scale=1, elem_id="evaluate-sweep-mode")
        show_btn = gr.Button("Show", variant="primary", scale=0, min_width=90, elem_id="evaluate-sweep-show")
        cancel_btn = gr.Button("Cancel sweep", variant="stop", scale=0, min_width=130, elem_id="evaluate-sweep-cancel")
    summary = gr.Markdown(elem_id="evaluate-sweep-summary")
    ranking = gr.Dataframe(
        headers=["rank"],
        interactive=False,
        wrap=True,
        label="Runs ranked by the metric (succeeded runs best first, then the others)",
        elem_id="evaluate-sweep-ranking",
    )
    curves = gr.Plot(label="Curves of the runs", elem_id="evaluate-sweep-curves")
    with gr.Accordion("Sweep as JSON", open=False):
        details = gr.JSON(elem_id="evaluate-sweep-json")
    with gr.Accordion("New sweep", open=False):
        spec_box = gr.Code(
            EXAMPLE_SWEEP.read_text(encoding="utf-8"),
            language="yaml",
            label="Sweep (YAML)",
            elem_id="evaluate-sweep-yaml",
        )
        with gr.Row():
            dry_run = gr.Checkbox(
                False, label="Dry run: check the trials and list them, queue nothing", elem_id="evaluate-sweep-dry-run"
            )
            submit_btn = gr.Button("Submit sweep", variant="primary", elem_id="evaluate-sweep-submit")
        submitted = gr.Markdown(elem_id="evaluate-sweep-submitted")
    timer = gr.Timer(REFRESH_S, active=False)
    seen = gr.State(None)  # the shown sweep's signature: redraw only when it changed

    def drawn(view: SweepView) -> list[Any]:
        headers, rows = view.table()
        ranked = pd.DataFrame(rows, columns=headers)  # a plain table for API clients; its headers vary by sweep
        title = (
            f"**{view.sweep.name}** (`{view.sweep.id}`) · {view.sweep.method} · ranked by `{view.metric}` ({view.mode})"
        )
        return [f"{title}\n\n{view.describe()}", ranked, view.figure(), view.to_dict()]

    @handle_errors
    def evaluate_sweeps() -> list[list[Any]]:
        """Sweeps newest first: state, job counts, best run."""
        return sweep_rows(list_sweeps(ctx.db))

    @handle_errors
    def evaluate_sweep(ref: str, metric_name: str, order: str) -> list[Any]:
        """One sweep: its runs ranked by the metric (default: the sweep's), the curves overlaid, the sweep as JSON."""
        return drawn(sweep_status(ctx.db, ref, metric=metric_name or None, mode=order or None))

    @handle_errors
    def evaluate_sweep_submit(text: str, check_only: bool) -> tuple[str, Any]:
        """Queue a sweep from YAML (one job per trial); with dry run, check the trials and list them only."""
        spec = spec_from_yaml(text or "")
        if check_only:
            _sweep, jobs = plan_sweep(ctx.db, ctx.settings, spec)
            names = list(spec.parameters)
            kind, _ = base_kind(spec)
            lines = [f"Dry run: **{len(jobs)}** {kind} job(s) would be queued; nothing was queued.", ""]
            lines += ["| job | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
            for job in jobs:
                values = [str(get_path(job.config, n)) for n in names]
                lines.append(f"| {job.name} | " + " | ".join(values) + " |")
            return "\n".join(lines), gr.skip()
        sweep = submit_sweep(ctx.db, ctx.settings, spec)
        count = len(sweep_status(ctx.db, sweep.id).runs)
        gr.Info(f"Sweep '{sweep.name}' queued: {count} job(s)")
        return f"Sweep **{sweep.name}** queued as `{sweep.id}`: {count} job(s).", sweep.id

    @handle_errors
    def evaluate_sweep_cancel(ref: str) -> list[Any]:
        """Cancel a sweep: its queued jobs at once, its running ones at their next step."""
        return drawn(cancel_sweep(ctx.db, (ref or "").strip()))

    def select_row(evt: gr.SelectData, data: Any) -> Any:
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        values = data.values.tolist() if hasattr(data, "values") else data
        if not values or row is None or row >= len(values):
            return gr.skip()
        return str(values[row][0])

    def refresh(data: Any) -> tuple[Any, Any]:
        """Arm the timer while the sweep shown is queued or running; remember what is drawn."""
        state = data.get("state") if isinstance(data, dict) else None
        return gr.Timer(active=state in ACTIVE_STATES), _signature(data)

    def poll(ref: str, metric_name: str, order: str, last: Any) -> list[Any]:
        try:
            view = sweep_status(ctx.db, ref, metric=metric_name or None, mode=order or None)
        except Exception:  # a half-typed id or a sweep being removed: keep what is shown
            return [gr.skip()] * 6
        data = view.to_dict()
        timer_state, signature = refresh(data)
        if signature == last:
            return [gr.skip()] * 4 + [timer_state, gr.skip()]
        return [*drawn(view), timer_state, signature]

    def page_load() -> list[list[Any]]:
        return sweep_rows(list_sweeps(ctx.db))

    shown = [summary, ranking, curves, details]
    watched = [*shown, timer, seen]
    picked = [sweep_id, metric, mode]
    fresh = gr.State(None)  # "nothing drawn yet": poll draws whatever it finds
    list_btn.click(evaluate_sweeps, None, [table], api_name="evaluate_sweeps")
    show_btn.click(evaluate_sweep, picked, shown, api_name="evaluate_sweep").success(
        refresh, [details], [timer, seen], api_visibility="private", queue=False
    )
    submit_btn.click(
        evaluate_sweep_submit, [spec_box, dry_run], [submitted, sweep_id], api_name="evaluate_sweep_submit"
    ).success(page_load, None, [table], api_visibility="private").then(
        poll, [*picked, fresh], watched, api_visibility="private"
    )
    cancel_btn.click(evaluate_sweep_cancel, [sweep_id], shown, api_name="evaluate_sweep_cancel").success(
        refresh, [details], [timer, seen], api_visibility="private", queue=False
    ).then(page_load, None, [table], api_visibility="private")
    table.select(select_row, [table], [sweep_id], api_visibility="private", queue=False).then(
        poll, [*picked, fresh], watched, api_visibility="private"
    )
    timer.tick(poll, [*picked, seen], watched, api_visibility="private", show_progress="hidden")
    return {"table": table, "sweep_id": sweep_id, "page_load_fn": page_load, "page_load_outputs": [table]}


def _signature(data: Any) -> Any:
    """What the sweep shown looks like, from its JSON: a redraw is due only when this changes."""
    if not isinstance(data, dict):
        return None
    runs = tuple((r.get("job_id"), r.get("state"), r.get("step")) for r in data.get("runs") or ())
    return (data.get("id"), data.get("state"), data.get("metric"), data.get("mode"), runs)
