"""Evaluate tab: run evaluations (models × dataset or text × metrics) as jobs, read their results, compare
experiments (training and eval runs), and see the metric plugins. Four sub-tabs built in ``components/evaluate/``;
this file lays them out and wires them: a submitted run shows in Results, and a ``gr.Timer`` polls the run's job row
(progress, state) and redraws the results while it runs."""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.context import Context

from components.evaluate.experiments_panel import create_experiments_panel
from components.evaluate.plugins_panel import create_plugins_panel
from components.evaluate.results_panel import create_results_panel
from components.evaluate.run_panel import create_run_panel
from components.evaluate.sweeps_panel import create_sweeps_panel
from studio.context import AppContext
from studio.errors import StudioError
from studio.evaluation.results import latest_run_id
from studio.jobs import queue

RUN, EXPERIMENTS, PLUGINS = "ev-run", "ev-experiments", "ev-plugins"
REFRESH_S = 2.0


def create_evaluate_tab(ctx: AppContext) -> dict[str, Any]:
    with gr.Tab("Evaluate", id="evaluate") as tab:
        with gr.Tabs(selected=RUN, elem_id="evaluate-tabs"):
            with gr.Tab("Run & results", id=RUN, elem_id="evaluate-tab-run"):
                run = create_run_panel(ctx)
                results = create_results_panel(ctx, run["job_id"])
            with gr.Tab("Experiments", id=EXPERIMENTS, elem_id="evaluate-tab-experiments") as exp_tab:
                experiments = create_experiments_panel(ctx)
                sweeps = create_sweeps_panel(ctx)
            with gr.Tab("Metrics & plugins", id=PLUGINS, elem_id="evaluate-tab-plugins") as plugins_tab:
                plugins = create_plugins_panel(ctx)
        # Inside the tab, not after it: a component between two tabs of the top bar shifts the next tab's
        # position there, and the browser then listed "Safety" twice (issue 15, point 3).
        timer = gr.Timer(REFRESH_S)
        seen = gr.State(None)  # the job signature the page shows: redraw only when it changed

    def tick(run_id: str, last: Any, *show_inputs: Any) -> list[Any]:
        """Timer: the run's state and progress; results redrawn when the job row changed."""
        n = len(results["show_outputs"])
        run_id = (run_id or "").strip()
        try:
            job = queue.get_job(ctx.db, run_id) if run_id else None
        except StudioError:  # a half-typed id: keep showing what is there
            job = None
        if job is None:
            return [gr.skip()] * (n + 5)
        signature = (job.id, job.state, job.step, job.message)
        if signature == last:
            return [gr.skip()] * (n + 5)
        total = f"{job.step}/{job.total_steps}" if job.total_steps else f"{job.step}"
        status = f"Run `{job.id}` **{job.state}** · {total} · {job.message}"
        shown = results["show_fn"](job.id, *show_inputs[1:])
        cancel = gr.Button(interactive=queue.can_cancel(job))  # Cancel only while there is something to stop
        return [status, run["progress_fn"](job), *shown, signature, results["refresh_runs_fn"](), cancel]

    timer.tick(
        tick,
        [run["job_id"], seen, *results["show_inputs"]],
        [run["status"], run["progress"], *results["show_outputs"], seen, results["runs"], run["cancel"]],
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
    for event in run["submit_events"]:
        event.success(
            results["show_fn"], results["show_inputs"], results["show_outputs"], api_visibility="private"
        ).then(results["refresh_runs_fn"], None, [results["runs"]], api_visibility="private")
    tab.select(run["refresh_fn"], run["refresh_inputs"], run["refresh_outputs"], api_visibility="private")
    exp_tab.select(experiments["page_load_fn"], None, experiments["page_load_outputs"], api_visibility="private")
    exp_tab.select(sweeps["page_load_fn"], None, sweeps["page_load_outputs"], api_visibility="private")
    plugins_tab.select(plugins["load_fn"], None, plugins["load_outputs"], api_visibility="private")

    root = Context.root_block
    if root is not None:  # a (re)loaded page shows the newest run, as stored in the database

        def page_load() -> tuple[Any, str]:
            return results["refresh_runs_fn"](), latest_run_id(ctx.db)

        root.load(page_load, None, [results["runs"], run["job_id"]], api_visibility="private")
        root.load(plugins["load_fn"], None, plugins["load_outputs"], api_visibility="private")
    return {
        "job_id": run["job_id"],
        "run": run,
        "results": results,
        "experiments": experiments,
        "sweeps": sweeps,
        "plugins": plugins,
    }
