"""Ranking annotation (RLHF feedback): candidates, ranks or 1-7 scores, history, agreement (wiring only)."""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.context import Context

from components.common import handle_errors
from components.compare.shared import CompareShared, labels, sampling
from studio.compare import ranking
from studio.compare.tables import RankingItem

MAX_CANDIDATES = 6
MODES = ["Order (rank 1 = best)", "Scores (1-7)"]


def create_ranking_panel(shared: CompareShared) -> dict[str, Any]:
    ctx = shared.ctx
    choices = shared.choices()
    gr.Markdown(
        "Generate 2-6 candidates, then rank them (1 = best) or give each a 1-7 reward score. Annotators agree when "
        "their pairwise preferences match: **Cohen's kappa** per pair of annotators, **Krippendorff's alpha** "
        "(nominal) overall."
    )
    with gr.Row():
        annotator = gr.Textbox(
            label="Your name (annotator)",
            info="With sign-in, your judgements are recorded under your user name.",
            elem_id="compare-annotator",
            scale=2,
        )
        configs = gr.Dropdown(
            choices, value=choices[:1], multiselect=True, allow_custom_value=True, label="Configs",
            elem_id="compare-rank-configs", scale=3,
        )  # fmt: skip
        count = gr.Slider(2, MAX_CANDIDATES, value=3, step=1, label="Candidates", elem_id="compare-rank-n", scale=1)
    shared.pickers.append(configs)
    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="compare-rank-prompt")
    with gr.Row():
        generate = gr.Button("Generate candidates", variant="primary", elem_id="compare-rank-generate")
        next_btn = gr.Button("Next item to annotate", elem_id="compare-rank-next")
    item_id = gr.Textbox(label="Item", interactive=False, elem_id="compare-rank-item")
    mode = gr.Radio(MODES, value=MODES[0], label="How to judge", elem_id="compare-rank-mode")
    texts, ranks, scores, boxes = [], [], [], []
    for i in range(MAX_CANDIDATES):
        with gr.Row(visible=False) as row:
            texts.append(gr.Markdown("", elem_id=f"compare-cand-{i}"))
            ranks.append(
                gr.Dropdown(
                    ["", *[str(r) for r in range(1, MAX_CANDIDATES + 1)]],
                    value="",
                    label=f"Rank of #{i + 1}",
                    scale=0,
                    elem_id=f"compare-cand-rank-{i}",
                )
            )
            scores.append(gr.Slider(1, 7, value=4, step=1, label="Score", scale=1, elem_id=f"compare-cand-score-{i}"))
        boxes.append(row)
    note = gr.Textbox(label="Note (optional)", elem_id="compare-rank-note")
    submit = gr.Button("Submit judgement", variant="primary", elem_id="compare-rank-submit")
    status = gr.Markdown("", elem_id="compare-rank-status")
    with gr.Accordion("History and agreement", open=False):
        history_btn = gr.Button("Show my history & agreement", elem_id="compare-rank-history-btn")
        history = gr.Dataframe(headers=ranking.HISTORY_COLUMNS, interactive=False, elem_id="compare-rank-history")
        agreement = gr.Markdown("", elem_id="compare-agreement")
        per_annotator = gr.Dataframe(
            headers=ranking.PER_ANNOTATOR_COLUMNS, interactive=False, elem_id="compare-agreement-annotators"
        )
        pairs = gr.Dataframe(headers=ranking.PAIR_COLUMNS, interactive=False, elem_id="compare-agreement-pairs")

    def show_item(item: RankingItem | None) -> list[Any]:
        if item is None:
            return [
                "",
                *[""] * MAX_CANDIDATES,
                *[gr.update(visible=False)] * MAX_CANDIDATES,
                "Nothing left to annotate.",
            ]
        n = len(item.candidates)
        cells = [
            f"**#{i + 1}** {item.candidates[i]['text']}" if i < n else "" for i in range(MAX_CANDIDATES)
        ]  # names stay hidden: annotators judge the replies, not the models
        rows = [gr.update(visible=i < n) for i in range(MAX_CANDIDATES)]
        return [item.id, *cells, *rows, f"**Prompt:** {item.prompt}"]

    @handle_errors
    def make(
        picked: list[str] | None, text: str, n: float, temperature: float, max_tokens: float, uc: str | None, tags: str
    ) -> list[Any]:
        """Generate candidates for the prompt and show them for judging."""
        use_case, tag_list = labels(uc, tags)
        item = ranking.generate_candidates(
            ctx.engines, ctx.db, picked or [], text, int(n), sampling(temperature, max_tokens),
            use_case=use_case, tags=tag_list,
        )  # fmt: skip
        return show_item(item)

    @handle_errors
    def following(name: str) -> list[Any]:
        """The oldest item this annotator has not judged yet."""
        return show_item(ranking.next_item_for(ctx.db, name))

    @handle_errors
    def judge(item: str, name: str, how: str, note_text: str, *values: Any) -> str:
        """Store the judgement (ranks or scores) of the shown item."""
        if not item:
            raise gr.Error("Generate candidates or load the next item first.")
        n = len(ranking.get_item(ctx.db, item).candidates)
        rank_values, score_values = values[:MAX_CANDIDATES], values[MAX_CANDIDATES:]
        if how == MODES[0]:
            order = ranking.order_from_ranks(list(rank_values[:n]))
            ranking.submit_annotation(ctx.db, item, name, order=order, note=note_text)
        else:
            ranking.submit_annotation(ctx.db, item, name, scores=[int(s) for s in score_values[:n]], note=note_text)
        return f"Saved {ranking.annotator_name(name)}'s judgement of item {item[:8]}."

    @handle_errors
    def report(name: str) -> list[Any]:
        """This annotator's history, plus agreement per annotator and overall."""
        rows = [r.cells() for r in ranking.annotator_history(ctx.db, name)]
        agree = ranking.agreement_report(ctx.db)
        return [rows, agree.summary(), agree.per_annotator, agree.pairs]

    def page_load() -> Any:
        """With sign-in the annotator is the signed-in user: their name, locked (a single user types one)."""
        name = ranking.signed_in_annotator()
        return gr.update() if name is None else gr.update(value=name, interactive=False)

    root = Context.root_block
    if root is not None:
        root.load(page_load, None, [annotator], api_visibility="private", queue=False)
    item_outputs = [item_id, *texts, *boxes, status]
    generate.click(
        make,
        [configs, prompt, count, shared.temperature, shared.max_tokens, shared.use_case, shared.tags],
        item_outputs,
        api_name="compare_rank_generate",
    )
    next_btn.click(following, [annotator], item_outputs, api_name="compare_rank_next")
    submit.click(
        judge, [item_id, annotator, mode, note, *ranks, *scores], [status], api_name="compare_rank_submit"
    ).then(report, [annotator], [history, agreement, per_annotator, pairs], api_visibility="private")
    history_btn.click(report, [annotator], [history, agreement, per_annotator, pairs], api_name="compare_rank_history")
    return {}
