"""What a deployment's TARGET names, and the resolver a serving process answers with.

A TARGET is, as everywhere in the studio, ``default``, a user alias, a model id or a model path -- or

- ``adapter:NAME``: the PEFT adapter ``STUDIO_HOME/adapters/NAME`` served on the base model its
  ``adapter_config.json`` names (``base_model_name_or_path``);
- ``export:NAME``: the export folder ``STUDIO_HOME/exports/NAME``: a Hugging Face folder (a merged model), a
  ``.gguf`` file (served by llama.cpp) or ``model.onnx`` (served by ONNX Runtime), found in the folder or one
  level below it.

The studio resolves the target before it starts anything (a missing model is an error at once, not a failed
process); the serving process resolves the same text again with the same function.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

from studio.aliases.resolve import AliasResolver, AliasView, ResolvedModel, model_alias
from studio.aliases.schema import AliasConfig, ContextParams, Engine
from studio.aliases.store import BrokenAliasFile
from studio.deploy.config import check_name
from studio.errors import BackendUnavailableError, ModelNotFoundError, NotFoundError, StudioError, ValidationError
from studio.paths import describe_roots, display_path, find_user_path, model_roots
from studio.settings import Settings

TargetKind = Literal["model", "alias", "adapter", "export"]
#: the local engines an alias's ``context_params.engine`` may name (a serving process's alias is pinned to one)
SCHEMA_ENGINES = tuple(e for e in get_args(Engine) if e not in ("auto", "remote"))


@dataclass(frozen=True)
class DeployTarget:
    """A resolved TARGET: the model that serves, the adapter on top (if any) and what kind of thing was named."""

    text: str
    kind: TargetKind
    resolved: ResolvedModel
    adapter: Path | None = None
    onnx: bool = False  # an ONNX export (served by the onnxruntime engine)

    @property
    def model_id(self) -> str:
        return self.resolved.entry.id


def adapter_folder(settings: Settings, adapter: str) -> Path:
    """An adapter directory: a name under STUDIO_HOME/adapters, a path relative to STUDIO_HOME, or an absolute path
    inside the model roots (as :meth:`EngineManager.adapter_path` finds it); it must hold adapter_config.json."""
    home = settings.home
    bases = [home / "adapters", home]
    roots = model_roots(settings)
    where = describe_roots(roots if Path(adapter.strip()).is_absolute() else bases, settings)
    found = find_user_path(adapter, roots, param="adapter", bases=bases, where=where, kind="dir").resolve()
    if not (found / "adapter_config.json").is_file():
        raise ValidationError(
            f"'adapter': {display_path(found, settings)} is not a PEFT adapter folder (no adapter_config.json)",
            param="adapter",
        )
    return found


def _adapter_target(settings: Settings, resolver: AliasResolver, name: str, text: str) -> DeployTarget:
    name = check_name(name, param="target", what="an adapter name")
    folder = settings.home / "adapters" / name
    if not (folder / "adapter_config.json").is_file():
        known = sorted(p.name for p in (settings.home / "adapters").glob("*") if (p / "adapter_config.json").is_file())
        raise NotFoundError(
            f"adapter '{name}' not found in $STUDIO_HOME/adapters; adapters there: {', '.join(known) or 'none'}",
            param="target",
        )
    try:
        base = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        base = None
    if not isinstance(base, str) or not base.strip():
        raise ValidationError(
            f"adapter '{name}' does not name its base model (adapter_config.json has no base_model_name_or_path); "
            f"deploy the base with --adapter {name}",
            param="target",
        )
    try:
        resolved = resolver.resolve(base)
    except StudioError:
        shown = display_path(Path(base), settings) if Path(base).is_absolute() else base
        raise ModelNotFoundError(
            f"adapter '{name}' was trained on '{shown}', which is not on this machine; deploy a model it fits "
            f"with --adapter {name}",
            param="target",
        ) from None
    return DeployTarget(text, "adapter", resolved, adapter=folder.resolve())


def _export_files(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(.gguf files, HF model folders, ONNX folders) in ``folder`` and its immediate sub-folders."""
    from studio.models.registry import check_hf_dir

    places = [folder, *sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))]
    ggufs = [f for p in places for f in sorted(p.glob("*.gguf")) if f.is_file()]
    hf = [p for p in places if check_hf_dir(p) is None]
    onnx = [p for p in places if (p / "model.onnx").is_file()]
    return ggufs, hf, onnx


def _export_target(settings: Settings, resolver: AliasResolver, name: str, text: str, engine: str) -> DeployTarget:
    name = check_name(name, param="target", what="an export name")
    exports = settings.home / "exports"
    folder = exports / name
    if not folder.is_dir():
        known = sorted(p.name for p in exports.glob("*") if p.is_dir() and not p.name.startswith("."))
        raise NotFoundError(
            f"export '{name}' not found in $STUDIO_HOME/exports; exports there: {', '.join(known) or 'none'}",
            param="target",
        )
    ggufs, hf, onnx = _export_files(folder)
    if onnx and (engine == "onnxruntime" or not (hf or ggufs)):
        from studio.inference.routing import ENGINES

        if "onnxruntime" not in ENGINES:
            raise BackendUnavailableError(
                f"export '{name}' is an ONNX model and this studio has no ONNX Runtime engine; deploy the merged or "
                "GGUF export of the same model instead"
            )
        resolved = resolver.resolve(str(onnx[0]))
        return DeployTarget(text, "export", resolved, onnx=True)
    if ggufs and (engine == "llamacpp" or not hf):
        if len(ggufs) > 1:
            shown = ", ".join(display_path(g, settings) for g in ggufs)
            raise ValidationError(
                f"export '{name}' holds several GGUF files ({shown}); give one of them as the TARGET", param="target"
            )
        return DeployTarget(text, "export", resolver.resolve(str(ggufs[0])))
    if hf:
        return DeployTarget(text, "export", resolver.resolve(str(hf[0])))
    raise ValidationError(
        f"export '{name}' ($STUDIO_HOME/exports/{name}) holds no model: no Hugging Face folder (config.json and "
        "weights), no .gguf file and no model.onnx -- is the export finished?",
        param="target",
    )


def resolve_target(
    settings: Settings, resolver: AliasResolver, target: str, adapter: str | None = None, engine: str = "auto"
) -> DeployTarget:
    """What ``target`` (and ``adapter``) name, or the error a user can act on (404 naming where we looked, 400,
    403 for a path outside the model roots, 503 for an engine this studio lacks)."""
    text = target.strip()
    prefix, sep, rest = text.partition(":")
    if sep and prefix == "adapter":
        if adapter:
            raise ValidationError(
                "'adapter': adapter:NAME already names the adapter; leave --adapter out", param="adapter"
            )
        return _adapter_target(settings, resolver, rest, text)
    if sep and prefix == "export":
        found = _export_target(settings, resolver, rest, text, engine)
    else:
        resolved = resolver.resolve(text)
        kind: TargetKind = "alias" if resolved.source == "user" else "model"
        if resolved.entry.format == "remote":
            raise ValidationError(
                f"alias '{text}' is served by a remote server ({resolved.entry.url}); register that server with "
                "`studio deploy add-remote` instead",
                param="target",
            )
        # a model the registry lists as ONNX (an ONNX export registered in models/) is served like export:NAME
        found = DeployTarget(text, kind, resolved, onnx=resolved.entry.format == "onnx")
    if adapter:
        found = replace(found, adapter=adapter_folder(settings, adapter))
    return found


def served_alias(target: DeployTarget, served_name: str, engine: str) -> AliasConfig:
    """The alias a serving process answers ``served_name`` with: the target alias's own settings (template,
    parameters, safety policy) when it is a user alias, pinned to ``engine``."""
    base = target.resolved.alias if target.resolved.source == "user" and target.resolved.alias else None
    cfg = base if base is not None else model_alias(target.resolved.entry)
    context = cfg.context_params.model_dump(exclude_none=True)
    context["engine"] = engine if engine in SCHEMA_ENGINES else None
    return cfg.model_copy(update={"alias": served_name, "context_params": ContextParams(**context)})


class ServedResolver(AliasResolver):
    """The resolver of a serving process: it knows one model, under the deployment's name (and the target's own
    names), so ``/v1/models`` lists only it and a request for any other model is a 404 -- a deployment never loads
    a second model."""

    def __init__(self, base: AliasResolver, target: DeployTarget, served_name: str, engine: str) -> None:
        super().__init__(base.store, base.registry)
        self.served_name = served_name
        alias = served_alias(target, served_name, engine)
        self.served = ResolvedModel(target.resolved.entry, alias, "user")
        self.names = {served_name, target.text, target.resolved.entry.id, "default"}

    def list_aliases(self) -> list[AliasView]:
        assert self.served.alias is not None
        return [AliasView(self.served.alias, "user", self.served.entry)]

    def broken_files(self) -> list[BrokenAliasFile]:
        return []

    def refuse_broken(self, name: str, param: str = "model") -> None:
        return None

    def resolve(self, name: str) -> ResolvedModel:
        if name.strip() in self.names:
            return self.served
        raise ModelNotFoundError(f"model '{name}' not found: this deployment serves only '{self.served_name}'")
