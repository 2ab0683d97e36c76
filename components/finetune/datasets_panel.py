"""Fine-Tune "Datasets": upload labeled examples (format detected, validation report before anything is
accepted, column mapping correctable), dataset cards, versions, preview, token-length histogram and language mix,
and datasets made from saved Playground conversations. Wiring only: ``ctx.datasets`` and ``studio.training.service``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from components.common import handle_errors
from components.finetune.render import (
    CSS,
    FORMAT_HELP,
    UPLOAD_HELP,
    as_table,
    dataset_cards_html,
    error_rows,
    report_markdown,
    token_stats_markdown,
)
from studio.context import AppContext
from studio.datasets.parse import MAX_UPLOAD_BYTES
from studio.errors import ValidationError
from studio.training.service import (
    LATEST,
    VERSION_COLUMNS,
    TokenizerCache,
    base_model_choices,
    conversation_choices,
    dataset_token_stats,
    format_choices,
    mapping_template,
    mapping_yaml,
    parse_mapping,
    token_histogram_figure,
    version_choices,
    version_rows,
)

ERROR_COLUMNS = ["Row", "Line", "Field", "Problem"]
ON_INVALID = [("Reject the whole file if any row is invalid", "reject"), ("Drop invalid rows, import the rest", "drop")]


def _file_path(file: Any) -> Path:
    if file is None:
        raise ValidationError("choose a JSONL, CSV or JSON file first", param="file")
    return Path(file if isinstance(file, str) else getattr(file, "name", file))


def create_datasets_panel(ctx: AppContext, tokenizers: TokenizerCache) -> dict[str, Any]:
    store = ctx.datasets
    models = base_model_choices(ctx.engines.resolver)
    default_model = models[0] if models else None
    names = store.names()
    first_cards = store.list_cards()  # read again on every page load (see finetune_tab)
    newest = first_cards[0].name if first_cards else None

    gr.Markdown(
        "## Supervised Training Datasets\nManage labeled examples for supervised fine-tuning (input → output pairs).",
        elem_id="finetune-datasets-title",
    )
    # -- upload ----------------------------------------------------------------------------------------------
    with gr.Accordion("Upload Supervised Training Dataset", open=True, elem_id="finetune-upload-box") as upload_box:
        gr.Markdown("Provide labeled examples to teach your AI model through supervised learning.")
        with gr.Row():
            with gr.Column(scale=3):
                gr.Markdown(UPLOAD_HELP)
                file = gr.File(
                    label="Labeled examples (JSONL, CSV or JSON)",
                    file_types=[".jsonl", ".csv", ".json"],
                    elem_id="finetune-upload-file",
                    height=120,
                )
                with gr.Row():
                    name_box = gr.Textbox(
                        label="Dataset name",
                        info="A new name creates a dataset; an existing name adds a version (identical content adds "
                        "none).",
                        elem_id="finetune-upload-name",
                    )
                    description_box = gr.Textbox(label="Description (optional)", elem_id="finetune-upload-description")
                with gr.Row():
                    fmt = gr.Dropdown(
                        format_choices(),
                        value="auto",
                        label="Format",
                        info="Detected on upload; choose another to correct it (fills the mapping with that format's "
                        "column names).",
                        elem_id="finetune-upload-format",
                    )
                    on_invalid_box = gr.Radio(
                        ON_INVALID, value="reject", label="Invalid rows", elem_id="finetune-upload-on-invalid"
                    )
                mapping_box = gr.Code(
                    language="yaml",
                    lines=4,
                    interactive=True,
                    label="Column mapping (which column plays which part; empty = detect; or paste LLaMA-Factory's "
                    "dataset_info.json entry)",
                    elem_id="finetune-upload-mapping",
                )
                with gr.Row():
                    length_model = gr.Dropdown(
                        models,
                        value=default_model,
                        allow_custom_value=True,
                        label="Base model (tokenizer for lengths)",
                        info="Token lengths are counted with this model's tokenizer and chat template.",
                        elem_id="finetune-upload-model",
                    )
                    max_length_box = gr.Number(
                        value=0,
                        precision=0,
                        label="Length limit (tokens)",
                        info="Examples longer than this count as invalid; 0 = no length check.",
                        elem_id="finetune-upload-max-length",
                    )
                with gr.Row():
                    inspect_btn = gr.Button("Inspect", elem_id="finetune-inspect")
                    import_btn = gr.Button("Import", variant="primary", elem_id="finetune-import")
            with gr.Column(scale=2):
                gr.Markdown(FORMAT_HELP)
        report = gr.Markdown(label="Validation report", elem_id="finetune-report")
        errors = gr.Dataframe(
            headers=ERROR_COLUMNS,
            interactive=False,
            wrap=True,
            max_height=260,
            label="Row errors",
            elem_id="finetune-report-errors",
        )
        with gr.Accordion("Report as JSON", open=False):
            report_json = gr.JSON(label="Validation report", elem_id="finetune-report-json")
        import_status = gr.Markdown(elem_id="finetune-import-status")

    # -- from conversations ----------------------------------------------------------------------------------
    with gr.Accordion(
        "Import from Playground conversations", open=False, elem_id="finetune-conversations-box"
    ) as conversations_box:
        gr.Markdown(
            "Each chosen conversation becomes one labeled example (its messages, ending with the last assistant reply)."
        )
        with gr.Row():
            conversations = gr.Dropdown(
                choices=conversation_choices(ctx.db),
                value=[],
                multiselect=True,
                allow_custom_value=True,  # a script may pass any conversation id, listed here or not
                label="Saved conversations",
                info="Pick one or more; each becomes one labeled example.",
                elem_id="finetune-conversations",
                scale=4,
            )
            conv_refresh = gr.Button("Refresh", scale=0, min_width=110, elem_id="finetune-conversations-refresh")
        with gr.Row():
            conv_name_box = gr.Textbox(label="Dataset name", elem_id="finetune-conversations-name")
            conv_description_box = gr.Textbox(label="Description (optional)")
            conv_on_invalid_box = gr.Radio(ON_INVALID, value="reject", label="Conversations without a reply")
        conv_btn = gr.Button("Create dataset from conversations", elem_id="finetune-conversations-import")
        conv_status = gr.Markdown(elem_id="finetune-conversations-status")

    # -- list and details ------------------------------------------------------------------------------------
    with gr.Row():
        gr.Markdown("### Your datasets")
        list_btn = gr.Button("Refresh", scale=0, min_width=110, elem_id="finetune-datasets-refresh")
    cards = gr.HTML(dataset_cards_html(first_cards), css_template=CSS, elem_id="finetune-cards")
    with gr.Accordion("Datasets as JSON", open=False):
        cards_json = gr.JSON([c.model_dump(mode="json") for c in first_cards], elem_id="finetune-datasets-json")
    with gr.Row():
        selected = gr.Dropdown(
            names,
            value=newest,
            label="Dataset",
            info="Pick one to see its versions, a preview and its token lengths.",
            allow_custom_value=True,  # datasets imported after the page was built are valid too
            elem_id="finetune-dataset-select",
        )
        version_box = gr.Dropdown(
            version_choices(store, newest or ""),
            value=LATEST,
            label="Version",
            allow_custom_value=True,
            elem_id="finetune-dataset-version",
        )
        show_btn = gr.Button("Show", scale=0, min_width=100, elem_id="finetune-dataset-show")
        private_btn = gr.Button(
            "Private/shared",
            scale=0,
            min_width=150,
            elem_id="finetune-dataset-private",
        )
    private_md = gr.Markdown(elem_id="finetune-dataset-private-status")
    versions = gr.Dataframe(
        headers=list(VERSION_COLUMNS), interactive=False, label="Versions", elem_id="finetune-versions"
    )
    token_md = gr.Markdown(elem_id="finetune-token-stats")
    histogram = gr.Plot(label="Token lengths", elem_id="finetune-token-histogram")
    preview = gr.Dataframe(
        headers=["#", "system", "user", "assistant", "turns"],
        interactive=False,
        wrap=True,
        max_height=420,
        label="Preview",
        elem_id="finetune-preview",
    )

    # -- handlers --------------------------------------------------------------------------------------------
    def tokenizer_args(base_model: str | None, max_length: float | None) -> dict[str, Any]:
        if not max_length or int(max_length) <= 0:
            return {"tokenizer": None, "max_length": None}
        return {"tokenizer": tokenizers.get(base_model or "default"), "max_length": int(max_length)}

    @handle_errors
    def inspect(
        file: Any, mapping: str | None, base_model: str | None, max_length: float | None
    ) -> tuple[str, Any, str, Any, Any]:
        """Read and validate an upload without importing it: detected format and columns, row errors with row
        numbers, duplicates and counts. Returns (report, errors table, mapping YAML, report JSON, format)."""
        path = _file_path(file)
        report_data = store.inspect_upload(
            path,
            path.name,
            parse_mapping(mapping, path.name),
            max_bytes=MAX_UPLOAD_BYTES,
            **tokenizer_args(base_model, max_length),
        )
        return (
            report_markdown(report_data),
            as_table(error_rows(report_data), ERROR_COLUMNS),
            mapping_yaml(report_data.mapping),
            report_data.model_dump(mode="json"),
            report_data.format,
        )

    @handle_errors
    def on_upload(file: Any, base_model: str | None, max_length: float | None) -> tuple[Any, ...]:
        """A new file: detect its format afresh (the old mapping does not apply) and propose a name."""
        path = _file_path(file)
        shown = inspect(file, "", base_model, max_length)
        return (*shown, path.stem)

    def cards_outputs(current: str | None = None) -> tuple[str, Any, Any]:
        all_cards = store.list_cards()
        names_now = [c.name for c in sorted(all_cards, key=lambda c: c.name)]
        value = current if current in names_now else (all_cards[0].name if all_cards else None)
        return (
            dataset_cards_html(all_cards),
            [c.model_dump(mode="json") for c in all_cards],
            gr.Dropdown(choices=names_now, value=value),
        )

    @handle_errors
    def upload(
        file: Any,
        name: str,
        description: str | None,
        mapping: str | None,
        on_invalid: str | None,
        base_model: str | None,
        max_length: float | None,
    ) -> tuple[str, str, Any, Any]:
        """Import an upload as a new dataset (or a new version of ``name``) after validating it:
        ``on_invalid`` reject refuses a file with invalid rows, drop leaves them out. Returns (status, cards HTML,
        datasets JSON, dataset picker)."""
        path = _file_path(file)
        result = store.import_upload(
            (name or "").strip(),
            path,
            path.name,
            parse_mapping(mapping, path.name),
            on_invalid="drop" if on_invalid == "drop" else "reject",
            description=description or "",
            **tokenizer_args(base_model, max_length),
        )
        v = result.version
        if result.created:
            text = (
                f"Imported **{result.dataset.name}** version {v.number}: {v.num_examples} examples "
                f"({v.content_hash[:12]})"
            )
        else:
            text = f"**{result.dataset.name}** already has this content as version {v.number}; no new version"
        if result.report is not None and result.report.dropped_rows:
            text += f"; {result.report.dropped_rows} invalid row(s) dropped"
        if result.report is not None and result.report.duplicate_rows:
            text += f"; {result.report.duplicate_rows} duplicate(s) left out"
        gr.Info(text.replace("**", ""))
        return (text, *cards_outputs(result.dataset.name))

    def list_datasets() -> tuple[str, Any]:
        """Every dataset as cards (HTML) and as JSON (name, badge, examples, size, versions, token stats)."""
        html_text, data, _ = cards_outputs()
        return html_text, data

    @handle_errors
    def show_dataset(
        name: str | None, version: str | None, base_model: str | None, max_length: float | None
    ) -> tuple[Any, ...]:
        """One dataset version: the versions table, a preview table, token statistics with the version's language
        mix ("en 92% · hi 8%") and the histogram of token lengths with the base model's tokenizer."""
        if not name:
            raise ValidationError("choose a dataset", param="name")
        resolved = store.get_version(name, None if version in (None, "", LATEST) else int(str(version)))
        shown = store.preview(resolved, 20)
        stats = dataset_token_stats(
            store, tokenizers, name, resolved.number, base_model or "default", int(max_length) if max_length else None
        )
        languages = store.language_mix(resolved)
        return (
            as_table(version_rows(store, name), list(VERSION_COLUMNS)),
            as_table(shown.rows, shown.headers),
            f"Version {resolved.number}: {token_stats_markdown(stats)}\n\n**Languages:** {languages.summary()}",
            token_histogram_figure(stats),
        )

    def versions_for(dataset: str | None) -> Any:
        return gr.Dropdown(choices=version_choices(store, dataset or ""), value=LATEST)

    def refresh_conversations() -> Any:
        return gr.Dropdown(choices=conversation_choices(ctx.db), value=[])

    @handle_errors
    def import_conversations(
        conversation_ids: list[str] | None, name: str, description: str | None, on_invalid: str | None
    ) -> tuple[str, str, Any, Any]:
        """A supervised dataset (or a new version) from saved Playground conversations, one example each."""
        result = store.from_conversations(
            list(conversation_ids or []),
            (name or "").strip(),
            description or "",
            on_invalid="drop" if on_invalid == "drop" else "reject",
        )
        v = result.version
        text = (
            f"**{result.dataset.name}** version {v.number}: {v.num_examples} examples from conversations"
            if result.created
            else f"**{result.dataset.name}** already has these examples as version {v.number}"
        )
        gr.Info(text.replace("**", ""))
        return (text, *cards_outputs(result.dataset.name))

    def page_load() -> tuple[str, Any, Any]:
        """After a (re)load: the current cards and saved conversations."""
        html_text, data = list_datasets()
        return html_text, data, refresh_conversations()

    inspect_outputs = [report, errors, mapping_box, report_json, fmt]
    list_outputs = [cards, cards_json, selected]
    inspect_btn.click(
        inspect, [file, mapping_box, length_model, max_length_box], inspect_outputs, api_name="finetune_inspect"
    )
    file.upload(on_upload, [file, length_model, max_length_box], [*inspect_outputs, name_box], api_visibility="private")
    fmt.input(mapping_template, [fmt], [mapping_box], api_visibility="private", queue=False)
    upload_event = import_btn.click(
        upload,
        [file, name_box, description_box, mapping_box, on_invalid_box, length_model, max_length_box],
        [import_status, *list_outputs],
        api_name="finetune_upload",
    )
    list_event = list_btn.click(list_datasets, None, [cards, cards_json], api_name="finetune_datasets")
    detail_inputs = [selected, version_box, length_model, max_length_box]
    detail_outputs = [versions, preview, token_md, histogram]
    show_btn.click(show_dataset, detail_inputs, detail_outputs, api_name="finetune_dataset")

    @handle_errors
    def toggle_private(name: str) -> tuple[str, str, Any]:
        """Make the dataset private (only its owner and admins see it) or share it with the team again."""
        name = (name or "").strip()
        if not name:
            raise ValidationError("pick a dataset first", param="dataset")
        dataset = store.set_private(name, not store.get(name).private)
        state = "private: only you and admins see it" if dataset.private else "shared read-only with the team"
        gr.Info(f"Dataset {name} is now {state}")
        cards_html, cards_data = list_datasets()
        return f"Dataset **{name}** is now {state}.", cards_html, cards_data

    private_btn.click(toggle_private, [selected], [private_md, cards, cards_json], api_name="finetune_dataset_private")
    selected.input(versions_for, [selected], [version_box], api_visibility="private", queue=False).then(
        show_dataset, detail_inputs, detail_outputs, api_visibility="private"
    )
    version_box.input(show_dataset, detail_inputs, detail_outputs, api_visibility="private")
    conv_refresh.click(refresh_conversations, None, [conversations], api_visibility="private")
    conv_event = conv_btn.click(
        import_conversations,
        [conversations, conv_name_box, conv_description_box, conv_on_invalid_box],
        [conv_status, *list_outputs],
        api_name="finetune_import_conversations",
    )
    return {
        "upload_box": upload_box,
        "conversations_box": conversations_box,
        "refresh_conversations_fn": refresh_conversations,
        "conversations": conversations,
        "list_fn": list_datasets,
        "list_outputs": [cards, cards_json],
        "show_fn": show_dataset,
        "show_inputs": detail_inputs,
        "show_outputs": detail_outputs,
        "page_load_fn": page_load,
        "page_load_outputs": [cards, cards_json, conversations],
        "changed_events": [upload_event, conv_event, list_event],
        "file": file,
    }
