"""Safety tab: scan text for personal data and offensive content, edit the safety policy and the word list, run
bias & toxicity audits as jobs, review their worst generations and compare scorecards. Five sub-tabs built in
``components/safety/``; this file lays them out and shares the policy file and the selected audit between them."""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.context import Context

from components.safety.audit_panel import create_audit_panel
from components.safety.compare_panel import create_compare_panel
from components.safety.policy_panel import create_policy_panel
from components.safety.review_panel import create_review_panel
from components.safety.scan_panel import create_scan_panel
from studio.context import AppContext
from studio.safety.store import STUDIO_POLICY_NAME


def create_safety_tab(ctx: AppContext) -> dict[str, Any]:
    # the studio's own copy of the policy, which the Playground and the API filter with
    policies = ctx.engines.safety.policies
    policies.ensure_studio_policy()
    with gr.Tab("Safety", id="safety"):
        policy_path = gr.Dropdown(
            choices=policies.names(),
            value=STUDIO_POLICY_NAME,
            allow_custom_value=True,
            label="Policy",
            info=f"The safety policy Scan uses and Policy edits. '{STUDIO_POLICY_NAME}' is the studio's own: "
            "generations are filtered with it when their safety switch is on (an alias may name another). "
            "'default' is the shipped one (saving it writes $STUDIO_HOME/safety/default.yaml). Type a new name "
            "and save to create $STUDIO_HOME/safety/<name>.yaml; policies live only in that folder.",
            elem_id="safety-policy-path",
        )
        with gr.Tabs(selected="safety-scan", elem_id="safety-tabs"):
            with gr.Tab("Scan", id="safety-scan", elem_id="safety-tab-scan"):
                scan = create_scan_panel(ctx, policy_path)
            with gr.Tab("Policy", id="safety-policy", elem_id="safety-tab-policy"):
                policy = create_policy_panel(ctx, policy_path)
            with gr.Tab("Audits", id="safety-audits", elem_id="safety-tab-audits"):
                audits = create_audit_panel(ctx)
                gr.Markdown("### Review generations")
                review = create_review_panel(ctx, audits["job"])
            with gr.Tab("Compare audits", id="safety-compare", elem_id="safety-tab-compare"):
                compare = create_compare_panel(ctx)

    # every page (re)load reads the files and the database again
    root = Context.root_block
    if root is not None:
        load_policy_fn = policy["load_fn"]

        def load_policy_page(path: str) -> Any:
            policies.ensure_studio_policy()  # re-created if someone deleted it meanwhile
            return [gr.Dropdown(choices=policies.names()), *load_policy_fn(path)]

        root.load(
            load_policy_page, policy["load_inputs"], [policy_path, *policy["load_outputs"]], api_visibility="private"
        )
        root.load(audits["page_load_fn"], None, audits["page_load_outputs"], api_visibility="private")
        root.load(compare["page_load_fn"], None, compare["page_load_outputs"], api_visibility="private")
    return {"scan": scan, "policy": policy, "audits": audits, "review": review, "compare": compare}
