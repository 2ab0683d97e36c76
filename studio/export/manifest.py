"""``manifest.json``: what an export folder holds, where it came from, and how it was checked.

Written last, atomically (a temporary file renamed into place), into the export's partial folder, which is then
renamed to ``STUDIO_HOME/exports/<name>/``: a folder with a manifest is a finished, verified export. Fields::

    manifest_version  1
    name, format      the export's folder name; merged | gguf | onnx | triton
    created_at        UTC, ISO 8601
    job_id            the export job that wrote it
    source            model (as asked), model_id, model_path; adapter, adapter_path, adapter_base
    lineage           the adapter's training run (job id, method, dataset name/version/hash) or null
    options           quant, dtype
    packages          versions of torch, transformers, peft, gguf, llama-cpp-python, ...
    converter         for GGUF: the llama.cpp converter used (package, version)
    verification      greedy first tokens of the export vs the source (see :mod:`studio.export.verify`)
    timings_s         seconds per step
    files             [{path, size, sha256}] of every other file in the folder

Paths in the manifest are shown as ``$STUDIO_HOME/...`` (never a path outside STUDIO_HOME), so a manifest can be
pushed or shared as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
#: the mark a partial export folder carries while it is built (dropped when it is published): never listed
OWNER_FILE = ".owner"
MANIFEST_VERSION = 1
RUN_FILE = "whetstone-run.json"  # what a training run leaves beside its artifact (studio.training.train)
PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "peft",
    "accelerate",
    "gguf",
    "llama-cpp-python",
    "optimum",
    "onnx",
    "onnxruntime",
)
_CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(folder: Path) -> list[dict[str, Any]]:
    """``{path, size, sha256}`` of every file under ``folder`` but the manifest (and a partial folder's owner mark),
    sorted by path (``/``-separated)."""
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(folder).as_posix()
        if rel in (MANIFEST_FILE, OWNER_FILE):
            continue
        out.append({"path": rel, "size": path.stat().st_size, "sha256": sha256_file(path)})
    return out


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (those not installed are left out)."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def now_iso() -> str:
    """The current UTC time, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_manifest(folder: Path, data: dict[str, Any]) -> Path:
    """Write ``folder/manifest.json`` from ``data`` plus ``manifest_version`` and ``files`` (hashed now),
    atomically. Returns its path."""
    body = {"manifest_version": MANIFEST_VERSION, **data, "files": file_entries(folder)}
    path = folder / MANIFEST_FILE
    tmp = folder / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(body, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of an export folder, or None when it has none (or one that is not JSON)."""
    try:
        data = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_manifest(folder: Path) -> list[str]:
    """What does not match between the folder and its manifest: missing, changed or unlisted files (empty when
    every file is there with its size and sha256)."""
    data = read_manifest(folder)
    if data is None:
        return [f"{MANIFEST_FILE} is missing or not JSON"]
    listed = {str(f.get("path")): f for f in data.get("files", []) if isinstance(f, dict)}
    present = {e["path"]: e for e in file_entries(folder)}
    problems = [f"{p} is missing" for p in sorted(set(listed) - set(present))]
    problems += [f"{p} is not listed" for p in sorted(set(present) - set(listed))]
    for path in sorted(set(listed) & set(present)):
        want, have = listed[path], present[path]
        if want.get("size") != have["size"] or want.get("sha256") != have["sha256"]:
            problems.append(f"{path} changed (size or sha256 differs from the manifest)")
    return problems


def adapter_lineage(adapter_dir: Path) -> dict[str, Any] | None:
    """Where a trained adapter came from, from the ``whetstone-run.json`` training left beside it and the run folder
    it lies in (``runs/<job id>/artifact``): training job id, method, base model, dataset name/version/hash, when.
    None for an adapter without that record (uploaded or made elsewhere)."""
    real = Path(os.path.realpath(adapter_dir))
    try:
        run = json.loads((real / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        run = None
    job_id = real.parent.name if real.parent.parent.name == "runs" else None
    if not isinstance(run, dict):
        return {"training_job": job_id} if job_id else None
    found = run.get("dataset")
    dataset: dict[str, Any] = found if isinstance(found, dict) else {}
    return {
        "training_job": job_id,
        "artifact_name": run.get("name"),
        "method": run.get("method"),
        "base_model": run.get("base_model"),
        "dataset": {"name": dataset.get("name"), "version": dataset.get("version"), "hash": dataset.get("hash")},
        "trained_at": run.get("created_at"),
    }
