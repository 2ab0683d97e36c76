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


def create_safety_tab(ctx: AppContext) -> dict[str, Any]:
    # the studio's own copy of the policy, which the Playground and the API filter with
    studio_policy = ctx.engines.safety.ensure_studio_policy()
    with gr.Tab("Safety", id="safety"):
        policy_path = gr.Textbox(
            value=str(studio_policy),
            label="Policy file",
            info="The safety policy YAML that Scan uses and Policy edits. The studio's policy (this default) is the "
            "one generations are filtered with when their safety switch is on; an alias may name another file.",
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
            ctx.engines.safety.ensure_studio_policy()  # re-created if someone deleted it meanwhile
            return load_policy_fn(path)

        root.load(load_policy_page, policy["load_inputs"], policy["load_outputs"], api_visibility="private")
        root.load(audits["page_load_fn"], None, audits["page_load_outputs"], api_visibility="private")
        root.load(compare["page_load_fn"], None, compare["page_load_outputs"], api_visibility="private")
    return {"scan": scan, "policy": policy, "audits": audits, "review": review, "compare": compare}
