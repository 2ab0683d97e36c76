"""Models tab, Deployments panel: serve a model, alias, adapter or export as its own process on a port, or register
a cloud-hosted OpenAI-compatible endpoint; a table of every deployment with its status from real health checks,
URL, engine, uptime and requests served; stop, restart, delete, the log tail, and "Use in Playground" (the
``deploy:<name>`` alias, remote engine). Wiring only: ``studio.deploy.service``.

A ``gr.Timer`` checks the deployments every few seconds while one is starting (then every 15 s), so a status
shown is never older than that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from components.common import first_cell_of_clicked_row, handle_errors
from studio.context import AppContext
from studio.deploy.config import LOCAL_ENGINES, DeploymentCreate, RemoteDeploymentCreate
from studio.deploy.records import uptime_text
from studio.deploy.service import (
    DeploymentPublic,
    add_remote,
    delete_deployment,
    deployment_alias,
    deployment_logs,
    list_deployments,
    restart_deployment,
    start_deployment,
    stop_deployment,
)
from studio.evaluation.results import adapter_choices, model_choices

DEPLOY_COLUMNS = ["Name", "Status", "URL", "Engine", "Target", "Uptime", "Requests", "Message"]
DEPLOY_WIDTHS: list[str | int] = ["150px", "100px", "230px", "110px", "200px", "90px", "90px", "300px"]
FAST_S, SLOW_S = 2.0, 15.0
LOG_LINES = 60
CREATE = DeploymentCreate.model_fields
REMOTE = RemoteDeploymentCreate.model_fields


def _help(fields: Any, name: str) -> str:
    return fields[name].description or ""


def deployment_rows(items: list[DeploymentPublic]) -> list[list[Any]]:
    """One row per deployment, newest first (as listed)."""
    return [
        [
            d.name,
            d.status,
            d.url,
            d.engine,
            d.target + (f" + {d.adapter}" if d.adapter else ""),
            uptime_text(d.uptime_s),
            "-" if d.requests_served is None else d.requests_served,
            (d.message or "").splitlines()[0][:200] if d.message else "",
        ]
        for d in items
    ]


def export_choices(home: Path) -> list[str]:
    """``export:NAME`` for each finished export (a folder with a manifest) under ``STUDIO_HOME/exports``."""
    folder = home / "exports"
    if not folder.is_dir():
        return []
    return [f"export:{p.name}" for p in sorted(folder.iterdir()) if (p / "manifest.json").is_file()]


def target_choices(ctx: AppContext) -> list[str]:
    """What can be deployed: aliases and models, ``adapter:NAME`` and ``export:NAME``."""
    return [
        "default",
        *model_choices(ctx.engines.resolver),
        *(f"adapter:{n}" for n in adapter_choices(ctx.settings)),
        *export_choices(ctx.settings.home),
    ]


def create_deploy_panel(ctx: AppContext) -> dict[str, Any]:
    current = list_deployments(ctx.db, ctx.settings, refresh=False)
    gr.Markdown(
        "### Deployments\nServe a model, alias, adapter (`adapter:NAME`) or export (`export:NAME`) as its own "
        "OpenAI-compatible server on a port, or register a cloud-hosted endpoint. Statuses come from health checks.",
        elem_id="deploy-title",
    )
    table = gr.Dataframe(
        value=deployment_rows(current),
        headers=DEPLOY_COLUMNS,
        column_widths=DEPLOY_WIDTHS,
        interactive=False,
        wrap=True,
        elem_id="deploy-table",
        label="Deployments (click one to pick it)",
    )
    with gr.Row():
        target = gr.Dropdown(
            target_choices(ctx),
            value="default",
            allow_custom_value=True,
            label="Serve",
            info=_help(CREATE, "target"),
            elem_id="deploy-target",
            scale=3,
        )
        engine = gr.Dropdown(
            list(LOCAL_ENGINES), value="auto", label="Engine", info=_help(CREATE, "engine"), elem_id="deploy-engine"
        )
        port = gr.Number(None, precision=0, label="Port", info=_help(CREATE, "port"), elem_id="deploy-port")
        name = gr.Textbox(label="Name", info=_help(CREATE, "name"), elem_id="deploy-name")
    deploy_btn = gr.Button("Deploy", variant="primary", elem_id="deploy-start")
    with gr.Accordion("Register a cloud-hosted endpoint", open=False, elem_id="deploy-remote"):
        with gr.Row():
            remote_name = gr.Textbox(label="Name", info=_help(REMOTE, "name"), elem_id="deploy-remote-name")
            base_url = gr.Textbox(
                label="Base URL",
                placeholder="https://api.example.com/v1",
                info=_help(REMOTE, "base_url"),
                elem_id="deploy-remote-url",
                scale=2,
            )
            key_env = gr.Textbox(
                label="API key variable", info=_help(REMOTE, "api_key_env"), elem_id="deploy-remote-key"
            )
            remote_model = gr.Textbox(label="Model", info=_help(REMOTE, "model"), elem_id="deploy-remote-model")
        register_btn = gr.Button("Register endpoint", elem_id="deploy-remote-add")
    with gr.Row(elem_id="deploy-actions"):
        selected = gr.Dropdown(
            [d.name for d in current],
            value=None,
            allow_custom_value=True,
            label="Deployment",
            info="The deployment the buttons act on.",
            elem_id="deploy-selected",
            scale=3,
        )
        use_btn = gr.Button("Use in Playground", variant="primary", elem_id="deploy-use", scale=1)
        logs_btn = gr.Button("Show log", elem_id="deploy-logs-btn", scale=1)
        stop_btn = gr.Button("Stop", variant="secondary", elem_id="deploy-stop", scale=1)
        restart_btn = gr.Button("Restart", elem_id="deploy-restart", scale=1)
        delete_btn = gr.Button("Delete", variant="secondary", elem_id="deploy-delete", scale=1)
    status = gr.Markdown("", elem_id="deploy-status")
    alias = gr.Textbox(visible=False, elem_id="deploy-alias")
    log_view = gr.Code("", label="Log (last lines)", language=None, interactive=False, elem_id="deploy-log")
    timer = gr.Timer(_interval(current), active=bool(current))  # no deployment: nothing to check

    def update(pick: str | None = None, refresh: bool = True) -> tuple[Any, Any, Any]:
        items = list_deployments(ctx.db, ctx.settings, refresh=refresh)
        names = [d.name for d in items]
        return (
            deployment_rows(items),
            gr.Dropdown(choices=names, value=pick if pick in names else None),
            gr.Timer(_interval(items), active=bool(items)),
        )

    @handle_errors
    def deploy_list(pick: str | None) -> tuple[Any, Any, Any]:
        """Every deployment, checked now: status, URL, engine, target, uptime, requests served."""
        return update(pick)

    @handle_errors
    def deploy_start(what: str, engine_name: str, port_number: float | None, wanted: str) -> tuple[Any, ...]:
        """Start TARGET (a model, alias, adapter:NAME or export:NAME) as its own serving process."""
        data: dict[str, Any] = {"target": what or "", "engine": engine_name or "auto"}
        if port_number:  # an empty number box sends 0 from the browser: the first free port, as when left out
            data["port"] = int(port_number)
        if wanted and wanted.strip():
            data["name"] = wanted.strip()
        started = start_deployment(ctx.db, ctx.settings, data)
        gr.Info(f"Deployment '{started.name}' is starting on {started.url}")
        return (f"**{started.name}** is starting on {started.url} ({started.engine}).", *update(started.name, False))

    @handle_errors
    def deploy_add_remote(label: str, url: str, env: str, model: str) -> tuple[Any, ...]:
        """Register a cloud-hosted OpenAI-compatible endpoint as a deployment (the key stays in its variable)."""
        data: dict[str, Any] = {"name": label, "base_url": url, "api_key_env": env or None, "model": model or None}
        added = add_remote(ctx.db, ctx.settings, data)
        return (f"**{added.name}**: {added.status}. {added.message}".strip(), *update(added.name, False))

    @handle_errors
    def deploy_stop(ref: str) -> tuple[Any, ...]:
        """Stop the deployment's serving process (or stop checking a remote endpoint)."""
        stopped = stop_deployment(ctx.db, ctx.settings, ref or "")
        return (f"**{stopped.name}**: {stopped.status}.", *update(stopped.name, False))

    @handle_errors
    def deploy_restart(ref: str) -> tuple[Any, ...]:
        """Start the deployment again on its port."""
        again = restart_deployment(ctx.db, ctx.settings, ref or "")
        return (f"**{again.name}**: {again.status} on {again.url}.", *update(again.name, False))

    @handle_errors
    def deploy_delete(ref: str) -> tuple[Any, ...]:
        """Forget a deployment that is not running (its row, log and Playground alias)."""
        delete_deployment(ctx.db, ctx.settings, ref or "")
        return (f"Deleted **{ref}**.", *update(None, False))

    @handle_errors
    def deploy_logs(ref: str) -> str:
        """The last lines of the deployment's log."""
        return deployment_logs(ctx.db, ctx.settings, ref or "", LOG_LINES)

    @handle_errors
    def deploy_alias(ref: str) -> tuple[str, str]:
        """Create the deploy:<name> alias (remote engine) and return its name, for the Playground."""
        found = next((d for d in list_deployments(ctx.db, ctx.settings, refresh=False) if d.name == ref), None)
        name = deployment_alias(ctx.db, ctx.settings, found.id if found else (ref or ""))
        return name, f"The Playground now chats with **{ref}** through the alias `{name}`."

    def tick(pick: str | None) -> tuple[Any, Any, Any]:
        return update(pick)

    listed = [table, selected, timer]
    deploy_btn.click(deploy_start, [target, engine, port, name], [status, *listed], api_name="deploy_start")
    register_btn.click(
        deploy_add_remote,
        [remote_name, base_url, key_env, remote_model],
        [status, *listed],
        api_name="deploy_add_remote",
    )
    stop_btn.click(deploy_stop, [selected], [status, *listed], api_name="deploy_stop")
    restart_btn.click(deploy_restart, [selected], [status, *listed], api_name="deploy_restart")
    delete_btn.click(deploy_delete, [selected], [status, *listed], api_name="deploy_delete")
    logs_btn.click(deploy_logs, [selected], [log_view], api_name="deploy_logs")
    use_event = use_btn.click(deploy_alias, [selected], [alias, status], api_name="deploy_alias")
    timer.tick(tick, [selected], listed, api_visibility="private")
    table.select(first_cell_of_clicked_row, [table], [selected], api_visibility="private")
    list_btn = gr.Button("Refresh deployments", elem_id="deploy-refresh")
    list_btn.click(deploy_list, [selected], listed, api_name="deploy_list")
    return {
        "use_event": use_event,
        "alias": alias,
        "target": target,
        "targets_fn": lambda: gr.Dropdown(choices=target_choices(ctx)),
    }


def _interval(items: list[DeploymentPublic]) -> float:
    return FAST_S if any(d.status == "starting" for d in items) else SLOW_S
