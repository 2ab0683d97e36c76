"""The ``finetune`` job kind: resolve the dataset version and the base model, train, register the artifact.

Runs in the job's own process (``studio.jobs.child``). Lineage: the dataset version (id + content hash) is
written into the job's config at submit time (``prepare_finetune``) and into the artifact's
``whetstone-run.json``; the artifact (``STUDIO_HOME/runs/<job>/artifact``) is registered under its name --
an adapter in ``STUDIO_HOME/adapters/<name>`` (the Playground's adapter box loads it by name), a full model in
``STUDIO_HOME/models/<name>`` (the registry lists it) -- as a symlink to the run's folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from studio.aliases.resolve import AliasResolver
from studio.aliases.store import AliasStore
from studio.datasets.store import DatasetStore
from studio.db.engine import Database
from studio.errors import ValidationError
from studio.jobs.kinds import JobKind, register_kind
from studio.jobs.runtime import JobRuntime
from studio.models.convert import prepare_model
from studio.models.registry import ModelRegistry
from studio.settings import Settings
from studio.training.config import FinetuneConfig

log = logging.getLogger(__name__)

ARTIFACT_DIR = "artifact"
CHECKPOINT_DIR = "checkpoints"


def resolve_base_model(settings: Settings, name: str) -> Path:
    """The local directory of the base model (an alias, registry id or path; a GGUF is converted once)."""
    resolver = AliasResolver(AliasStore(settings.home / "aliases"), ModelRegistry(settings))
    entry = resolver.resolve(name).entry
    if entry.format == "remote":
        raise ValidationError(f"'{name}' runs on a remote server; fine-tuning needs local weights", param="base_model")
    return prepare_model(entry, settings.models_dir)


def prepare_finetune(settings: Settings, db: Database, config: FinetuneConfig) -> FinetuneConfig:
    """Check a config against this studio before it is queued: the dataset version exists (its number and content
    hash are pinned into the config, so the job trains on exactly what was chosen), its kind suits the method, the
    base model resolves, and — for tool-calling examples — its chat template writes the tool parts."""
    from studio.training.data import check_method_fits, check_template_renders, to_prompt_completion

    store = _store(settings, db)
    version = store.get_version(config.dataset, config.dataset_version)
    check_method_fits(config.method, version.kind, f"dataset '{config.dataset}' v{version.number}")
    model_path = resolve_base_model(settings, config.base_model)
    if version.kind == "supervised" and config.method != "kto":
        rows = [to_prompt_completion(e, i) for i, e in enumerate(store.load_examples(version))]
        if any(r.get("tools") or any(m["role"] == "tool" for m in r["prompt"]) for r in rows):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
            check_template_renders(tokenizer, rows, config.base_model)  # refused now, not minutes into the job
    return config.model_copy(update={"dataset_version": version.number, "dataset_hash": version.content_hash})


def _store(settings: Settings, db: Database) -> DatasetStore:
    """The dataset store, with the shipped example datasets imported (once per STUDIO_HOME)."""
    from studio.datasets.builtin import ensure_builtin_datasets

    store = DatasetStore(settings, db)
    ensure_builtin_datasets(store)
    return store


def register_artifact(settings: Settings, artifact: Path, name: str, kind: str, job_id: str) -> str:
    """Make the artifact loadable by name: a symlink in adapters/ (adapter) or models/ (full model). A name in use
    by another artifact gets the job id appended. Returns the registered name."""
    folder = settings.home / ("adapters" if kind == "adapter" else "models")
    folder.mkdir(parents=True, exist_ok=True)
    chosen = name
    link = folder / chosen
    if link.exists() or link.is_symlink():
        if link.is_symlink() and Path(os.readlink(link)) == artifact:
            return chosen
        chosen = f"{name}-{job_id[:8]}"
        link = folder / chosen
    tmp = folder / f".{chosen}.tmp-{job_id[:8]}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(artifact, target_is_directory=True)
    os.replace(tmp, link)
    return chosen


def run_finetune(config: FinetuneConfig, runtime: JobRuntime) -> dict[str, Any]:
    """The job body: train as ``config`` says, reporting through ``runtime``; resumes from its checkpoint."""
    from studio.training.launch import train_on_all_devices  # in-process, or accelerate launch (config.strategy)

    settings = runtime.settings
    store = _store(settings, runtime.db)
    version = store.get_version(config.dataset, config.dataset_version)
    if config.dataset_hash and not version.content_hash.startswith(config.dataset_hash):
        raise ValidationError(
            f"dataset '{config.dataset}' version {version.number} no longer has the content this job was "
            f"submitted with (hash {config.dataset_hash[:12]}…)",
            param="dataset_hash",
        )
    examples = store.load_examples(version)
    runtime.log(f"dataset {config.dataset} v{version.number} ({len(examples)} examples, {version.content_hash[:12]})")
    model_path = resolve_base_model(settings, config.base_model)
    runtime.log(f"base model {config.base_model} from {model_path}")
    config = config.model_copy(update={"dataset_version": version.number, "dataset_hash": version.content_hash})
    output = runtime.run_dir / ARTIFACT_DIR
    result = train_on_all_devices(
        config,
        examples,
        model_path,
        output,
        runtime,
        resume_from=runtime.resume_from,
        checkpoint_dir=runtime.run_dir / CHECKPOINT_DIR,
    )
    data = result.to_dict()
    data["dataset"] = {"name": config.dataset, "version": version.number, "version_id": version.id}
    data["dataset"]["hash"] = version.content_hash
    data["base_model"] = config.base_model
    if result.artifact_path is not None:
        name = register_artifact(settings, result.artifact_path, config.artifact_name, result.artifact, runtime.job.id)
        data["registered_as"] = name
        data["artifact_path"] = str(result.artifact_path)
        runtime.log(f"saved the {result.artifact} as '{name}' ({result.artifact_path})")
    return data


FINETUNE_KIND = register_kind(
    JobKind(
        "finetune",
        FinetuneConfig,
        run_finetune,
        "Supervised fine-tuning with TRL's SFTTrainer and PEFT (LoRA, QLoRA, prefix tuning, IA3 adapters, full), "
        "or KTO with TRL's KTOTrainer (method kto).",
        prepare=lambda config, settings, db: prepare_finetune(settings, db, config),
    )
)
