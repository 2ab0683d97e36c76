"""Fine-Tune tab: supervised fine-tuning from labeled examples to a trained adapter. Four sub-tabs — Dashboard,
Datasets, New job (the wizard), Jobs & monitor — built in ``components/finetune/``; this file lays them out and
wires them to each other (quick actions, submit → monitor, new datasets → the wizard's picker)."""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.context import Context

from components.finetune.curate_panel import create_curate_panel
from components.finetune.dashboard_panel import create_dashboard_panel
from components.finetune.datasets_panel import create_datasets_panel
from components.finetune.monitor_panel import create_monitor_panel
from components.finetune.wizard_panel import create_wizard_panel
from studio.context import AppContext
from studio.training.service import TokenizerCache

DASHBOARD, DATASETS, CURATE, NEW_JOB, JOBS = "ft-dashboard", "ft-datasets", "ft-curate", "ft-new-job", "ft-jobs"


def create_finetune_tab(ctx: AppContext) -> dict[str, Any]:
    tokenizers = TokenizerCache(ctx.settings)
    with gr.Tab("Fine-Tune", id="finetune") as tab, gr.Tabs(selected=DASHBOARD, elem_id="finetune-tabs") as subtabs:
        with gr.Tab("Dashboard", id=DASHBOARD, elem_id="finetune-tab-dashboard") as dashboard_tab:
            dashboard = create_dashboard_panel(ctx)
        with gr.Tab("Datasets", id=DATASETS, elem_id="finetune-tab-datasets") as datasets_tab:
            datasets = create_datasets_panel(ctx, tokenizers)
        with gr.Tab("Curate", id=CURATE, elem_id="finetune-tab-curate") as curate_tab:
            curation = create_curate_panel(ctx, tokenizers)
        with gr.Tab("New job", id=NEW_JOB, elem_id="finetune-tab-new-job") as wizard_tab:
            wizard = create_wizard_panel(ctx)
        with gr.Tab("Jobs & monitor", id=JOBS, elem_id="finetune-tab-jobs") as jobs_tab:
            monitor = create_monitor_panel(ctx)

    # quick actions switch to the sub-tab that does the job
    dashboard["upload_btn"].click(
        lambda: (gr.Tabs(selected=DATASETS), gr.Accordion(open=True)),
        None,
        [subtabs, datasets["upload_box"]],
        api_visibility="private",
        queue=False,
    )
    dashboard["start_btn"].click(
        lambda: gr.Tabs(selected=NEW_JOB), None, [subtabs], api_visibility="private", queue=False
    ).then(wizard["refresh_fn"], wizard["refresh_io"], wizard["refresh_io"], api_visibility="private")
    dashboard["import_btn"].click(
        lambda: (gr.Tabs(selected=DATASETS), gr.Accordion(open=True)),
        None,
        [subtabs, datasets["conversations_box"]],
        api_visibility="private",
        queue=False,
    ).then(datasets["refresh_conversations_fn"], None, [datasets["conversations"]], api_visibility="private")

    # figures that may have changed elsewhere are read again when their view is opened
    tab.select(dashboard["refresh_fn"], None, dashboard["outputs"], api_visibility="private")
    dashboard_tab.select(dashboard["refresh_fn"], None, dashboard["outputs"], api_visibility="private")
    datasets_tab.select(
        datasets["show_fn"], datasets["show_inputs"], datasets["show_outputs"], api_visibility="private"
    )
    curate_tab.select(curation["refresh_fn"], None, curation["refresh_outputs"], api_visibility="private").then(
        curation["lineage_fn"], [curation["dataset"]], curation["lineage_outputs"], api_visibility="private"
    )
    wizard_tab.select(wizard["refresh_fn"], wizard["refresh_io"], wizard["refresh_io"], api_visibility="private")
    jobs_tab.select(monitor["list_fn"], [monitor["state_filter"]], [monitor["table"]], api_visibility="private")
    for event in [*datasets["changed_events"], *curation["changed_events"]]:
        event.then(wizard["refresh_fn"], wizard["refresh_io"], wizard["refresh_io"], api_visibility="private")

    # every page (re)load reads the database again: the tab shows what is stored, whichever browser opens it
    root = Context.root_block
    if root is not None:
        root.load(dashboard["refresh_fn"], None, dashboard["outputs"], api_visibility="private")
        root.load(datasets["page_load_fn"], None, datasets["page_load_outputs"], api_visibility="private")
        root.load(monitor["page_load_fn"], None, monitor["page_load_outputs"], api_visibility="private")
        root.load(wizard["refresh_fn"], wizard["refresh_io"], wizard["refresh_io"], api_visibility="private")

    # a submitted job opens in the monitor
    def open_submitted(job_id: str) -> tuple[Any, Any]:
        if not job_id:
            return gr.skip(), gr.skip()
        return gr.Tabs(selected=JOBS), job_id

    for submitted, job_box in (
        (wizard["submit_event"], wizard["job_id"]),
        (curation["augment_event"], curation["augment_job"]),
    ):
        submitted.success(
            open_submitted, [job_box], [subtabs, monitor["job_id"]], api_visibility="private", queue=False
        ).then(monitor["show_fn"], [monitor["job_id"]], monitor["show_outputs"], api_visibility="private").then(
            monitor["list_fn"], [monitor["state_filter"]], [monitor["table"]], api_visibility="private"
        )
    return {
        "tabs": subtabs,
        "dashboard": dashboard,
        "datasets": datasets,
        "wizard": wizard,
        "curation": curation,
        "monitor": monitor,
        "job_id": monitor["job_id"],
        "load_button": monitor["load_event_btn"],
        "load_event": monitor["load_event"],
    }
