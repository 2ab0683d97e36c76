"""Uploading a PEFT adapter into the Adapter Manager, and checking an adapter against its base model.

Lifecycle of an upload: the source is staged into ``adapters/.upload-<random>/`` (a zip is extracted member by
member: no absolute names, no ``..``, no symlinks, no encrypted members, at most :data:`MAX_UPLOAD_FILES` files and
``max_bytes`` bytes counted as they are written, not as the zip claims; a folder is copied the same way and refused
when it holds a symlink), then checked -- weights in safetensors (a pickle ``adapter_model.bin`` is refused; other
pickle files such as ``training_args.bin`` are left out and named in ``warnings``), the base model resolves, every
target module exists in the base and every LoRA tensor's shape fits its base layer (shapes read from the safetensors
headers of both; no model is loaded) -- and only then renamed to ``adapters/<name>``. A refused or interrupted upload
leaves nothing registered; staging folders are hidden (dot names), never listed, and removed by a later upload once
they are an hour old.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
import uuid
import zipfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from studio.errors import ConflictError, PayloadTooLargeError, StudioError, ValidationError
from studio.models.adapters import (
    CONFIG_FILE,
    MARKER_FILE,
    MARKER_FORMAT,
    NAME_PATTERN,
    PICKLE_SUFFIXES,
    PICKLE_WEIGHTS,
    WEIGHTS_FILE,
    AdapterInfo,
    adapters_dir,
    base_label,
    check_adapter_name,
    read_adapter,
    read_json,
)
from studio.paths import is_under
from studio.settings import Settings
from studio.users.ownership import acting_user_name

log = logging.getLogger(__name__)

STAGING_PREFIX = ".upload-"
MAX_UPLOAD_BYTES = 4 * 1024**3
MAX_UPLOAD_FILES = 2000
MAX_HEADER_BYTES = 100 * 1024 * 1024
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B)(?:\.[^.]+)?\.weight$")
_LORA_EMBEDDING_KEY = re.compile(r"^(?P<module>.+)\.lora_embedding_(?P<part>A|B)(?:\.[^.]+)?$")
_PREFIX = "base_model.model."


# -- safetensors headers -----------------------------------------------------------------------------------------


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a safetensors file, from its header alone (no tensor is read). Raises ``ValueError``
    when the file is not a well-formed safetensors file (a header past the end, offsets outside the data)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        length = int.from_bytes(head, "little")
        if length <= 1 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise ValueError("not a safetensors file (its header length does not fit the file)")
        try:
            header = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError("not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file (its header is not a mapping)")
    data_bytes = size - 8 - length
    shapes: dict[str, tuple[int, ...]] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(int(d) for d in meta["shape"])
            start, end = (int(o) for o in meta["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"tensor '{name}' has no valid shape and offsets") from None
        if any(d < 0 for d in shape) or not 0 <= start <= end <= data_bytes:
            raise ValueError(f"tensor '{name}' lies outside the file")
        shapes[str(name)] = shape
    return shapes


def model_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Every weight's shape of a safetensors model folder (sharded or not), from the headers only."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = sorted({str(f) for f in weight_map.values()})
    else:
        files = sorted(p.name for p in model_dir.glob("*.safetensors"))
    shapes: dict[str, tuple[int, ...]] = {}
    for name in files:
        if "/" in name or name.startswith("."):
            continue
        shapes.update(safetensors_shapes(model_dir / name))
    return shapes


# -- checking an adapter against its base ------------------------------------------------------------------------


def resolve_base(settings: Settings, base: str) -> tuple[str, Path]:
    """(model id, safetensors folder) of an adapter's base: an alias, registry id or model folder; an absolute path
    from another machine is tried by its folder name (``org--name``). A GGUF base is converted once, as for
    loading. Raises ``ValidationError`` (param ``base_model``) naming what was tried."""
    from studio.aliases.resolve import AliasResolver
    from studio.aliases.store import AliasStore
    from studio.models.convert import prepare_model
    from studio.models.registry import ModelRegistry

    resolver = AliasResolver(AliasStore(settings.home / "aliases"), ModelRegistry(settings))
    tried = [base]
    if "/" in base and (base.startswith("/") or base.startswith(".")):
        tried.append(Path(base).name.replace("--", "/"))
    for name in tried:
        try:
            entry = resolver.resolve(name).entry
        except StudioError:
            continue
        if entry.format == "remote":
            raise ValidationError(
                f"the adapter's base '{name}' runs on a remote server; an adapter needs local weights",
                param="base_model",
            )
        return entry.id, prepare_model(entry, settings.models_dir)
    shown = base_label(base) or base
    raise ValidationError(
        f"the adapter's base model '{shown}' is not on this machine: download it first (studio models pull), or give "
        "the base it was trained on (base_model)",
        param="base_model",
    )


def _modules(shapes: dict[str, tuple[int, ...]]) -> set[str]:
    return {key.rsplit(".", 1)[0] for key in shapes if "." in key}


def missing_targets(config: dict[str, Any], modules: set[str]) -> list[str]:
    """The ``target_modules`` (and IA3 ``feedforward_modules``) of an adapter config that match no module of the
    base (``modules``: the base's module names, from its weight names)."""
    missing: list[str] = []
    for key in ("target_modules", "feedforward_modules"):
        targets = config.get(key)
        if isinstance(targets, str):
            if targets == "all-linear":
                continue
            try:
                pattern = re.compile(targets)
            except re.error:
                missing.append(targets)
                continue
            if not any(pattern.fullmatch(m) for m in modules):
                missing.append(targets)
        elif isinstance(targets, list):
            for t in targets:
                name = str(t)
                if not any(m == name or m.endswith("." + name) for m in modules) and name not in missing:
                    missing.append(name)
    return missing


def _base_weight(module: str, base: dict[str, tuple[int, ...]], tied: bool) -> tuple[int, ...] | None:
    shape = base.get(f"{module}.weight")
    if shape is None and tied and module.split(".")[-1] == "lm_head":
        embed = next((k for k in base if k.endswith("embed_tokens.weight")), None)
        shape = base.get(embed) if embed else None
    return shape


def shape_mismatches(
    adapter: dict[str, tuple[int, ...]],
    base: dict[str, tuple[int, ...]],
    *,
    fan_in_fan_out: bool = False,
    tied: bool = False,
) -> list[str]:
    """Why LoRA tensors do not fit the base layers they patch, one line per tensor (empty: they all fit).
    ``lora_A`` of a linear layer is ``[r, in]`` and ``lora_B`` ``[out, r]`` for a base weight ``[out, in]``
    (``[in, out]`` with ``fan_in_fan_out``); embeddings take ``lora_embedding_A [r, rows]`` and
    ``lora_embedding_B [dim, r]``; a module saved whole (``modules_to_save``) must have the base's shape."""
    problems: list[str] = []
    for key, shape in sorted(adapter.items()):
        name = key.removeprefix(_PREFIX)
        if m := _LORA_KEY.match(name):
            embedding = False
        elif m := _LORA_EMBEDDING_KEY.match(name):
            embedding = True
        else:
            if ".lora_" in name or "prompt_embeddings" in name or "prefix_encoder" in name or ".ia3_" in name:
                continue  # DoRA magnitudes, IA3 vectors, prompt learning: checked through their modules
            base_shape = base.get(name)
            if base_shape is None:
                problems.append(f"{name}: the base has no such weight")
            elif base_shape != shape:
                problems.append(f"{name}: {list(shape)} in the adapter, {list(base_shape)} in the base")
            continue
        module = m["module"]
        base_shape = _base_weight(module, base, tied)
        if base_shape is None:
            problems.append(f"{module}: the base has no such layer")
            continue
        if len(base_shape) != 2 or len(shape) != 2:
            continue  # convolutions and the like: not checked here
        if embedding:
            rows, dim = base_shape
            want = (rows, "rows") if m["part"] == "A" else (dim, "dimensions")
            got = shape[1] if m["part"] == "A" else shape[0]
        else:
            out_f, in_f = (base_shape[1], base_shape[0]) if fan_in_fan_out else base_shape
            want = (in_f, "inputs") if m["part"] == "A" else (out_f, "outputs")
            got = shape[1] if m["part"] == "A" else shape[0]
        if got != want[0]:
            problems.append(
                f"{module}: lora_{m['part']} is {list(shape)} but the base layer {list(base_shape)} has {want[0]} "
                f"{want[1]}"
            )
    return problems


def check_fits_base(settings: Settings, folder: Path, base: str) -> str:
    """Check the adapter in ``folder`` against ``base`` (an alias, model id or folder): the base resolves, every
    target module exists in it, and every LoRA tensor's shape fits its layer. Returns the base's model id; raises
    ``ValidationError`` naming the modules or tensors that do not fit."""
    config = read_json(folder / CONFIG_FILE)
    if config is None:
        raise ValidationError(f"{CONFIG_FILE} is missing or not valid JSON: not a PEFT adapter", param="adapter")
    base_id, base_dir = resolve_base(settings, base)
    try:
        base_shapes = model_shapes(base_dir)
    except (OSError, ValueError) as exc:
        raise ValidationError(f"cannot read the weights of base '{base_id}': {exc}", param="base_model") from None
    if not base_shapes:
        raise ValidationError(f"base '{base_id}' has no safetensors weights to check against", param="base_model")
    modules = _modules(base_shapes)
    missing = missing_targets(config, modules)
    if missing:
        names = sorted({m.rsplit(".", 1)[-1] for m in modules if not m.split(".")[-1].isdigit()})
        raise ValidationError(
            f"target module(s) {', '.join(repr(m) for m in missing)} of the adapter do not exist in base '{base_id}' "
            f"(its layers are named: {', '.join(names[:40])}): it was trained for another model",
            param="adapter",
        )
    try:
        adapter_shapes = safetensors_shapes(folder / WEIGHTS_FILE)
    except (OSError, ValueError) as exc:
        raise ValidationError(f"{WEIGHTS_FILE} is not readable: {exc}", param="adapter") from None
    base_config = read_json(base_dir / "config.json") or {}
    problems = shape_mismatches(
        adapter_shapes,
        base_shapes,
        fan_in_fan_out=bool(config.get("fan_in_fan_out")),
        tied=bool(base_config.get("tie_word_embeddings")),
    )
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ValidationError(
            f"{len(problems)} tensor(s) of the adapter do not fit base '{base_id}': {shown}", param="adapter"
        )
    return base_id


# -- uploading ---------------------------------------------------------------------------------------------------


def _refuse_member(name: str) -> str | None:
    """Why a zip member name is refused, or None."""
    if not name or "\x00" in name or "\\" in name:
        return "has a NUL byte or a backslash in its name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "has an absolute name"
    if any(part == ".." for part in PurePosixPath(name).parts):
        return "climbs out of the folder with '..'"
    return None


def _skip_member(name: str) -> bool:
    """macOS resource forks and Finder files that zips made on a Mac carry."""
    parts = PurePosixPath(name).parts
    return bool(parts) and (parts[0] == "__MACOSX" or parts[-1] == ".DS_Store")


def extract_zip(src: Path, dest: Path, max_bytes: int = MAX_UPLOAD_BYTES) -> None:
    """Extract ``src`` into the empty folder ``dest`` safely: refused (``ValidationError`` naming the member) for an
    absolute name, ``..``, a symlink, an encrypted member or more than :data:`MAX_UPLOAD_FILES` members;
    ``PayloadTooLargeError`` past ``max_bytes`` (counted as bytes are written, whatever the zip claims)."""
    try:
        archive = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValidationError(f"'{src.name}' is not a readable zip file ({exc})", param="file") from None
    with archive:
        members = [i for i in archive.infolist() if not _skip_member(i.filename)]
        if len(members) > MAX_UPLOAD_FILES:
            raise ValidationError(
                f"the zip has {len(members)} entries; an adapter has a few (at most {MAX_UPLOAD_FILES})", param="file"
            )
        claimed = 0
        for info in members:
            why = _refuse_member(info.filename)
            if why is None and stat.S_ISLNK(info.external_attr >> 16):
                why = "is a symbolic link"
            if why is None and info.flag_bits & 0x1:
                why = "is encrypted"
            if why is not None:
                raise ValidationError(f"zip entry '{info.filename[:200]}' {why}: refused", param="file")
            claimed += info.file_size
        if claimed > max_bytes:
            raise PayloadTooLargeError(
                f"the zip unpacks to {claimed} bytes; adapters are limited to {max_bytes} bytes", param="file"
            )
        written = 0
        for info in members:
            target = dest / info.filename
            if not is_under(target, dest):
                raise ValidationError(f"zip entry '{info.filename[:200]}' lies outside the folder", param="file")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as fin, open(target, "xb") as fout:
                while chunk := fin.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:
                        raise PayloadTooLargeError(
                            f"the zip unpacks to more than {max_bytes} bytes (the limit for an adapter)", param="file"
                        )
                    fout.write(chunk)


def copy_folder(src: Path, dest: Path, max_bytes: int = MAX_UPLOAD_BYTES) -> None:
    """Copy the regular files of ``src`` into ``dest``; a symlink anywhere inside is refused (it could point at any
    file on the machine), as is more than ``max_bytes`` or :data:`MAX_UPLOAD_FILES` files."""
    total, count = 0, 0
    for root, dirs, files in os.walk(src):
        here = Path(root)
        for name in [*dirs, *files]:
            st = os.lstat(here / name)
            if stat.S_ISLNK(st.st_mode):
                rel = (here / name).relative_to(src)
                raise ValidationError(f"'{rel}' in the folder is a symbolic link: refused", param="file")
        for name in files:
            if _skip_member(name):
                continue
            st = os.lstat(here / name)
            if not stat.S_ISREG(st.st_mode):
                continue
            count += 1
            total += st.st_size
            if count > MAX_UPLOAD_FILES:
                raise ValidationError(f"the folder has more than {MAX_UPLOAD_FILES} files", param="file")
            if total > max_bytes:
                raise PayloadTooLargeError(
                    f"the folder holds more than {max_bytes} bytes (the limit for an adapter)", param="file"
                )
            target = dest / (here / name).relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(here / name, target, follow_symlinks=False)


def find_adapter_root(staged: Path) -> Path:
    """The one folder of ``staged`` that holds ``adapter_config.json`` (the top, or a folder the zip was made of)."""
    found = sorted(p.parent for p in staged.rglob(CONFIG_FILE) if p.is_file())
    if not found:
        raise ValidationError(f"no {CONFIG_FILE} in the upload: it is not a PEFT adapter", param="file")
    if len(found) > 1:
        shown = ", ".join(str(p.relative_to(staged)) or "." for p in found[:5])
        raise ValidationError(f"the upload holds {len(found)} adapters ({shown}): upload one at a time", param="file")
    return found[0]


def _drop_pickles(root: Path) -> list[str]:
    """Refuse pickle weights; remove other pickle files (``training_args.bin``...). Returns what was left out."""
    if not (root / WEIGHTS_FILE).is_file():
        if (root / PICKLE_WEIGHTS).is_file():
            raise ValidationError(
                f"the adapter's weights are '{PICKLE_WEIGHTS}', a pickle file, which the studio never loads (a pickle "
                f"can run code). Convert it to safetensors on a machine you trust: load it with PEFT and save it "
                f"with save_pretrained(folder, safe_serialization=True), which writes {WEIGHTS_FILE}; then upload that",
                param="file",
            )
        raise ValidationError(f"the adapter has no {WEIGHTS_FILE}", param="file")
    left_out: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:
            left_out.append(str(path.relative_to(root)))
            path.unlink()
    return left_out


def _clean_staging(folder: Path) -> None:
    for stale in folder.glob(f"{STAGING_PREFIX}*"):
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > 3600:  # an upload killed mid-way (one running now is younger)
                shutil.rmtree(stale, ignore_errors=True)


def _default_name(src: Path) -> str:
    stem = src.name[: -len(".zip")] if src.name.lower().endswith(".zip") else src.name
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", stem).strip("-.")[:100] or "adapter"
    return safe if NAME_PATTERN.fullmatch(safe) else f"adapter-{safe}"[:100]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def upload_adapter(
    settings: Settings,
    src: Path,
    name: str | None = None,
    *,
    base_model: str | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> AdapterInfo:
    """Register a PEFT adapter from ``src`` (a folder, or a ``.zip`` of one) as ``adapters/<name>`` (default: the
    folder's or zip's name). ``base_model`` overrides the base the adapter config names (an alias, model id or
    folder). ``src`` is a path the caller has checked (an upload's temporary file; the CLI confines it).

    Nothing is registered unless every check passes (see the module docstring). Raises ``ValidationError`` (a pickle
    ``adapter_model.bin``, an unsafe zip, a base that is absent, target modules or shapes that do not fit),
    ``ConflictError`` (the name is taken), ``PayloadTooLargeError``."""
    src = Path(src)
    if not src.exists():
        raise ValidationError(f"'{src.name}': no such file or folder", param="file")
    is_zip = src.is_file() and src.suffix.lower() == ".zip"
    if not is_zip and not src.is_dir():
        raise ValidationError(
            f"'{src.name}' is neither a folder nor a .zip file: upload an adapter folder or a zip of it", param="file"
        )
    chosen = check_adapter_name(name if name else _default_name(src))
    folder = adapters_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / chosen
    if target.exists() or target.is_symlink():
        raise ConflictError(f"an adapter named '{chosen}' exists already; choose another name", param="name")
    _clean_staging(folder)
    work = folder / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
    work.mkdir()
    try:
        staged = work / "files"
        staged.mkdir()
        if is_zip:
            extract_zip(src, staged, max_bytes)
        else:
            copy_folder(Path(os.path.realpath(src)), staged, max_bytes)
        root = find_adapter_root(staged)
        left_out = _drop_pickles(root)
        config = read_json(root / CONFIG_FILE) or {}
        base = base_model or str(config.get("base_model_name_or_path") or "")
        if not base:
            raise ValidationError(
                f"{CONFIG_FILE} names no base model (base_model_name_or_path): give the base it was trained on",
                param="base_model",
            )
        base_id = check_fits_base(settings, root, base)
        marker = {
            "format": MARKER_FORMAT,
            "origin": "upload",
            "base_model": base_id,
            "source": src.name,
            "uploaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "sha256": {WEIGHTS_FILE: _sha256(root / WEIGHTS_FILE)},
            "left_out": left_out,
            "owner": acting_user_name(),  # the signed-in user who uploaded it (None: the single user, the CLI)
        }
        (root / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if target.exists() or target.is_symlink():
            raise ConflictError(f"an adapter named '{chosen}' exists already; choose another name", param="name")
        os.rename(root, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("adapter '%s' uploaded from %s (base %s)", chosen, src.name, base_id)
    info = read_adapter(settings, target)
    notes = [f"left out {f}: a pickle file (the studio never loads pickles)" for f in left_out]
    return replace(info, warnings=notes)
