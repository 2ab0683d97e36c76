"""The Adapter Manager's registry: every PEFT adapter under ``STUDIO_HOME/adapters``, renaming and deleting one.

Where adapters come from (``origin``):

- a training job (``finetune``, ``dpo``): the job writes its artifact to ``runs/<job>/artifact`` (with
  ``whetstone-run.json``: method, base model, dataset name/version/sha256, results) and registers it as a symlink
  ``adapters/<name>`` -> that folder (:func:`studio.training.job.register_artifact`); ``origin`` is the job id;
- an upload (:func:`studio.models.adapter_upload.upload_adapter`, which also holds the checks against the base): a
  folder or ``.zip`` of a PEFT adapter, copied into ``adapters/<name>`` with a ``whetstone-adapter.json`` marker
  (base model, original file name, sha256 of the weights); ``origin`` ``upload``;
- a folder someone put there by hand: ``origin`` ``local``.

Names are one path component (``[A-Za-z0-9][A-Za-z0-9_.-]*``, no ``..``, not ``base``). Hidden entries (dot names:
upload staging folders, deletions in progress) are never listed. An adapter loaded on a model cannot be renamed or
deleted: the message names the model to unload first. Enabling, disabling and comparing with the base live in
:mod:`studio.models.adapter_compare`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.errors import ConflictError, NotFoundError, StudioError, ValidationError
from studio.paths import display_path, is_under
from studio.settings import Settings

if TYPE_CHECKING:
    from studio.inference.manager import EngineManager

ADAPTERS_DIR = "adapters"
RUNS_DIR = "runs"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_WEIGHTS = "adapter_model.bin"
MARKER_FILE = "whetstone-adapter.json"
MARKER_FORMAT = "whetstone-adapter/1"
RUN_FILE = "whetstone-run.json"  # written by studio.training.train.write_run_file
RUN_FORMAT = "whetstone-run/1"
#: file suffixes that hold Python pickles: never copied into the studio, never loaded
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
RESERVED_NAMES = ("base",)
#: an adapter name (see :func:`check_adapter_name`)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_METHOD_LABELS = {
    "LORA": "LoRA",
    "ADALORA": "AdaLoRA",
    "LOHA": "LoHa",
    "LOKR": "LoKr",
    "IA3": "IA3",
    "PREFIX_TUNING": "prefix tuning",
    "PROMPT_TUNING": "prompt tuning",
    "P_TUNING": "p-tuning",
}


# -- names -------------------------------------------------------------------------------------------------------


def check_adapter_name(name: str, param: str = "name") -> str:
    """An adapter name: one path component of letters, digits, ``_ . -`` (1-100 characters, starting with a letter
    or digit), no ``..``, not ``base`` (the Playground's name for no adapter). Raises ``ValidationError``."""
    text = (name or "").strip()
    if not NAME_PATTERN.fullmatch(text) or ".." in text:
        raise ValidationError(
            f"'{param}': '{text[:120]}' is not an adapter name: use 1-100 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit (no '/', no '..')",
            param=param,
        )
    if text.lower() in RESERVED_NAMES:
        raise ValidationError(f"'{param}': '{text}' is reserved for the base model; choose another name", param=param)
    return text


def adapters_dir(settings: Settings) -> Path:
    """``STUDIO_HOME/adapters`` (every registered adapter is a folder or a symlink to one in it)."""
    return settings.home / ADAPTERS_DIR


def _entry(settings: Settings, name: str, param: str = "name") -> Path:
    """The registered adapter ``name`` (the folder or link in ``adapters/``); NotFoundError listing the known ones."""
    path = adapters_dir(settings) / check_adapter_name(name, param)
    if not (path.exists() or path.is_symlink()):
        known = ", ".join(sorted(_registered_names(settings))) or "none"
        raise NotFoundError(f"no adapter '{name}' in $STUDIO_HOME/adapters; known adapters: {known}", param=param)
    return path


def _registered_names(settings: Settings) -> list[str]:
    folder = adapters_dir(settings)
    if not folder.is_dir():
        return []
    return [p.name for p in folder.iterdir() if not p.name.startswith(".") and (p.is_dir() or p.is_symlink())]


# -- reading one adapter -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterInfo:
    """One registered adapter as the Adapter Manager lists it."""

    name: str
    path: Path  # the folder holding the files (a trained adapter's link resolved to runs/<job>/artifact)
    base_model: str | None  # as a user names it (registry id, alias) when known, else the adapter config's
    method: str  # LoRA, QLoRA, DoRA, prefix tuning, IA3, ... (+ the training objective: "LoRA (DPO)")
    peft_type: str | None
    rank: int | None
    alpha: float | None
    target_modules: list[str]
    size_bytes: int
    origin: str  # the training job id, "upload", or "local" (a folder put into adapters/ by hand)
    job_id: str | None
    dataset: dict[str, Any] | None  # {name, version, hash} of a trained adapter
    loaded_on: list[str]  # loaded models (engine keys) that have it loaded
    created: str  # ISO 8601, UTC
    virtual_tokens: int | None = None  # prompt-learning adapters
    problem: str | None = None  # why it cannot be used (no adapter_config.json, a broken link, ...)
    warnings: list[str] = field(default_factory=list)  # from an upload: files left out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``studio adapters list --json``, the UI table)."""
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_run_file(folder: Path) -> dict[str, Any] | None:
    """The lineage record a training job wrote next to its artifact (``whetstone-run.json``), or None."""
    data = read_json(folder / RUN_FILE)
    return data if data is not None and data.get("format") == RUN_FORMAT else None


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The upload record :func:`upload_adapter` wrote (``whetstone-adapter.json``), or None."""
    data = read_json(folder / MARKER_FILE)
    return data if data is not None and data.get("format") == MARKER_FORMAT else None


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links inside it are not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def base_label(raw: str | None) -> str | None:
    """How a listing names an adapter's base: a local model folder is named by the model id its conversion marker
    records, else by its folder name (``HuggingFaceTB--SmolLM2-135M-Instruct`` -> ``HuggingFaceTB/SmolLM2-...``);
    a Hub id or alias stays as it is."""
    if not raw:
        return None
    text = str(raw)
    if not (text.startswith("/") or text.startswith(".") or "\\" in text):
        return text
    marker = read_json(Path(text) / "whetstone-model.json")
    if marker is not None and marker.get("id"):
        return str(marker["id"])
    return Path(text).name.replace("--", "/") or text


def method_label(peft_type: str | None, config: dict[str, Any], run: dict[str, Any] | None) -> str:
    label = _METHOD_LABELS.get(peft_type or "", peft_type or "unknown")
    if peft_type == "LORA" and config.get("use_dora"):
        label = "DoRA"
    if run is None:
        return label
    trained = str(run.get("method") or "")
    if trained == "qlora":
        return "QLoRA"
    if trained in ("dpo", "kto", "reward", "orpo"):
        return f"{label} ({trained.upper()})"
    return label


def _targets(config: dict[str, Any]) -> list[str]:
    targets = config.get("target_modules")
    if isinstance(targets, str):
        return [targets]
    if isinstance(targets, list):
        return sorted(str(t) for t in targets)
    return []


def _created(*candidates: Any, fallback: Path) -> str:
    for value in candidates:
        if isinstance(value, str) and value:
            return value
    try:
        mtime = fallback.stat().st_mtime
    except OSError:
        mtime = time.time()
    return datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds")


def _job_of(settings: Settings, entry: Path, folder: Path) -> str | None:
    """The job whose artifact ``entry`` links to (``runs/<job>/artifact``), else None."""
    if not entry.is_symlink():
        return None
    runs = settings.home / RUNS_DIR
    if is_under(folder, runs) and folder.parent.parent.resolve() == runs.resolve():
        return folder.parent.name
    return None


def read_adapter(settings: Settings, entry: Path, loaded: dict[Path, list[str]] | None = None) -> AdapterInfo:
    """What the listing shows for the registered adapter ``entry`` (``adapters/<name>``); never raises for a broken
    adapter: ``problem`` says what is wrong."""
    folder = Path(os.path.realpath(entry))
    problem: str | None = None
    config = read_json(folder / CONFIG_FILE)
    if not folder.is_dir():
        problem = f"the folder it points to is gone ({display_path(folder, settings)})"
    elif config is None:
        problem = f"{CONFIG_FILE} is missing or not valid JSON"
    elif not (folder / WEIGHTS_FILE).is_file():
        problem = f"no {WEIGHTS_FILE}" + (
            f" ({PICKLE_WEIGHTS} is a pickle file the studio does not load)"
            if (folder / PICKLE_WEIGHTS).exists()
            else ""
        )
    config = config or {}
    run = read_run_file(folder) if folder.is_dir() else None
    marker = read_marker(folder) if folder.is_dir() else None
    peft_type = str(config["peft_type"]) if config.get("peft_type") else None
    job_id = _job_of(settings, entry, folder)
    origin = job_id or ("upload" if marker is not None else "local")
    base = (run or {}).get("base_model") or (marker or {}).get("base_model") or config.get("base_model_name_or_path")
    rank = config.get("r")
    alpha = config.get("lora_alpha")
    dataset = run.get("dataset") if run is not None and isinstance(run.get("dataset"), dict) else None
    return AdapterInfo(
        name=entry.name,
        path=folder,
        base_model=base_label(base),
        method=method_label(peft_type, config, run),
        peft_type=peft_type,
        rank=int(rank) if isinstance(rank, int) else None,
        alpha=float(alpha) if isinstance(alpha, int | float) else None,
        target_modules=_targets(config),
        size_bytes=folder_bytes(folder) if folder.is_dir() else 0,
        origin=origin,
        job_id=job_id,
        dataset=dataset,
        loaded_on=sorted((loaded or {}).get(folder, [])),
        created=_created(
            (marker or {}).get("uploaded_at"), (run or {}).get("created_at"), fallback=folder / CONFIG_FILE
        ),
        virtual_tokens=config.get("num_virtual_tokens") if isinstance(config.get("num_virtual_tokens"), int) else None,
        problem=problem,
    )


def loaded_adapters(engines: EngineManager | None) -> dict[Path, list[str]]:
    """Adapter folder (resolved) -> the loaded models (engine keys) that carry it."""
    out: dict[Path, list[str]] = {}
    if engines is None:
        return out
    for key in engines.loaded_keys():
        try:
            engine = engines.engine(key)
        except StudioError:
            continue  # unloaded meanwhile
        for path in dict(getattr(engine, "adapters", {}) or {}).values():
            out.setdefault(Path(os.path.realpath(path)), []).append(key)
    return out


def list_adapters(settings: Settings, engines: EngineManager | None = None) -> list[AdapterInfo]:
    """Every adapter registered under ``STUDIO_HOME/adapters`` (uploaded, trained by a job, or put there by hand),
    sorted by name; ``loaded_on`` is filled from ``engines`` when given."""
    loaded = loaded_adapters(engines)
    folder = adapters_dir(settings)
    return [read_adapter(settings, folder / name, loaded) for name in sorted(_registered_names(settings))]


def get_adapter(settings: Settings, name: str, engines: EngineManager | None = None) -> AdapterInfo:
    """One registered adapter by name (NotFoundError listing the known ones)."""
    return read_adapter(settings, _entry(settings, name), loaded_adapters(engines))


# -- renaming and deleting ---------------------------------------------------------------------------------------


def _refuse_if_loaded(settings: Settings, entry: Path, engines: EngineManager | None, action: str) -> None:
    models = loaded_adapters(engines).get(Path(os.path.realpath(entry)), [])
    if models:
        raise ConflictError(
            f"adapter '{entry.name}' is loaded on {', '.join(sorted(models))}: unload "
            f"{'that model' if len(models) == 1 else 'those models'} before you {action} it (disabling it is not "
            "enough: a disabled adapter stays loaded, ready to be enabled again)",
            param="name",
        )


def adapter_owner(settings: Settings, entry: Path, db: Any) -> str | None:
    """Who owns a registered adapter: its uploader (the upload record), or the user who submitted the training job
    that made it; None for a hand-placed folder or one made before users existed."""
    folder = Path(os.path.realpath(entry))
    marker = read_marker(folder) if folder.is_dir() else None
    if marker is not None:
        owner = marker.get("owner")
        return str(owner) if owner else None
    job_id = _job_of(settings, entry, folder)
    if job_id is None or db is None:
        return None
    from studio.db.tables import Job
    from studio.users.ownership import user_name

    with db.session() as s:
        job = s.get(Job, job_id)
        owner_id = job.owner_id if job is not None else None
    return user_name(db, owner_id)


def _check_adapter_owner(settings: Settings, entry: Path, db: Any) -> None:
    if db is not None:
        from studio.users.ownership import check_owner_named

        check_owner_named(f"adapter '{entry.name}'", adapter_owner(settings, entry, db))


def rename_adapter(
    settings: Settings, old: str, new: str, engines: EngineManager | None = None, db: Any = None
) -> AdapterInfo:
    """Rename a registered adapter (a trained adapter's link is renamed; its run folder stays). Refused while it is
    loaded on a model, or when ``new`` is taken; with ``db``, refused to a member who does not own it."""
    entry = _entry(settings, old, "name")
    _check_adapter_owner(settings, entry, db)
    chosen = check_adapter_name(new, "new_name")
    target = adapters_dir(settings) / chosen
    if target.exists() or target.is_symlink():
        raise ConflictError(f"an adapter named '{chosen}' exists already; choose another name", param="new_name")
    _refuse_if_loaded(settings, entry, engines, "rename")
    os.rename(entry, target)
    return read_adapter(settings, target, loaded_adapters(engines))


@dataclass(frozen=True)
class AdapterDeleted:
    """What :func:`delete_adapter` removed."""

    name: str
    freed_bytes: int
    kept: str | None  # a trained adapter's run folder, which stays (its job's record)

    def summary(self) -> str:
        """One line for people."""
        if self.kept:
            return f"removed adapter '{self.name}'; its trained files stay in {self.kept} with the job's record"
        return f"removed adapter '{self.name}' ({self.freed_bytes} bytes freed)"


def delete_adapter(
    settings: Settings, name: str, engines: EngineManager | None = None, db: Any = None
) -> AdapterDeleted:
    """Remove a registered adapter. Refused (``ConflictError`` naming the models) while it is loaded on a model, and
    with ``db`` to a member who does not own it. An uploaded or hand-placed folder is deleted; a trained adapter
    loses its name here, and its files stay in the job's run folder (``runs/<job>/artifact``)."""
    entry = _entry(settings, name)
    _check_adapter_owner(settings, entry, db)
    _refuse_if_loaded(settings, entry, engines, "delete")
    if entry.is_symlink():
        kept = display_path(Path(os.path.realpath(entry)), settings)
        entry.unlink()
        return AdapterDeleted(entry.name, 0, kept)
    size = folder_bytes(entry)
    trash = entry.with_name(f".deleted-{entry.name}-{uuid.uuid4().hex[:8]}")
    os.rename(entry, trash)  # gone from the listing at once; the files go next
    shutil.rmtree(trash, ignore_errors=True)
    return AdapterDeleted(entry.name, size, None)


def adapter_names(items: Iterable[AdapterInfo]) -> list[str]:
    """The names of usable adapters (for pickers)."""
    return [a.name for a in items if a.problem is None]
