"""Column mappings written by people: the studio's own YAML/JSON, or LLaMA-Factory's ``dataset_info.json``.

A mapping text is read by :func:`mapping_from_text` (the upload form's mapping box, ``studio datasets import
--mapping``). It is either the studio's :class:`~studio.datasets.formats.ColumnMapping` fields::

    format: prompt_completion
    prompt: question
    completion: answer

or a *dataset description* from LLaMA-Factory's ``dataset_info.json`` — one entry, or the whole file, from which
the entry whose ``file_name`` is the uploaded file's name is taken (or its only entry)::

    {"formatting": "sharegpt", "ranking": true,
     "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
     "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}}

LLaMA-Factory's fields map as its ``data/README.md`` documents them: ``formatting`` alpaca (default) → alpaca,
sharegpt → sharegpt, openai → messages; ``columns``: prompt → instruction, query → input, response → output,
messages → the conversation column, history, system, tools, chosen, rejected, kto_tag → label; ``ranking`` →
ranking; ``tags`` → tags. Where a description means data the studio cannot train — a multimodal dataset
(``images`` / ``videos`` / ``audios`` columns) or a pre-training corpus (only a ``prompt`` column, no response)
— the error names it. Hub datasets (``hf_hub_url`` ...) are not downloaded: the file itself must be given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic
import yaml

from studio.datasets.formats import FORMATS, ColumnMapping
from studio.datasets.messages import ShareGptTags
from studio.errors import ValidationError

DATASET_INFO = "dataset_info.json"
#: the keys of one LLaMA-Factory dataset description
ENTRY_KEYS: frozenset[str] = frozenset(
    {
        "file_name",
        "formatting",
        "ranking",
        "columns",
        "tags",
        "hf_hub_url",
        "ms_hub_url",
        "om_hub_url",
        "script_url",
        "cloud_file_name",
        "subset",
        "split",
        "folder",
        "num_samples",
        "load_from",
    }
)
_COLUMN_FIELDS: dict[str, str] = {  # LLaMA-Factory column name → ColumnMapping field (alpaca)
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "history": "history",
    "system": "system",
    "tools": "tools",
    "chosen": "chosen",
    "rejected": "rejected",
    "kto_tag": "label",
}
_FORMATTINGS: dict[str, str] = {"alpaca": "alpaca", "sharegpt": "sharegpt", "openai": "messages"}


def is_dataset_info_entry(data: Mapping[str, Any]) -> bool:
    """Whether ``data`` is one LLaMA-Factory dataset description (not a studio mapping)."""
    return bool(data) and "format" not in data and set(data) <= ENTRY_KEYS


def is_dataset_info_file(data: Mapping[str, Any]) -> bool:
    """Whether ``data`` is a whole ``dataset_info.json``: names → descriptions."""
    return bool(data) and all(isinstance(v, Mapping) and is_dataset_info_entry(v) for v in data.values())


def pick_entry(data: Mapping[str, Any], filename: str | None) -> tuple[str, Mapping[str, Any]]:
    """The description of ``filename`` in a whole ``dataset_info.json`` (by ``file_name``), or its only entry."""
    if filename:
        found = [(n, e) for n, e in data.items() if Path(str(e.get("file_name", ""))).name == Path(filename).name]
        if len(found) == 1:
            return found[0][0], found[0][1]
    if len(data) == 1:
        name, entry = next(iter(data.items()))
        return str(name), entry
    listed = ", ".join(f"{n} ({e.get('file_name', 'no file_name')})" for n, e in list(data.items())[:20])
    raise ValidationError(
        f"the dataset_info.json describes {len(data)} datasets and none has file_name {filename!r}: {listed}; "
        "give the one entry that describes this file",
        param="mapping",
    )


def mapping_from_dataset_info(entry: Mapping[str, Any], name: str = "the dataset") -> ColumnMapping:
    """One LLaMA-Factory dataset description → the studio's column mapping (see the module docstring)."""
    formatting = str(entry.get("formatting") or "alpaca")
    if formatting not in _FORMATTINGS:
        raise ValidationError(
            f"{name}: formatting {formatting!r} is not one LLaMA-Factory documents; use alpaca, sharegpt or openai",
            param="mapping.formatting",
        )
    columns = entry.get("columns") or {}
    tags = entry.get("tags")
    if not isinstance(columns, Mapping) or (tags is not None and not isinstance(tags, Mapping)):
        raise ValidationError(f"{name}: 'columns' and 'tags' must be objects of name: value", param="mapping")
    media = [c for c in ("images", "videos", "audios") if columns.get(c)]
    if media:
        raise ValidationError(
            f"{name} is a LLaMA-Factory multimodal dataset ({', '.join(media)} column); this studio trains text-only "
            "models — remove the media columns and their <image>/<video>/<audio> placeholders to train on the text",
            param="mapping",
        )
    fmt = _FORMATTINGS[formatting]
    ranking = bool(entry.get("ranking", False))
    if fmt == "alpaca" and set(columns) <= {"prompt"} and not ranking and columns:
        raise ValidationError(
            f"{name} is a LLaMA-Factory pre-training dataset (only a prompt column, {columns['prompt']!r}, and no "
            "response): this studio fine-tunes on conversations; give each text a reply to learn",
            param="mapping",
        )
    values: dict[str, Any] = {"format": fmt, "ranking": ranking}
    unknown = sorted(set(columns) - set(_COLUMN_FIELDS) - {"messages", "images", "videos", "audios"})
    if unknown:
        raise ValidationError(
            f"{name}: unknown LLaMA-Factory column(s) {', '.join(unknown)}; known: "
            f"{', '.join([*_COLUMN_FIELDS, 'messages'])}",
            param="mapping.columns",
        )
    for lf_name, column in columns.items():
        if lf_name == "messages":
            values["messages" if fmt == "messages" else "conversations"] = column
        elif lf_name in _COLUMN_FIELDS and column:
            field = _COLUMN_FIELDS[lf_name]
            if fmt != "alpaca" and field in ("instruction", "input", "output", "history"):
                raise ValidationError(
                    f"{name}: column {lf_name!r} belongs to the alpaca formatting, not {formatting}", param="mapping"
                )
            values[field] = column
    if tags:
        try:
            parsed = ShareGptTags.model_validate(dict(tags))
        except pydantic.ValidationError:
            raise ValidationError(
                f"{name}: unknown tag in {', '.join(map(str, tags))}; known: {', '.join(ShareGptTags.model_fields)}",
                param="mapping.tags",
            ) from None
        if fmt == "sharegpt":
            values["tags"] = parsed
    return _validated(values, "mapping")


def _validated(values: Mapping[str, Any], param: str) -> ColumnMapping:
    try:
        return ColumnMapping.model_validate(dict(values))
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "mapping"
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown mapping field; known: {', '.join(ColumnMapping.model_fields)}"
            problems.append(f"{param}.{where}: {msg}" if err["loc"] else f"{param}: {msg}")
        first = ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise ValidationError("; ".join(problems), param=f"{param}.{first}" if first else param) from None


def mapping_from_data(data: Any, filename: str | None = None) -> ColumnMapping | None:
    """A parsed mapping (a studio mapping, a dataset_info.json entry, or a whole dataset_info.json) → the
    column mapping; None (or ``format: auto``) means "detect the format"."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ValidationError(
            "the column mapping must be field: column pairs, e.g. {format: prompt_completion, prompt: question}",
            param="mapping",
        )
    if is_dataset_info_entry(data):
        return mapping_from_dataset_info(data)
    if "format" not in data and is_dataset_info_file(data):
        name, entry = pick_entry(data, filename)
        return mapping_from_dataset_info(entry, f"dataset_info.json entry {name!r}")
    if data.get("format") in (None, "", "auto"):
        raise ValidationError(
            f"the column mapping needs a format: one of {', '.join(FORMATS)} (or leave the mapping empty to detect "
            "it, or paste LLaMA-Factory's dataset_info.json entry)",
            param="mapping.format",
        )
    return _validated(data, "mapping")


def mapping_from_text(text: str | None, filename: str | None = None) -> ColumnMapping | None:
    """A mapping written as YAML or JSON (either kind, see the module docstring); empty means "detect"."""
    if text is None or not text.strip():
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(f"the column mapping is not valid YAML/JSON: {exc}", param="mapping") from None
    return mapping_from_data(data, filename)


def sibling_dataset_info(path: Path) -> tuple[Path, ColumnMapping] | None:
    """LLaMA-Factory's layout: a ``dataset_info.json`` beside the data file with an entry whose ``file_name`` is
    that file → that file and the mapping it describes (None when there is no such entry)."""
    info = path.parent / DATASET_INFO
    if path.name == DATASET_INFO or not info.is_file():
        return None
    try:
        data = json.loads(info.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, Mapping) or not is_dataset_info_file(data):
        return None
    found = [(n, e) for n, e in data.items() if Path(str(e.get("file_name", ""))).name == path.name]
    if len(found) != 1:
        return None
    name, entry = found[0]
    return info, mapping_from_dataset_info(entry, f"dataset_info.json entry {name!r}")
