"""Alias operations shared by the CLI, the REST API and the Aliases tab: create from key=value pairs,
clone, import, export — each validated before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from studio.aliases.resolve import AliasResolver, ValidationReport, model_alias, validate_alias
from studio.aliases.schema import AliasConfig, ContextParams, RequestParams
from studio.aliases.store import dump_alias_yaml, parse_alias_yaml
from studio.errors import NotFoundError, ValidationError
from studio.inference.params import SamplingParams
from studio.user_messages import field_label, shown

REQUEST_KEYS = tuple(RequestParams.model_fields)
INTEGER_FIELDS = frozenset({"top_k", "max_tokens", "seed", *ContextParams.model_fields} - {"engine", "dtype"})


def parse_form_number(text: str | float | int | None, param: str, *, integer: bool = False) -> float | int | None:
    """A form field that may be left empty (→ None, meaning "use the default")."""
    if text is None:
        return None
    if isinstance(text, int | float):
        value: float = float(text)
    else:
        raw = text.strip()
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise ValidationError(
                f"'{param}' must be a number; got {raw!r}",
                param=param,
                user_message=f"{_form_label(param)} must be a number (you entered {shown(raw)})",
            ) from None
    if integer:
        if value != int(value):
            raise ValidationError(
                f"'{param}' must be a whole number; got {value:g}",
                param=param,
                user_message=f"{_form_label(param)} must be a whole number (you entered {shown(value)})",
            )
        return int(value)
    return value


def _form_label(param: str) -> str:
    """The form's name for a field: ``request_params.top_p`` → ``Top-p`` (request parameters are titled by the
    sampling schema), ``context_params.n_ctx`` → ``n_ctx``."""
    section, _, name = param.partition(".")
    if section == "request_params" and name in SamplingParams.model_fields:
        return field_label(SamplingParams, name)
    if section == "context_params":
        return field_label(ContextParams, name)
    return field_label(AliasConfig, param)


CONTEXT_KEYS = tuple(ContextParams.model_fields)


def parse_assignments(pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``["temperature=0.2", "n_ctx=2048", "stop=[a, b]"]`` → (request_params, context_params).

    Values are read as YAML scalars/lists, so numbers, booleans and lists need no quoting."""
    request: dict[str, Any] = {}
    context: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValidationError(f"'{pair}' is not KEY=VALUE", param="set")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ValidationError(f"value of {key} is not readable: {exc}", param=key) from None
        if key in REQUEST_KEYS:
            request[key] = value
        elif key in CONTEXT_KEYS:
            context[key] = value
        else:
            known = ", ".join((*REQUEST_KEYS, *CONTEXT_KEYS))
            raise ValidationError(f"unknown parameter '{key}'; known: {known}", param=key)
    return request, context


def find_alias(resolver: AliasResolver, name: str) -> tuple[AliasConfig, str]:
    """A user or model alias by name, with its source."""
    for view in resolver.list_aliases():
        if view.config.alias == name:
            return view.config, view.source
    resolver.refuse_broken(name, param="alias")
    names = [v.config.alias for v in resolver.list_aliases()]
    raise NotFoundError(f"alias '{name}' not found; known: {', '.join(names) or 'none'}", param="alias")


def save_checked(
    resolver: AliasResolver, data: dict[str, Any] | AliasConfig, *, editing: str | None = None
) -> tuple[AliasConfig, ValidationReport, Path]:
    """Validate, then write. Raises the first error; returns the warnings in the report."""
    cfg, report = validate_alias(data, resolver, editing=editing)
    report.raise_first()
    assert cfg is not None
    path = resolver.store.save(cfg, replace=editing)
    return cfg, report, path


@dataclass(frozen=True)
class AliasFormTarget:
    """The saved alias an alias form is bound to (one per browser session of the Aliases tab).

    ``editing`` is an alias the user opened with Edit: saving under another name renames it, as asked.
    ``created`` is the alias the form last created: saving again under that name updates it, and a save under
    a new name creates another alias -- a form never renames an alias it was not explicitly opened on.
    """

    editing: str | None = None
    created: str | None = None

    def replaces(self, name: str) -> str | None:
        """The existing alias that saving the form under ``name`` overwrites or renames (None: a new alias)."""
        if self.editing is not None:
            return self.editing
        return self.created if name == self.created else None

    def after_save(self, saved: str) -> AliasFormTarget:
        """The binding once the form was saved as ``saved`` (an edit goes on editing it under its new name)."""
        return AliasFormTarget(editing=saved) if self.editing is not None else AliasFormTarget(created=saved)


def build_alias_dict(
    resolver: AliasResolver,
    name: str,
    model: str,
    *,
    template: str | None = None,
    request: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An alias document for ``model`` (a registry id, ``default``, a user alias — its model is used — or a
    local path); empty values are left out so they fall back to defaults."""
    try:
        entry = resolver.resolve(model).entry
    except NotFoundError:
        entry = resolver.registry.resolve(model)
    data: dict[str, Any] = {
        "alias": name,
        "repo": entry.repo or str(entry.path),
        "filename": entry.filename,
        "snapshot": entry.snapshot,
        "chat_template": template or None,
        "context_params": {k: v for k, v in (context or {}).items() if v not in (None, "", [])},
        "request_params": {k: v for k, v in (request or {}).items() if v not in (None, "", [])},
    }
    return {k: v for k, v in data.items() if v is not None}


def alias_from_settings(
    resolver: AliasResolver, name: str, model: str, request: dict[str, Any]
) -> tuple[AliasConfig, ValidationReport, Path]:
    """ "Save as alias" from the Playground: the current model (a user alias keeps its template and context
    parameters) with the Playground's sampling settings as request_params."""
    resolved = resolver.resolve(model)
    if resolved.alias is not None and resolved.source == "user":
        data = resolved.alias.to_yaml_dict()
        data["alias"] = name
        data["request_params"] = {k: v for k, v in request.items() if v not in (None, "", [])}
    else:
        data = build_alias_dict(resolver, name, resolved.entry.id, request=request)
    return save_checked(resolver, data)


def create_alias(
    resolver: AliasResolver,
    name: str,
    model: str,
    *,
    template: str | None = None,
    assignments: list[str] | None = None,
) -> tuple[AliasConfig, ValidationReport, Path]:
    request, context = parse_assignments(assignments or [])
    data = build_alias_dict(resolver, name, model, template=template, request=request, context=context)
    return save_checked(resolver, data)


def clone_alias(resolver: AliasResolver, source: str, new_name: str) -> tuple[AliasConfig, ValidationReport, Path]:
    cfg, _ = find_alias(resolver, source)
    return save_checked(resolver, cfg.model_copy(update={"alias": new_name}))


def import_alias_files(resolver: AliasResolver, files: list[Path]) -> list[tuple[AliasConfig, ValidationReport]]:
    """Import several files; every file is checked before any is written (all or nothing)."""
    parsed: list[AliasConfig] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"{path}: cannot read ({exc})", param="file") from None
        cfg = parse_alias_yaml(text, str(path))
        _, report = validate_alias(cfg, resolver)
        if report.errors:
            first = report.errors[0]
            raise ValidationError(f"{path}: {first.message}", param=first.param)
        parsed.append(cfg)
    names = [c.alias for c in parsed]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValidationError(f"alias name(s) {', '.join(sorted(dupes))} appear in more than one file", param="alias")
    out = []
    for cfg in parsed:
        _, report, _ = save_checked(resolver, cfg)
        out.append((cfg, report))
    return out


def export_alias(resolver: AliasResolver, name: str) -> str:
    cfg, _ = find_alias(resolver, name)
    return dump_alias_yaml(cfg)


def alias_details(resolver: AliasResolver, name: str) -> str:
    """What the Aliases tab shows for a row: the alias as YAML; for a broken file, its error as a YAML comment
    above the file's text (so the mistake can be seen where it is)."""
    broken = resolver.store.broken_named(name)
    if broken is None:
        return export_alias(resolver, name)
    try:
        text = broken.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    comment = "\n".join(f"# {line}" for line in f"broken: {broken.error}".splitlines())
    return f"{comment}\n{text}"


__all__ = [
    "AliasFormTarget",
    "alias_details",
    "alias_from_settings",
    "build_alias_dict",
    "clone_alias",
    "create_alias",
    "export_alias",
    "find_alias",
    "import_alias_files",
    "model_alias",
    "parse_assignments",
    "save_checked",
]
