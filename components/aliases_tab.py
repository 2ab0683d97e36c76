"""Aliases tab: list, search, create, edit, clone, delete, import, export and try model aliases. Wiring only:
every action is one call into ``studio.aliases``."""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from components.common import form_validator, handle_errors
from components.tables import column_widths
from studio.aliases.listing import TABLE_COLUMNS, alias_rows, alias_stats, usage_last_24h
from studio.aliases.resolve import validate_alias
from studio.aliases.schema import AliasConfig, ContextParams
from studio.aliases.service import (
    INTEGER_FIELDS,
    AliasFormTarget,
    alias_details,
    build_alias_dict,
    clone_alias,
    export_alias,
    find_alias,
    import_alias_files,
    parse_form_number,
    save_checked,
)
from studio.aliases.store import dump_alias_yaml
from studio.aliases.templates import template_choices
from studio.context import AppContext
from studio.errors import ValidationError
from studio.files import write_text_atomic
from studio.inference.base import ChatMessage
from studio.inference.params import field_help
from studio.playground.chat import parse_stop_sequences
from studio.settings import Settings, generation_defaults

F = TypeVar("F", bound=Callable[..., Any])
#: px per column (components/tables.py): names and paths wrap, the short columns keep room for their headers
ALIAS_COLUMN_WIDTHS = {
    "Family": 110,
    "Name": 210,
    "Source": 95,
    "Repository": 210,
    "Filename": 180,
    "Quant": 90,
    "Chat template": 130,
    "Key params": 180,
    "Requests 24h": 115,
    "Problem": 260,
}
OWN_TEMPLATE = "(model's own)"
REQUEST_FIELDS = [
    ("temperature", "Temperature"),
    ("top_p", "Top-p"),
    ("top_k", "Top-k"),
    ("frequency_penalty", "Frequency penalty"),
    ("presence_penalty", "Presence penalty"),
    ("repetition_penalty", "Repetition penalty"),
    ("max_tokens", "Max tokens"),
    ("seed", "Seed"),
]
CONTEXT_FIELDS = [
    ("n_threads", "n_threads"),
    ("n_ctx", "n_ctx"),
    ("n_parallel", "n_parallel"),
    ("n_predict", "n_predict"),
    ("n_keep", "n_keep"),
    ("n_seed", "n_seed"),
]


FORM_NAMES = [
    "name",
    "model",
    "chat_template",
    *[k for k, _ in REQUEST_FIELDS],
    "stop",
    "user",
    *[k for k, _ in CONTEXT_FIELDS],
    "engine",
    "dtype",
]
# the schema field (a ValidationError's ``param``) behind each form input, in FORM_NAMES order, for the validator
# that marks wrong fields; None for the fields of the collapsed "Performance & Resources" section, where a mark
# would go unseen (their errors come as a toast)
FORM_PARAMS = [
    "alias",
    "repo",
    "chat_template",
    *[f"request_params.{k}" for k, _ in REQUEST_FIELDS],
    "request_params.stop",
    "request_params.user",
    *[None for _ in CONTEXT_FIELDS],
    None,
    None,
]


def _form_signature(*leading: str) -> Callable[[F], F]:
    """Give a ``(*values)`` handler named parameters, so the API page and gradio_client show
    ``name, model, chat_template, temperature, ...`` instead of ``param_1, param_2, ...``."""

    def deco(fn: F) -> F:
        params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in (*leading, *FORM_NAMES)]
        fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return fn

    return deco


def _template_choices(settings: Settings) -> list[str]:
    """The model's own, ``embedded``, the built-ins, then the user's ``STUDIO_HOME/chat_templates/*.jinja``."""
    return [OWN_TEMPLATE, *template_choices(settings)]


def _report_md(errors: list[ValidationError], warnings: list[str], ok_text: str = "") -> str:
    lines = [f"**Error:** {e.user_message}" for e in errors]
    lines += [f"**Warning:** {w}" for w in warnings]
    if not errors and ok_text:
        lines.insert(0, ok_text)
    return "\n\n".join(lines)


def create_aliases_tab(ctx: AppContext) -> dict[str, Any]:
    resolver = ctx.engines.resolver
    defaults = generation_defaults()
    model_ids = [e.id for e in ctx.registry.list_models() if e.problem is None]
    default_model = model_ids[0] if model_ids else None

    with gr.Tab("Aliases", id="aliases") as tab:
        stats = gr.Markdown(label="Alias statistics", elem_id="aliases-stats")
        with gr.Row():
            search = gr.Textbox(label="Search", placeholder="name, repository, file or template", scale=3)
            source = gr.Radio(["all", "user", "model"], value="all", label="Source", scale=2)
            sort = gr.Dropdown(["name", "source", "repository", "requests"], value="name", label="Sort by", scale=1)
            group = gr.Checkbox(label="Group by model family", value=False, scale=1)
            refresh_btn = gr.Button("Refresh", elem_id="aliases-refresh", scale=1)
        table = gr.Dataframe(
            headers=TABLE_COLUMNS,
            column_widths=column_widths(TABLE_COLUMNS, ALIAS_COLUMN_WIDTHS),
            interactive=False,
            wrap=True,
            elem_id="aliases-table",
            label="Aliases",
        )
        with gr.Accordion("Selected alias (click a row)", open=False, elem_id="aliases-details-box") as details_box:
            details = gr.Code(language="yaml", label="Full details", elem_id="aliases-details", interactive=False)
        with gr.Row():
            selected = gr.Textbox(label="Selected alias", interactive=False, elem_id="aliases-selected", scale=2)
            edit_btn = gr.Button("Edit", elem_id="aliases-edit", scale=1)
            clone_name = gr.Textbox(
                label="Clone as", placeholder="new alias name", elem_id="aliases-clone-name", scale=2
            )
            clone_btn = gr.Button("Clone", elem_id="aliases-clone", scale=1)
            delete_btn = gr.Button("Delete…", variant="stop", elem_id="aliases-delete", scale=1)
            export_btn = gr.Button("Export YAML", elem_id="aliases-export", scale=1)
            private_btn = gr.Button("Private/shared", elem_id="aliases-private", scale=1)
        with gr.Row(visible=False, elem_id="aliases-confirm-row") as confirm_row:
            confirm_text = gr.Markdown()
            confirm_btn = gr.Button("Yes, delete", variant="stop", elem_id="aliases-confirm-delete")
            cancel_btn = gr.Button("Cancel", elem_id="aliases-cancel-delete")
        export_file = gr.File(label="Exported alias", interactive=False, height=60, elem_id="aliases-export-file")

        with gr.Accordion("Create / edit alias", open=True, elem_id="aliases-form"):
            editing = gr.State(AliasFormTarget())  # which saved alias a Save overwrites or renames
            mode = gr.Markdown("Creating a **new** alias.", label="Form mode", elem_id="aliases-mode")
            with gr.Row():
                name = gr.Textbox(
                    label="Alias name",
                    info=AliasConfig.model_fields["alias"].description,
                    placeholder="e.g. smol:precise",
                    elem_id="aliases-name",
                )
                model = gr.Dropdown(
                    model_ids,
                    value=default_model,
                    label="Model",
                    info="A model the registry found (bundled, local folders, HF cache, GGUF files) or a local path.",
                    allow_custom_value=True,
                    elem_id="aliases-model",
                )
                template = gr.Dropdown(
                    _template_choices(ctx.settings),
                    value=OWN_TEMPLATE,
                    label="Chat template",
                    info=AliasConfig.model_fields["chat_template"].description,
                    allow_custom_value=True,
                    elem_id="aliases-template",
                )
            with gr.Accordion("Generation Control", open=True):
                req_inputs: list[gr.components.Component] = []
                with gr.Row():
                    for key, label in REQUEST_FIELDS:
                        default = defaults.get(key)
                        shown = "random" if key == "seed" and default is None else default
                        req_inputs.append(
                            gr.Textbox(
                                value="",
                                label=label,
                                placeholder=f"default: {shown}",
                                info=f"{field_help(key)} Default: {shown}.",
                                elem_id=f"aliases-{key}",
                                min_width=180,
                            )
                        )
                with gr.Row():
                    stop = gr.Textbox(
                        label="Stop sequences",
                        info=field_help("stop") + " One per line. Default: the template's stop strings.",
                        lines=2,
                        elem_id="aliases-stop",
                    )
                    user = gr.Textbox(
                        label="User", info="End-user identifier sent with requests.", elem_id="aliases-user"
                    )
            with gr.Accordion("Performance & Resources", open=False):
                ctx_inputs: list[gr.components.Component] = []
                with gr.Row():
                    for key, label in CONTEXT_FIELDS:
                        ctx_inputs.append(
                            gr.Textbox(
                                value="",
                                label=label,
                                placeholder="engine default",
                                info=field_help(key, ContextParams) + " Default: the engine's.",
                                elem_id=f"aliases-{key}",
                                min_width=180,
                            )
                        )
                with gr.Row():
                    engine = gr.Dropdown(
                        ["", "auto", "transformers", "vllm", "llamacpp", "onnxruntime", "remote"],
                        value="",
                        label="Engine",
                        info=str(ContextParams.model_fields["engine"].description) + " Default: auto.",
                        elem_id="aliases-engine",
                    )
                    dtype = gr.Dropdown(
                        ["", "auto", "bfloat16", "float16", "float32"],
                        value="",
                        label="dtype",
                        info=str(ContextParams.model_fields["dtype"].description) + " Default: auto.",
                        elem_id="aliases-dtype",
                    )
            with gr.Row():
                validate_btn = gr.Button("Validate", elem_id="aliases-validate")
                save_btn = gr.Button("Save alias", variant="primary", elem_id="aliases-save")
                new_btn = gr.Button("New (clear form)", elem_id="aliases-new")
            report = gr.Markdown(label="Validation", elem_id="aliases-report")
            with gr.Accordion("Try before saving", open=False, elem_id="aliases-try-box"):
                try_prompt = gr.Textbox(
                    label="Prompt", value="What is the capital of France?", lines=2, elem_id="aliases-try-prompt"
                )
                try_btn = gr.Button("Try", elem_id="aliases-try")
                try_reply = gr.Textbox(label="Reply", lines=4, interactive=False, elem_id="aliases-try-reply")
                try_stats = gr.Markdown(label="Statistics", elem_id="aliases-try-stats")
        with gr.Accordion("Import alias files", open=False):
            import_files = gr.File(
                label="YAML files", file_count="multiple", file_types=[".yaml", ".yml"], elem_id="aliases-import-files"
            )
            import_btn = gr.Button("Import", elem_id="aliases-import")

    form_inputs = [name, model, template, *req_inputs, stop, user, *ctx_inputs, engine, dtype]

    def form_dict(*values: Any) -> dict[str, Any]:
        n, m, t, *rest = values
        req_vals = rest[: len(REQUEST_FIELDS)]
        stop_text, user_text = rest[len(REQUEST_FIELDS)], rest[len(REQUEST_FIELDS) + 1]
        ctx_vals = rest[len(REQUEST_FIELDS) + 2 : len(REQUEST_FIELDS) + 2 + len(CONTEXT_FIELDS)]
        eng, dt = rest[-2], rest[-1]
        request: dict[str, Any] = {
            k: parse_form_number(v, f"request_params.{k}", integer=k in INTEGER_FIELDS)
            for (k, _), v in zip(REQUEST_FIELDS, req_vals, strict=True)
        }
        request["stop"] = parse_stop_sequences(stop_text) or None
        request["user"] = user_text or None
        context: dict[str, Any] = {
            k: parse_form_number(v, f"context_params.{k}", integer=True)
            for (k, _), v in zip(CONTEXT_FIELDS, ctx_vals, strict=True)
        }
        context["engine"] = eng or None
        context["dtype"] = dt or None
        if not (n or "").strip():
            raise ValidationError("the alias needs a name", param="alias")
        return build_alias_dict(
            resolver,
            n,
            m or "default",
            template=None if t in (None, "", OWN_TEMPLATE) else t,
            request=request,
            context=context,
        )

    def form_errors(_target: AliasFormTarget, *values: Any) -> list[ValidationError]:
        """What Validate and Save would refuse in the values, for the validator that marks the fields (writes
        nothing). Whether the name is taken is left to the handler, which knows the alias this form is bound to:
        a validator gets the States' initial values (see ``form_validator``)."""
        data = form_dict(*values)
        return validate_alias(data, resolver, editing=data["alias"])[1].errors

    def try_errors(prompt: str, *values: Any) -> list[ValidationError]:
        data = form_dict(*values) if (values[0] or "").strip() else form_dict("(unsaved)", *values[1:])
        problems = validate_alias(data, resolver, editing=data["alias"])[1].errors
        if not (prompt or "").strip():
            problems.append(ValidationError("type a prompt to try", param="prompt"))
        return problems

    def selection_errors(alias_name: str) -> None:
        if not alias_name:
            raise ValidationError("click a row in the table first", param="alias")

    def listing(query: str, src: str, sort_by: str, grouped: bool) -> tuple[Any, str]:
        views = resolver.list_aliases()
        broken = resolver.broken_files()  # shown with their error, never left out
        usage = usage_last_24h(ctx.db)
        headers = (["Family"] if grouped else []) + TABLE_COLUMNS
        rows = alias_rows(
            views,
            usage,
            query=query or "",
            source=src or "all",
            sort=sort_by,  # type: ignore[arg-type]
            group_by_family=grouped,
            broken=broken,
        )
        shown = gr.Dataframe(value=rows, headers=headers, column_widths=column_widths(headers, ALIAS_COLUMN_WIDTHS))
        return shown, alias_stats(views, usage, broken=len(broken)).summary()

    @handle_errors
    def list_aliases(query: str, src: str, sort_by: str, grouped: bool) -> tuple[Any, str]:
        """The alias table (filtered and sorted) and the quick statistics."""
        return listing(query, src, sort_by, grouped)

    def on_select(evt: gr.SelectData, data: Any) -> tuple[str, str]:
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        values = data.values.tolist() if hasattr(data, "values") else data
        row_values = values[row]
        # with grouping the first column is the family
        alias_name = row_values[1] if len(row_values) == len(TABLE_COLUMNS) + 1 else row_values[0]
        return alias_name, alias_details(resolver, alias_name)  # a broken file: its error above its text

    @_form_signature("editing")
    @handle_errors
    def validate(target: AliasFormTarget, *values: Any) -> str:
        """Check the form without saving: errors name their field; conflicts are warnings."""
        try:
            data = form_dict(*values)
        except ValidationError as exc:
            return _report_md([exc], [])
        _, rep = validate_alias(data, resolver, editing=target.replaces(data["alias"]))
        return _report_md(rep.errors, rep.warnings, "valid — ready to save")

    @_form_signature("editing")
    @handle_errors
    def save(target: AliasFormTarget, *values: Any) -> tuple[str, Any, str, AliasFormTarget, str]:
        """Validate and save the form as a user alias (YAML in STUDIO_HOME/aliases). A new name creates a new
        alias; only an alias opened with Edit is renamed."""
        data = form_dict(*values)
        cfg, rep, path = save_checked(resolver, data, editing=target.replaces(data["alias"]))
        for w in rep.warnings:
            gr.Warning(w)
        gr.Info(f"Saved alias '{cfg.alias}' to {path.name}")
        table_update, stats_md = listing("", "all", "name", False)
        saved = target.after_save(cfg.alias)
        if saved.editing is not None:
            mode_md = f"Editing **{cfg.alias}** (user alias). Save writes it back; renaming moves the file."
        else:
            mode_md = f"Saved **{cfg.alias}**. Save again to update it; another name creates a new alias."
        return _report_md([], rep.warnings, f"saved to {path}"), table_update, stats_md, saved, mode_md

    def load_for_edit(alias_name: str) -> list[Any]:
        cfg, src = find_alias(resolver, alias_name)
        if src != "user":
            raise ValidationError(
                f"'{alias_name}' is a model alias (read-only); clone it into a user alias to change it", param="alias"
            )
        rp, cp = cfg.request_params, cfg.context_params
        entry = resolver.entry_for(cfg)
        values: list[Any] = [cfg.alias, entry.id, cfg.chat_template or OWN_TEMPLATE]
        values += ["" if getattr(rp, k) is None else str(getattr(rp, k)) for k, _ in REQUEST_FIELDS]
        values += ["\n".join(s.replace("\n", "\\n") for s in (rp.stop or [])), rp.user or ""]
        values += ["" if getattr(cp, k) is None else str(getattr(cp, k)) for k, _ in CONTEXT_FIELDS]
        values += [cp.engine or "", cp.dtype or ""]
        return [
            *values,
            AliasFormTarget(editing=cfg.alias),
            f"Editing **{cfg.alias}** (user alias). Save writes it back; renaming moves the file.",
        ]

    @handle_errors
    def edit(alias_name: str) -> list[Any]:
        if not alias_name:
            raise ValidationError("click a row in the table first", param="alias")
        return load_for_edit(alias_name)

    def new_form() -> list[Any]:
        return [
            "",
            default_model,
            OWN_TEMPLATE,
            *([""] * len(REQUEST_FIELDS)),
            "",
            "",
            *([""] * len(CONTEXT_FIELDS)),
            "",
            "",
            AliasFormTarget(),
            "Creating a **new** alias.",
        ]

    @handle_errors
    def clone(source_name: str, new_name: str) -> tuple[Any, str, str]:
        """Copy a user or model alias under a new name (as a user alias)."""
        if not source_name:
            raise ValidationError("pick the alias to clone (click a row)", param="alias")
        cfg, _rep, path = clone_alias(resolver, source_name, (new_name or "").strip())
        gr.Info(f"Cloned '{source_name}' as '{cfg.alias}' ({path.name})")
        table_update, stats_md = listing("", "all", "name", False)
        return table_update, stats_md, cfg.alias

    @handle_errors
    def toggle_private(alias_name: str) -> tuple[Any, str, str]:
        """Make a user alias private (only its owner and admins see and use it) or share it with the team."""
        if not alias_name:
            raise ValidationError("click a row in the table first", param="alias")
        cfg = resolver.store.set_private(alias_name, not resolver.store.require(alias_name).private)
        state = "private: only its owner and admins see and use it" if cfg.private else "shared with the team"
        gr.Info(f"Alias '{alias_name}' is now {state}")
        table_update, stats_md = listing("", "all", "name", False)
        return table_update, stats_md, dump_alias_yaml(cfg)

    def ask_delete(alias_name: str) -> tuple[Any, str]:
        if not alias_name:
            raise gr.Error("Click a row in the table first.")
        return gr.Row(visible=True), f"Delete user alias **{alias_name}**? Its YAML file is removed."

    @handle_errors
    def delete(alias_name: str) -> tuple[Any, str, Any, str]:
        """Delete a user alias (its YAML file)."""
        path = resolver.store.delete(alias_name)
        gr.Info(f"Deleted alias '{alias_name}' ({path.name})")
        table_update, stats_md = listing("", "all", "name", False)
        return table_update, stats_md, gr.Row(visible=False), ""

    @handle_errors
    def export(alias_name: str) -> str:
        """Download an alias as a YAML file."""
        if not alias_name:
            raise ValidationError("click a row in the table first", param="alias")
        text = export_alias(resolver, alias_name)
        from studio.aliases.store import alias_filename

        out = Path(tempfile.mkdtemp(prefix="alias-export-", dir=ctx.settings.home / "exports")) / alias_filename(
            alias_name
        )
        write_text_atomic(out, text)
        return str(out)

    @handle_errors
    def do_import(files: list[Any] | None) -> tuple[Any, str, str]:
        """Import one or many alias YAML files; all are checked before any is written."""
        paths = [Path(f if isinstance(f, str) else getattr(f, "name", f)) for f in (files or [])]
        if not paths:
            raise ValidationError("choose one or more .yaml files first", param="file")
        done = import_alias_files(resolver, paths)
        warnings = [w for _, rep in done for w in rep.warnings]
        gr.Info(f"Imported {len(done)} alias(es): {', '.join(c.alias for c, _ in done)}")
        table_update, stats_md = listing("", "all", "name", False)
        return table_update, stats_md, _report_md([], warnings, f"imported {len(done)} alias(es)")

    @_form_signature("prompt")
    @handle_errors
    def try_alias(prompt: str, *values: Any) -> Iterator[tuple[str, str]]:
        """Send a prompt with the unsaved configuration; stream the reply and its statistics."""
        data = form_dict(*values) if (values[0] or "").strip() else form_dict("(unsaved)", *values[1:])
        cfg = AliasConfig.model_validate(data)
        _, rep = validate_alias(cfg, resolver, editing=cfg.alias)
        rep.raise_first()
        if not (prompt or "").strip():
            raise ValidationError("type a prompt to try", param="prompt")
        handle = ctx.engines.start_alias_trial(cfg, [ChatMessage("user", prompt)])
        yield "", "Generating…"
        for _ in handle:
            yield handle.result.text, f"Generating… {len(handle.result.tokens)} tokens"
        yield handle.result.text, handle.result.stats.summary()

    list_inputs = [search, source, sort, group]
    for comp in (search, source, sort, group):
        comp.change(list_aliases, list_inputs, [table, stats], api_visibility="private")
    refresh_btn.click(list_aliases, list_inputs, [table, stats], api_name="aliases_list")
    # opening the tab reads the table and the request figures again: requests served since the page loaded
    # (Playground, API) count at once, not only after Refresh (issue 15, point 5)
    tab.select(list_aliases, list_inputs, [table, stats], api_visibility="private", show_progress="hidden")
    # and the template choices: a .jinja file added to STUDIO_HOME/chat_templates shows up without a restart
    tab.select(
        lambda: gr.Dropdown(choices=_template_choices(ctx.settings)),
        None,
        [template],
        api_visibility="private",
        show_progress="hidden",
    )
    table.select(on_select, [table], [selected, details], api_visibility="private")
    # a refused form keeps no stale "valid" or "saved" line under the marked fields
    for button in (validate_btn, save_btn):
        button.click(None, None, [report], js="() => ''", api_visibility="private")
    form_check = form_validator(form_errors, [None, *FORM_PARAMS])
    validate_btn.click(validate, [editing, *form_inputs], [report], api_name="aliases_validate", validator=form_check)
    save_event = save_btn.click(
        save,
        [editing, *form_inputs],
        [report, table, stats, editing, mode],
        api_name="aliases_save",
        validator=form_check,
    )
    edit_btn.click(edit, [selected], [*form_inputs, editing, mode], api_visibility="private")
    new_btn.click(new_form, None, [*form_inputs, editing, mode], api_visibility="private")
    clone_event = clone_btn.click(clone, [selected, clone_name], [table, stats, selected], api_name="aliases_clone")
    delete_btn.click(ask_delete, [selected], [confirm_row, confirm_text], api_visibility="private")
    private_btn.click(toggle_private, [selected], [table, stats, details], api_name="aliases_private")
    cancel_btn.click(lambda: gr.Row(visible=False), None, [confirm_row], api_visibility="private")
    delete_event = confirm_btn.click(
        delete, [selected], [table, stats, confirm_row, selected], api_name="aliases_delete"
    )
    export_btn.click(
        export,
        [selected],
        [export_file],
        api_name="aliases_export",
        validator=form_validator(selection_errors, ["alias"]),
    )
    import_event = import_btn.click(do_import, [import_files], [table, stats, report], api_name="aliases_import")
    try_btn.click(
        try_alias,
        [try_prompt, *form_inputs],
        [try_reply, try_stats],
        api_name="aliases_try",
        validator=form_validator(try_errors, ["prompt", *FORM_PARAMS]),
    )

    return {
        "table": table,
        "stats": stats,
        "list_inputs": list_inputs,
        "list_fn": list_aliases,
        "refresh": refresh_btn,
        "changed_events": [save_event, clone_event, delete_event, import_event],
        "details_box": details_box,
    }
