"""Resources tab (issue 20): live charts of the machine -- CPU, RAM, the disk of STUDIO_HOME and, per GPU,
utilisation, memory, temperature and power -- over the last hour, redrawn every 5 s by a ``gr.Timer``.

The server samples (``studio.monitoring.system.SystemSampler``, started in ``app.py``), not the browser: a reload
shows the whole kept history. Without a GPU the GPU charts are replaced by a note saying why. Wiring only.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from components.common import handle_errors
from components.cost_panel import create_cost_panel
from components.disk_panel import create_disk_panel
from studio.context import AppContext
from studio.monitoring.system import GPU_METRICS, SystemSampler, cpu_figure, gpu_figure, memory_disk_figure

REFRESH_S = 5.0


def create_resources_tab(ctx: AppContext, sampler: SystemSampler) -> dict[str, Any]:
    status = sampler.gpu_status()
    with gr.Tab("Resources", id="resources"):
        gr.Markdown(
            f"## Resources\nThis machine, sampled by the server every {sampler.interval_s:g} s; the last "
            f"{sampler.keep_s / 60:g} minutes are kept. Each job's own usage is in Fine-Tune → Jobs & monitor.",
            elem_id="resources-title",
        )
        gpu_note = gr.Markdown(f"**{status.note}**", elem_id="resources-gpu-note")
        with gr.Row():
            cpu_plot = gr.Plot(label="CPU", elem_id="resources-cpu-plot")
            ram_plot = gr.Plot(label="RAM", elem_id="resources-ram-plot")
            disk_plot = gr.Plot(label="Disk", elem_id="resources-disk-plot")
        with gr.Row(visible=status.available):
            gpu_plots = {
                metric: gr.Plot(label=title, elem_id=f"resources-gpu-{metric}-plot")
                for metric, (title, _unit) in GPU_METRICS.items()
            }
        with gr.Row():
            refresh_btn = gr.Button("Refresh", scale=0, min_width=110, elem_id="resources-refresh")
        with gr.Accordion("Latest samples (JSON)", open=False):
            snapshot_json = gr.JSON(label="Latest samples", elem_id="resources-json")
        disk = create_disk_panel(ctx)
        cost = create_cost_panel(ctx)
        # ticks only while this tab is open (app.py switches it with the tab bar): other tabs pay nothing
        timer = gr.Timer(REFRESH_S, active=False)

    # -- handlers --------------------------------------------------------------------------------------------
    def draw() -> list[Any]:
        samples = sampler.snapshot()
        figures = [cpu_figure(samples), memory_disk_figure(samples, "ram"), memory_disk_figure(samples, "disk")]
        if status.available:
            figures += [gpu_figure(samples, metric) for metric in GPU_METRICS]
        else:
            figures += [gr.skip()] * len(GPU_METRICS)
        return [f"**{sampler.gpu_status().note}**", *figures]

    @handle_errors
    def snapshot() -> dict[str, Any]:
        """The machine's latest samples as JSON: CPU %, RAM and disk used/total, per GPU utilisation, memory,
        temperature and power (or the note saying why there is no GPU), and the sampler's own cost."""
        return sampler.snapshot_dict()

    drawn = [gpu_note, cpu_plot, ram_plot, disk_plot, *gpu_plots.values()]
    timer.tick(draw, None, drawn, api_visibility="private", queue=False, show_progress="hidden")
    refresh_btn.click(snapshot, None, [snapshot_json], api_name="resources_snapshot").then(
        draw, None, drawn, api_visibility="private", queue=False, show_progress="hidden"
    )

    def load() -> list[Any]:
        return [*draw(), *disk["load_fn"](), *cost["load_fn"]()]

    return {
        "load_fn": load,
        "load_outputs": [*drawn, *disk["load_outputs"], *cost["load_outputs"]],
        "snapshot_fn": snapshot,
        "timer": timer,
        "plots": {"cpu": cpu_plot, "ram": ram_plot, "disk": disk_plot, **gpu_plots},
    }
