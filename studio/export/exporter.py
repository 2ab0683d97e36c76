"""Running one export: resolve the source, build the export in a partial folder, verify it, write its manifest,
publish it as ``STUDIO_HOME/exports/<name>/`` and register it as a model.

Lifecycle of an export folder::

    exports/.partial-<name>-<pid>-<random>/   built here (hidden: never listed, never registered, never served)
        .owner                                the pid building it (a dead pid: the folder is stale)
    exports/<name>/                           one rename when verified and its manifest is written: complete

A process killed at any point (``kill -9``) leaves at most a hidden partial folder, removed by the next export
(:func:`clean_stale_partials`); nothing half-made is ever at ``exports/<name>`` or registered. The job running it
ends ``failed`` with the signal that ended it (the worker writes that state).

Registration (so the registry lists the export and the engines serve it, without copying any weights):

- ``merged`` / ``triton`` / ``docker`` with a merged folder: ``models/<name>`` -> ``../exports/<name>[/...]``
  (a transformers folder: the registry lists it as model ``<name>``);
- ``gguf``: ``models/<name>.<QUANT>.gguf`` -> the GGUF file in the export (model id ``<name>.<QUANT>.gguf``; a local
  GGUF file runs on the llamacpp engine).

Refused before any work (:func:`resolve_source`, :func:`check_free`): a name that is not one path component
(``../x``), an export or a model of that name that exists, a missing model, a missing or half-trained adapter, an
adapter whose base model is not on this machine or does not fit the model given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from studio.errors import ConflictError, NotFoundError, StudioError, ValidationError
from studio.export import manifest as mf
from studio.export.merge import adapter_base, check_adapter_files
from studio.paths import display_path, find_user_path, model_roots
from studio.settings import Settings

log = logging.getLogger(__name__)

Format = Literal["merged", "gguf", "onnx", "triton", "docker"]
FORMATS: tuple[str, ...] = ("merged", "gguf", "onnx", "triton", "docker")
EXPORTS_DIR = "exports"
PARTIAL_PREFIX = ".partial-"
OWNER_FILE = mf.OWNER_FILE
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class ExportStopped(Exception):
    """The job was asked to stop between two steps; the partial folder is removed."""


def exports_dir(settings: Settings) -> Path:
    """``STUDIO_HOME/exports``: one folder per finished export."""
    return settings.home / EXPORTS_DIR


def check_export_name(name: str, param: str = "name") -> str:
    """An export name: one path component of letters, digits, ``_ . -`` (1-100 characters, starting with a letter or
    digit, no ``..``, not ending in ``.gguf``). A path such as ``../x`` is a ValidationError naming the rule."""
    text = (name or "").strip()
    if not _NAME.fullmatch(text) or ".." in text or text.lower().endswith(".gguf"):
        raise ValidationError(
            f"'{param}': '{text[:120]}' is not an export name: use 1-100 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit (no '/', no '..'); it becomes the folder $STUDIO_HOME/exports/<name>",
            param=param,
        )
    return text


def default_name(model_id: str, adapter: str | None, fmt: str, quant: str | None) -> str:
    """``<model>-<adapter>-<format>[-<quant>]`` from the last part of the model id, cut to a valid name."""
    base = model_id.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gguf")
    parts = [base, adapter or "", fmt, quant or ""]
    text = "-".join(p for p in parts if p)
    text = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "export"
    text = re.sub(r"\.{2,}", ".", text)
    return check_export_name(text[:100].rstrip("-.") or "export")


# --- the source -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSource:
    """What an export is made from: a transformers folder and an optional PEFT adapter."""

    model: str  # as the user named it
    model_id: str
    model_dir: Path  # safetensors folder (a GGUF model converted once, as for loading)
    adapter: str | None = None
    adapter_dir: Path | None = None
    adapter_base: str | None = None  # as the adapter's config names it
    lineage: dict[str, Any] | None = None
    source_export: dict[str, Any] | None = None  # the model is itself an export: its manifest's source/lineage

    def describe(self, settings: Settings) -> dict[str, Any]:
        """The manifest's ``source`` (paths shown as ``$STUDIO_HOME/...``)."""
        return {
            "model": self.model,
            "model_id": self.model_id,
            "model_path": display_path(self.model_dir, settings),
            "adapter": self.adapter,
            "adapter_path": display_path(self.adapter_dir, settings) if self.adapter_dir else None,
            "adapter_base": (
                display_path(Path(self.adapter_base), settings)
                if self.adapter_base and Path(self.adapter_base).is_absolute()
                else self.adapter_base
            ),
            "export": self.source_export,
        }


def _resolve_model(settings: Settings, model: str) -> tuple[str, Path]:
    from studio.aliases.resolve import AliasResolver
    from studio.aliases.store import AliasStore
    from studio.models.convert import prepare_model
    from studio.models.registry import ModelRegistry

    resolver = AliasResolver(AliasStore(settings.home / "aliases"), ModelRegistry(settings))
    entry = resolver.resolve(model).entry
    if entry.format in ("remote", "onnx"):
        where = "runs on a remote server" if entry.format == "remote" else "is an ONNX export"
        raise ValidationError(
            f"model '{model}' {where}: an export needs its transformers weights on this machine", param="model"
        )
    return entry.id, prepare_model(entry, settings.models_dir)


def _resolve_adapter(settings: Settings, adapter: str) -> tuple[str, Path]:
    """A registered adapter (``STUDIO_HOME/adapters/<name>``) or an adapter folder inside the model roots."""
    from studio.models.adapters import adapters_dir, check_adapter_name

    text = adapter.strip()
    if "/" not in text and "\\" not in text:
        folder = adapters_dir(settings) / check_adapter_name(text, param="adapter")
        if not folder.exists():
            known = sorted(
                p.name for p in adapters_dir(settings).glob("*") if not p.name.startswith(".") and p.is_dir()
            )
            raise NotFoundError(
                f"no adapter '{text}' in $STUDIO_HOME/adapters; known adapters: {', '.join(known) or 'none'}",
                param="adapter",
            )
        return text, Path(os.path.realpath(folder))
    roots = model_roots(settings)
    folder = find_user_path(
        text, roots, param="adapter", bases=[settings.home], where="$STUDIO_HOME and the model folders", kind="dir"
    )
    return folder.name, Path(os.path.realpath(folder))


def resolve_source(settings: Settings, model: str, adapter: str | None) -> ExportSource:
    """The model (``default``, an alias, a model id or path) and adapter an export starts from, checked: a missing
    model or adapter, a half-trained adapter (no weights yet), an adapter whose own base is not on this machine or
    whose layers do not fit ``model`` are refused with a message naming them."""
    from studio.models.adapter_upload import check_fits_base, resolve_base

    model_id, model_dir = _resolve_model(settings, model)
    upstream = mf.read_manifest(Path(os.path.realpath(model_dir)))
    source_export = None
    if upstream is not None:
        source_export = {"name": upstream.get("name"), "format": upstream.get("format"),
                         "source": upstream.get("source"), "lineage": upstream.get("lineage")}  # fmt: skip
    if adapter is None or not adapter.strip():
        return ExportSource(model, model_id, model_dir, source_export=source_export)
    name, adapter_dir = _resolve_adapter(settings, adapter)
    check_adapter_files(adapter_dir, name)
    recorded = adapter_base(adapter_dir)
    if recorded:
        try:
            resolve_base(settings, recorded)
        except StudioError as exc:
            shown = display_path(Path(recorded), settings) if Path(recorded).is_absolute() else recorded
            raise ValidationError(
                f"adapter '{name}' was made for base model '{shown}', which is not on this machine ({exc.message}); "
                "download that base first, or export an adapter made for a model you have",
                param="adapter",
            ) from None
    check_fits_base(settings, adapter_dir, str(model_dir))
    return ExportSource(
        model=model,
        model_id=model_id,
        model_dir=model_dir,
        adapter=name,
        adapter_dir=adapter_dir,
        adapter_base=recorded,
        lineage=mf.adapter_lineage(adapter_dir),
        source_export=source_export,
    )


# --- folders: partial, published, registered -------------------------------------------------------------------


def registration_path(settings: Settings, name: str, fmt: str, quant: str | None) -> Path:
    """Where the export is linked into ``STUDIO_HOME/models``: a folder link, or ``<name>.<QUANT>.gguf``."""
    from studio.export.gguf import gguf_file_name

    if fmt == "gguf":
        return settings.models_dir / gguf_file_name(name, quant or "f16")
    return settings.models_dir / name


def check_free(settings: Settings, name: str, fmt: str, quant: str | None) -> None:
    """ConflictError when an export or a model of that name exists already (nothing is ever overwritten)."""
    final = exports_dir(settings) / name
    if final.exists() or final.is_symlink():
        raise ConflictError(
            f"an export named '{name}' exists already ($STUDIO_HOME/exports/{name}); choose another name or delete it",
            param="name",
        )
    link = registration_path(settings, name, fmt, quant)
    if link.exists() or link.is_symlink():
        raise ConflictError(
            f"a model named '{link.name}' exists already in $STUDIO_HOME/models; choose another export name",
            param="name",
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_partials(settings: Settings) -> list[str]:
    """Remove partial folders whose builder is gone (killed, crashed). Returns their names."""
    folder = exports_dir(settings)
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    for partial in folder.glob(f"{PARTIAL_PREFIX}*"):
        try:
            pid = int((partial / OWNER_FILE).read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            pid = 0
        if pid and pid != os.getpid() and _pid_alive(pid):
            continue
        if pid == os.getpid():
            continue
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(partial.name)
    return removed


@contextlib.contextmanager
def partial_folder(settings: Settings, name: str) -> Iterator[Path]:
    """A fresh hidden folder under ``exports/`` for building ``name``; removed when the block raises."""
    root = exports_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f"{PARTIAL_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    (partial / OWNER_FILE).write_text(str(os.getpid()), encoding="utf-8")
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def publish(partial: Path, final: Path) -> None:
    """Rename the finished partial folder to its name (one atomic rename; the owner mark is dropped first)."""
    (partial / OWNER_FILE).unlink(missing_ok=True)
    if final.exists() or final.is_symlink():
        raise ConflictError(f"an export named '{final.name}' appeared meanwhile; nothing was overwritten", param="name")
    os.rename(partial, final)


def register(settings: Settings, target: Path, link: Path) -> str:
    """Link ``target`` (inside the export) into ``STUDIO_HOME/models`` as ``link`` with a relative symlink, so the
    registry lists it. Returns the model id the registry gives it."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.parent / f".{link.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.symlink_to(os.path.relpath(target, link.parent), target_is_directory=target.is_dir())
    os.rename(tmp, link)  # a link to a complete export, or nothing
    return link.name.replace("--", "/") if target.is_dir() else link.name


# --- listing ----------------------------------------------------------------------------------------------------


@dataclass
class ExportInfo:
    """One finished export as ``studio export list`` and the UI show it."""

    name: str
    format: str
    path: Path
    created_at: str | None
    source: dict[str, Any] | None
    registered_as: str | None
    verification: dict[str, Any] | None
    size_bytes: int
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def list_exports(settings: Settings, check: bool = False) -> list[ExportInfo]:
    """Every finished export (a folder under ``exports/`` with a manifest), sorted by name; ``check`` also compares
    every file with the manifest's sha256 (slow for big exports)."""
    folder = exports_dir(settings)
    out: list[ExportInfo] = []
    if not folder.is_dir():
        return out
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        data = mf.read_manifest(path)
        if data is None:
            continue
        verification = data.get("verification") if isinstance(data.get("verification"), dict) else None
        if verification is not None:
            verification = {k: v for k, v in verification.items() if k != "per_prompt"}
        out.append(
            ExportInfo(
                name=path.name,
                format=str(data.get("format", "?")),
                path=path,
                created_at=data.get("created_at"),
                source=data.get("source") if isinstance(data.get("source"), dict) else None,
                registered_as=data.get("registered_as"),
                verification=verification,
                size_bytes=sum(int(f.get("size", 0)) for f in data.get("files", []) if isinstance(f, dict)),
                problems=mf.check_manifest(path) if check else [],
            )
        )
    return out


def get_export(settings: Settings, name: str) -> ExportInfo:
    """One finished export by name (NotFoundError listing the known ones)."""
    check_export_name(name)
    for info in list_exports(settings):
        if info.name == name:
            return info
    known = ", ".join(i.name for i in list_exports(settings)) or "none"
    raise NotFoundError(f"no export '{name}' in $STUDIO_HOME/exports; exports: {known}", param="name")


class StepClock:
    """Seconds per named step, for the manifest's ``timings_s``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._start, 2)
        self._start = now
