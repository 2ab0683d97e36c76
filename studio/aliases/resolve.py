"""Alias validation and resolution.

Resolution order for a ``model`` name: ``default`` → the configured default; user aliases; model aliases
(one per registry entry: its id, e.g. ``repo:QUANT`` for GGUF files); a local path. Parameters merge as
per-request > alias ``request_params`` > studio defaults.

A name whose alias file is broken is a 400 that names the file and its error (not a 404, and never served by a
model of the same name). An alias's ``snapshot`` picks that snapshot of the Hugging Face cache (its model then
gets the id ``<model id>#<snapshot>``, so it is loaded apart from the snapshot ``refs/main`` names); a snapshot
that is not there is a validation error on ``snapshot`` listing the ones that are.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from studio.aliases.schema import AliasConfig
from studio.aliases.store import AliasStore, BrokenAliasFile
from studio.errors import ModelNotFoundError, StudioError, ValidationError
from studio.inference.params import SamplingParams, validation_error_from_pydantic
from studio.models.registry import ModelEntry, ModelRegistry, check_hf_dir
from studio.settings import generation_defaults

AliasSource = Literal["user", "model"]


@dataclass(frozen=True)
class AliasView:
    """An alias as listed: user aliases from files, model aliases derived from the registry."""

    config: AliasConfig
    source: AliasSource
    entry: ModelEntry | None  # the registry entry it points at (None when the model is missing)


@dataclass(frozen=True)
class ResolvedModel:
    entry: ModelEntry
    alias: AliasConfig | None
    source: AliasSource | None

    def sampling_overrides(self) -> dict[str, Any]:
        return self.alias.request_params.sampling_overrides() if self.alias else {}

    @property
    def chat_template(self) -> str | None:
        return self.alias.chat_template if self.alias else None


@dataclass
class ValidationReport:
    errors: list[ValidationError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_first(self) -> None:
        if self.errors:
            raise self.errors[0]


def remote_entry(cfg: AliasConfig) -> ModelEntry | None:
    """The model an alias with ``engine: remote`` names on its OpenAI-compatible server (None without a URL)."""
    url = cfg.context_params.base_url
    if not url:
        return None
    url = url.rstrip("/")
    return ModelEntry(id=f"{cfg.repo}@{url}", source="remote", format="remote", path=Path("."), repo=cfg.repo, url=url)


def model_alias(entry: ModelEntry) -> AliasConfig:
    return AliasConfig(
        alias=entry.id, repo=entry.repo or str(entry.path), filename=entry.filename, snapshot=entry.snapshot
    )


class AliasResolver:
    def __init__(self, store: AliasStore, registry: ModelRegistry) -> None:
        self.store = store
        self.registry = registry

    def list_aliases(self) -> list[AliasView]:
        """User aliases first, then one model alias per usable registry entry."""
        entries = [e for e in self.registry.list_models() if e.problem is None]
        out = [AliasView(cfg, "user", self._usable_entry(cfg, entries)) for cfg in self.store.load_all()[0]]
        out += [AliasView(model_alias(e), "model", e) for e in entries]
        return out

    def broken_files(self) -> list[BrokenAliasFile]:
        """The alias files that cannot be read, each with its error (listed, never silently left out)."""
        return self.store.load_all()[1]

    def refuse_broken(self, name: str, param: str = "model") -> None:
        """Raise a ValidationError (400) naming the file and its error when ``name`` is held only by a broken file."""
        broken = self.store.broken_named(name)
        if broken is not None:
            raise ValidationError(
                f"alias '{name}' cannot be used: its file is broken: {broken.error}. Fix the file "
                "(`studio alias validate FILE` lists every problem) or delete it.",
                param=param,
                code="alias_file_broken",
            )

    def _usable_entry(self, cfg: AliasConfig, entries: list[ModelEntry]) -> ModelEntry | None:
        entry = self._find_entry(cfg, entries)
        if entry is None:
            return None
        try:
            return self._at_snapshot(cfg, entry)
        except ValidationError:
            return None

    def _at_snapshot(self, cfg: AliasConfig, entry: ModelEntry) -> ModelEntry:
        """``entry`` as found in the snapshot the alias names (the entry itself when it names none, or the one the
        registry picked); ValidationError on ``snapshot`` when the Hugging Face cache does not hold it."""
        snapshot = cfg.snapshot
        if not snapshot or entry.format == "remote" or entry.snapshot == snapshot:
            return entry
        repo = entry.repo or cfg.repo
        repo_dir = self.registry.settings.hf_cache_dir / ("models--" + repo.replace("/", "--"))
        snapshots = repo_dir / "snapshots"
        # a snapshot is one folder name (a commit hash): never a path that leads elsewhere
        folder = snapshots / snapshot if re.fullmatch(r"[A-Za-z0-9_.-]+", snapshot) and snapshot.strip(".") else None
        if folder is None or not folder.is_dir():
            present = sorted(p.name for p in snapshots.glob("*") if p.is_dir()) if snapshots.is_dir() else []
            raise ValidationError(
                f"alias '{cfg.alias}': snapshot '{snapshot}' of {repo} is not in the Hugging Face cache; "
                f"snapshots there: {', '.join(present) or 'none'}",
                param="snapshot",
            )
        if entry.format == "gguf":
            path = folder / (entry.filename or "")
            if not entry.filename or not path.is_file():
                raise ValidationError(
                    f"alias '{cfg.alias}': snapshot '{snapshot}' of {repo} has no file '{entry.filename}'",
                    param="snapshot",
                )
            size = path.stat().st_size
        else:
            problem = check_hf_dir(folder)
            if problem is not None:
                raise ValidationError(
                    f"alias '{cfg.alias}': snapshot '{snapshot}' of {repo} is not a usable model folder: {problem}",
                    param="snapshot",
                )
            path, size = folder, self.registry.folder_size(folder)
        return replace(
            entry, id=f"{entry.id}#{snapshot}", source="hf_cache", path=path, snapshot=snapshot, size_bytes=size
        )

    def _find_entry(self, cfg: AliasConfig, entries: list[ModelEntry]) -> ModelEntry | None:
        if cfg.context_params.engine == "remote":
            return remote_entry(cfg)
        for e in entries:
            if cfg.filename:
                if e.filename == cfg.filename and (e.repo == cfg.repo or e.id == cfg.repo):
                    return e
            elif e.id == cfg.repo or (e.repo == cfg.repo and e.format == "hf"):
                return e
        if cfg.filename is None:
            try:
                return self.registry.resolve(cfg.repo)
            except StudioError:
                return None
        return None

    def entry_for(self, cfg: AliasConfig) -> ModelEntry:
        entry = self._find_entry(cfg, self.registry.list_models())
        if entry is None and cfg.context_params.engine == "remote":
            raise ValidationError(
                f"alias '{cfg.alias}' uses engine 'remote' but sets no context_params.base_url "
                "(the server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1)",
                param="context_params.base_url",
            )
        if entry is None:
            what = f"{cfg.repo}/{cfg.filename}" if cfg.filename else cfg.repo
            raise ModelNotFoundError(
                f"alias '{cfg.alias}' points at model '{what}', which is not on this machine. "
                f"Looked in: {'; '.join(self.registry.searched_locations())}",
                param="repo",
            )
        return self._at_snapshot(cfg, entry)

    def resolve(self, name: str) -> ResolvedModel:
        """Resolve a request's ``model`` field; unknown names get a 404 listing close matches."""
        requested = name.strip()
        if requested == "default":
            requested = self.registry.settings.default_model
        user = self.store.get(requested)
        if user is not None:
            return ResolvedModel(self.entry_for(user), user, "user")
        self.refuse_broken(requested)
        try:
            entry = self.registry.resolve(requested)
        except ModelNotFoundError:
            names = [v.config.alias for v in self.list_aliases()]
            close = close_matches(requested, names)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ModelNotFoundError(
                f"model or alias '{name}' not found.{hint} Known: {', '.join(names) or 'none'}. "
                f"Looked in: {'; '.join(self.registry.searched_locations())}."
            ) from None
        return ResolvedModel(entry, None, "model")


def close_matches(name: str, names: list[str], n: int = 3) -> list[str]:
    """Names that look like ``name``, ignoring case and the ``org/`` part of repo ids."""
    keys: dict[str, str] = {}
    for full in names:
        keys.setdefault(full.lower(), full)
        short = full.rsplit("/", 1)[-1].split(":")[0].lower()
        keys.setdefault(short, full)
        keys.setdefault(re.split(r"[-_.]", short, maxsplit=1)[0], full)
    found: list[str] = []
    for key in difflib.get_close_matches(name.strip().lower(), list(keys), n=n * 3, cutoff=0.5):
        if keys[key] not in found:
            found.append(keys[key])
    return found[:n]


def _single_errors(exc: PydanticValidationError, model: type[BaseModel], prefix: str = "") -> list[ValidationError]:
    out = []
    for err in exc.errors():
        single = PydanticValidationError.from_exception_data(exc.title, [err])  # type: ignore[list-item]
        out.append(validation_error_from_pydantic(single, prefix=prefix, model=model))
    return out


def validate_alias(
    data: dict[str, Any] | AliasConfig,
    resolver: AliasResolver,
    *,
    editing: str | None = None,
) -> tuple[AliasConfig | None, ValidationReport]:
    """Check an alias before saving: shape and types, ranges, model present, template known, name unique.
    Conflicting settings are warnings."""
    report = ValidationReport()
    if isinstance(data, AliasConfig):
        cfg: AliasConfig | None = data
    else:
        try:
            cfg = AliasConfig.model_validate(data)
        except PydanticValidationError as exc:
            cfg = None
            report.errors.extend(_single_errors(exc, AliasConfig))
    # Range checks and the model check run even when the shape is wrong, so every field error is listed.
    raw_rp: Any = cfg.request_params.sampling_overrides() if cfg else (data or {}).get("request_params")  # type: ignore[union-attr]
    if isinstance(raw_rp, dict):
        known = {k: v for k, v in raw_rp.items() if k in SamplingParams.model_fields and v is not None}
        try:
            SamplingParams(**known)
        except PydanticValidationError as exc:
            seen = {e.param for e in report.errors}
            ranged = _single_errors(exc, SamplingParams, "request_params.")
            report.errors.extend(e for e in ranged if e.param not in seen)
    entry: ModelEntry | None = None
    probe = cfg
    if probe is None and isinstance(data, dict) and isinstance(data.get("repo"), str) and data.get("repo"):
        filename = data.get("filename") if isinstance(data.get("filename"), str) else None
        snapshot = data.get("snapshot") if isinstance(data.get("snapshot"), str) else None
        probe = AliasConfig.model_construct(
            alias=str(data.get("alias", "?")),
            repo=data["repo"],
            filename=filename,
            snapshot=snapshot,
        )
    if probe is not None:
        try:
            entry = resolver.entry_for(probe)
        except ModelNotFoundError as exc:
            report.errors.append(ValidationError(exc.message, param="repo"))
        except ValidationError as exc:
            report.errors.append(exc)
    if cfg is None:
        return None, report
    if cfg.chat_template:
        from studio.aliases.templates import resolve_template_source

        try:
            resolve_template_source(
                cfg.chat_template,
                model_dir=entry.path if entry is not None and entry.format == "hf" else None,
                hf_cache=resolver.registry.settings.hf_cache_dir,
                settings=resolver.registry.settings,
            )
        except ValidationError as exc:
            report.errors.append(exc)
    if cfg.alias != editing and resolver.store.get(cfg.alias) is not None:
        report.errors.append(ValidationError(f"an alias named '{cfg.alias}' already exists", param="alias"))
    report.warnings.extend(conflict_warnings(cfg))
    return cfg, report


def conflict_warnings(cfg: AliasConfig) -> list[str]:
    """Settings that are allowed but probably not what the user wants."""
    defaults = generation_defaults()
    rp, cp = cfg.request_params, cfg.context_params
    out: list[str] = []
    if (
        rp.temperature is not None
        and rp.top_p is not None
        and rp.temperature != defaults.get("temperature")
        and rp.top_p != defaults.get("top_p")
    ):
        out.append("temperature and top_p are both changed from their defaults; usually tune one of them")
    if rp.temperature == 0 and rp.seed is not None:
        out.append("temperature 0 is greedy decoding: the seed has no effect")
    max_tokens = rp.max_tokens
    if max_tokens is not None and cp.n_ctx is not None and max_tokens > cp.n_ctx:
        out.append(f"max_tokens ({max_tokens}) is larger than the context window n_ctx ({cp.n_ctx})")
    if cp.n_predict is not None and max_tokens is not None and cp.n_predict not in (-1,) and max_tokens > cp.n_predict:
        out.append(f"max_tokens ({max_tokens}) is larger than n_predict ({cp.n_predict}); n_predict caps it")
    if cp.n_keep is not None and cp.n_ctx is not None and cp.n_keep > cp.n_ctx:
        out.append(f"n_keep ({cp.n_keep}) is larger than n_ctx ({cp.n_ctx})")
    return out
