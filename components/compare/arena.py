"""Named side-by-side mode, blind battles and batch A/B (wiring only)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from components.common import handle_errors
from components.compare.shared import MAX_SIDES, CompareShared, chat_of, labels, sampling, stats_of
from studio.compare import battles
from studio.compare.battles import VOTE_CHOICES, BlindBattle, NamedSession
from studio.compare.stream import SideView

BATCH_COLUMNS = ["#", "Prompt", "A", "B", "Vote"]


def _owner(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def create_named_panel(shared: CompareShared) -> dict[str, Any]:
    """2-4 contenders, one prompt, all replies streaming side by side; continue; regenerate one side."""
    ctx = shared.ctx
    choices = shared.choices()
    with gr.Row():
        contenders = gr.Dropdown(
            choices,
            value=choices[:2] if len(choices) >= 2 else choices,
            multiselect=True,
            max_choices=MAX_SIDES,
            allow_custom_value=True,
            label="Contenders (2-4)",
            info="Models, aliases, or 'model + adapter' (an adapter under STUDIO_HOME/adapters on its base model).",
            elem_id="compare-contenders",
            scale=4,
        )
        shared.language_filter(
            [contenders], elem_id="compare-contenders-language", api_name="compare_filter_contenders", keep=2
        )
    shared.pickers.append(contenders)
    session = gr.State(NamedSession())
    chats: list[gr.Chatbot] = []
    stats: list[gr.Markdown] = []
    columns: list[gr.Column] = []
    with gr.Row(equal_height=True):
        for i in range(MAX_SIDES):
            with gr.Column(visible=i < 2, min_width=240) as col:
                chats.append(gr.Chatbot(label=f"Side {i + 1}", height=360, elem_id=f"compare-chat-{i}"))
                stats.append(gr.Markdown("", elem_id=f"compare-stats-{i}"))
            columns.append(col)
    system = gr.Textbox(label="System prompt (optional)", lines=1, elem_id="compare-system")
    prompt = gr.Textbox(label="Prompt", placeholder="One prompt for every side", lines=2, elem_id="compare-prompt")
    with gr.Row():
        send = gr.Button("Send to all", variant="primary", elem_id="compare-send")
        side = gr.Dropdown(
            [str(i + 1) for i in range(MAX_SIDES)], value="1", label="Side", scale=0, elem_id="compare-side"
        )
        regen = gr.Button("Regenerate this side", elem_id="compare-regenerate")
        clear = gr.Button("New conversation", elem_id="compare-clear")

    def updates(state: NamedSession, views: list[SideView], convs: list[list[Any]]) -> list[Any]:
        """Each side's chat is the conversation it answered plus its reply (``views[i]``), shown once: the final
        update reuses the streamed conversations, not the histories that already end with the reply."""
        out: list[Any] = []
        n = len(state.specs)
        for i in range(MAX_SIDES):
            if i < n:
                answered = [{"role": m.role, "content": m.content} for m in convs[i]] if i < len(convs) else []
                view = views[i] if i < len(views) else None
                out.append(gr.update(value=chat_of(answered, view), label=state.specs[i].label))
            else:
                out.append(gr.update(value=[]))
        out += [stats_of(views[i]) if i < len(views) else "" for i in range(MAX_SIDES)]
        out += [gr.update(visible=i < max(n, 2)) for i in range(MAX_SIDES)]
        return out

    @handle_errors
    def run(
        picked: list[str] | None,
        text: str,
        system_prompt: str,
        temperature: float,
        max_tokens: float,
        state: NamedSession | None,
        request: gr.Request = None,  # type: ignore[assignment]
    ) -> Iterator[list[Any]]:
        """Send the prompt to every contender; yields the chats, the figures and the columns' visibility."""
        state = state or NamedSession()
        params = sampling(temperature, max_tokens)
        turn = battles.named_turn(
            ctx.engines, state, picked or [], text, params, system=system_prompt, owner=_owner(request)
        )
        answered: list[list[Any]] = []
        for views, convs in turn:
            answered = convs
            yield [*updates(state, views, convs), gr.update(), state]
        yield [*updates(state, state.last, answered), "", state]

    @handle_errors
    def regenerate(
        which: str,
        temperature: float,
        max_tokens: float,
        state: NamedSession | None,
        request: gr.Request = None,  # type: ignore[assignment]
    ) -> Iterator[list[Any]]:
        """Generate one side's last reply again."""
        state = state or NamedSession()
        params = sampling(temperature, max_tokens)
        index = int(which or 1) - 1
        answered: list[list[Any]] = []
        for views, convs in battles.regenerate_side(ctx.engines, state, index, params, owner=_owner(request)):
            answered = convs
            yield [*updates(state, views, convs), state]
        yield [*updates(state, state.last, answered), state]

    def reset(state: NamedSession | None) -> list[Any]:
        state = NamedSession()
        return [*[gr.update(value=[]) for _ in chats], *["" for _ in stats], state]

    outputs = [*chats, *stats, *columns]
    params = [shared.temperature, shared.max_tokens]
    send_event = send.click(
        run, [contenders, prompt, system, *params, session], [*outputs, prompt, session], api_name="compare_run"
    )
    prompt.submit(
        run, [contenders, prompt, system, *params, session], [*outputs, prompt, session], api_visibility="private"
    )
    regen.click(regenerate, [side, *params, session], [*outputs, session], api_name="compare_regenerate")
    clear.click(reset, [session], [*chats, *stats, session], api_visibility="private")
    return {"contenders": contenders, "session": session, "send_event": send_event, "chats": chats}


def create_blind_panel(shared: CompareShared) -> dict[str, Any]:
    """Two hidden contenders from a pool; vote; reveal."""
    ctx = shared.ctx
    choices = shared.choices()
    gr.Markdown(
        "The studio picks two contenders from the pool and hides their names until you vote. "
        "Votes feed the leaderboard and the preference data."
    )
    with gr.Row():
        pool = gr.Dropdown(
            choices,
            value=choices[: min(3, len(choices))],
            multiselect=True,
            allow_custom_value=True,
            label="Pool",
            elem_id="compare-blind-pool",
            scale=4,
        )
        shared.language_filter([pool], elem_id="compare-blind-language", api_name="compare_filter_pool", keep=2)
    shared.pickers.append(pool)
    state = gr.State(None)
    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="compare-blind-prompt")
    start = gr.Button("Start battle", variant="primary", elem_id="compare-blind-start")
    with gr.Row(equal_height=True):
        with gr.Column():
            chat_a = gr.Chatbot(label="Model A", height=320, elem_id="compare-blind-a")
            stats_a = gr.Markdown("", elem_id="compare-blind-stats-a")
        with gr.Column():
            chat_b = gr.Chatbot(label="Model B", height=320, elem_id="compare-blind-b")
            stats_b = gr.Markdown("", elem_id="compare-blind-stats-b")
    with gr.Row():
        vote = gr.Radio(list(VOTE_CHOICES), label="Your vote", elem_id="compare-vote")
        note = gr.Textbox(label="Note (optional)", lines=1, elem_id="compare-vote-note")
        submit = gr.Button("Submit vote", variant="primary", elem_id="compare-vote-submit")
    reveal = gr.Markdown("", elem_id="compare-reveal")

    @handle_errors
    def battle(
        picked: list[str] | None,
        text: str,
        temperature: float,
        max_tokens: float,
        use_case: str | None,
        tags: str,
        request: gr.Request = None,  # type: ignore[assignment]
    ) -> Iterator[list[Any]]:
        """Stream both hidden replies; only replies and figures go to the browser, never the names."""
        uc, tag_list = labels(use_case, tags)
        user = [{"role": "user", "content": (text or "").strip()}]
        running = battles.blind_battle(
            ctx.engines, ctx.db, picked or [], text, sampling(temperature, max_tokens),
            use_case=uc, tags=tag_list, owner=_owner(request),
        )  # fmt: skip
        for views, current in running:
            done = current.battle_id is not None
            status = "Vote for the better reply." if done else "Generating…"
            yield [
                chat_of(user, views[0]), chat_of(user, views[1]), stats_of(views[0]), stats_of(views[1]),
                status, gr.update(value=None), current,
            ]  # fmt: skip

    @handle_errors
    def cast(choice: str | None, text: str, current: BlindBattle | None) -> list[Any]:
        """Record the vote and reveal who was who."""
        if current is None or current.battle_id is None:
            raise gr.Error("Start a battle and let both replies finish before voting.")
        if current.voted:
            raise gr.Error("You already voted on this battle; start a new one.")
        row = battles.cast_vote(ctx.db, current.battle_id, choice or "", text or "")
        current.voted = True
        return [battles.reveal_text(row), "", current]

    start_event = start.click(
        battle,
        [pool, prompt, shared.temperature, shared.max_tokens, shared.use_case, shared.tags],
        [chat_a, chat_b, stats_a, stats_b, reveal, vote, state],
        api_name="compare_blind",
    )
    vote_event = submit.click(cast, [vote, note, state], [reveal, note, state], api_name="compare_vote")
    return {"pool": pool, "vote_event": vote_event, "start_event": start_event}


def create_batch_panel(shared: CompareShared) -> dict[str, Any]:
    """A list of prompts through two configs → a table of paired outputs, voted on in sequence."""
    ctx = shared.ctx
    choices = shared.choices()
    with gr.Row():
        side_a = gr.Dropdown(
            choices, value=choices[0] if choices else None, allow_custom_value=True, label="A",
            elem_id="compare-batch-a",
        )  # fmt: skip
        side_b = gr.Dropdown(
            choices, value=choices[1] if len(choices) > 1 else None, allow_custom_value=True, label="B",
            elem_id="compare-batch-b",
        )  # fmt: skip
        shared.language_filter(
            [side_a, side_b], elem_id="compare-batch-language", api_name="compare_filter_sides", keep=1
        )
    shared.pickers += [side_a, side_b]
    prompts = gr.Textbox(label="Prompts (one per line)", lines=5, elem_id="compare-batch-prompts")
    run_btn = gr.Button("Run batch", variant="primary", elem_id="compare-batch-run")
    progress = gr.Markdown("", elem_id="compare-batch-progress")
    batch_id = gr.Textbox(label="Batch id", interactive=False, elem_id="compare-batch-id")
    table = gr.Dataframe(headers=BATCH_COLUMNS, interactive=False, wrap=True, elem_id="compare-batch-table")
    gr.Markdown("#### Vote in sequence")
    current_id = gr.Textbox(label="Battle", interactive=False, elem_id="compare-batch-battle")
    current = gr.Markdown("", elem_id="compare-batch-current")
    with gr.Row():
        vote = gr.Radio(list(VOTE_CHOICES), label="Vote", elem_id="compare-batch-vote")
        vote_btn = gr.Button("Vote & next", elem_id="compare-batch-vote-submit")

    def rows(bid: str) -> list[list[Any]]:
        return [
            [b.position + 1, b.prompt, b.reply_a, b.reply_b, b.winner or ""] for b in battles.batch_battles(ctx.db, bid)
        ]

    def show(bid: str) -> tuple[str, str]:
        nxt = battles.next_unvoted(ctx.db, bid)
        if nxt is None:
            return "", "All pairs of this batch are voted."
        return nxt.id, f"**Prompt {nxt.position + 1}:** {nxt.prompt}\n\n**A:** {nxt.reply_a}\n\n**B:** {nxt.reply_b}"

    @handle_errors
    def run(
        a: str, b: str, text: str, temperature: float, max_tokens: float, use_case: str | None, tags: str
    ) -> Iterator[list[Any]]:
        """Run every prompt through A and B; the table grows as pairs finish."""
        uc, tag_list = labels(use_case, tags)
        items = battles.parse_prompts(text)
        params = sampling(temperature, max_tokens)
        yield [f"0/{len(items)} prompts…", "", gr.update(), "", ""]
        for step in battles.run_batch(ctx.engines, ctx.db, a, b, items, params, use_case=uc, tags=tag_list):
            yield [f"{step.done}/{step.total} prompts", step.batch_id, rows(step.batch_id), "", ""]
            last = step.batch_id
        yield [f"done: {len(items)} pairs", last, rows(last), *show(last)]

    @handle_errors
    def cast(bid: str, battle_id: str, choice: str | None) -> list[Any]:
        """Vote on the current pair and move to the next unvoted one."""
        if not battle_id:
            raise gr.Error("Nothing to vote on: run a batch first.")
        battles.cast_vote(ctx.db, battle_id, choice or "")
        return [rows(bid), *show(bid), gr.update(value=None)]

    run_btn.click(
        run,
        [side_a, side_b, prompts, shared.temperature, shared.max_tokens, shared.use_case, shared.tags],
        [progress, batch_id, table, current_id, current],
        api_name="compare_batch_run",
    )
    vote_event = vote_btn.click(
        cast, [batch_id, current_id, vote], [table, current_id, current, vote], api_name="compare_batch_vote"
    )
    return {"vote_event": vote_event, "sides": [side_a, side_b, prompts]}
