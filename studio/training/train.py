"""Fine-tuning with TRL's ``SFTTrainer`` (or ``KTOTrainer`` for method ``kto``): train and save the artifact
(duration estimates: :mod:`studio.training.estimate`).

``train()`` is the job body (the job kind resolves the dataset and the model and calls it); it talks to the
queue only through a :class:`JobReporter`, so tests and scripts run it with a ``MemoryReporter``.

Layout of one run (``output_dir`` is e.g. ``STUDIO_HOME/runs/<job>/adapter``)::

    <output_dir>/                  the artifact: PEFT adapter, or a full model (safetensors + tokenizer)
    <output_dir>/whetstone-run.json   lineage: base model, method, dataset name/version/hash, results
    <checkpoint_dir>/checkpoint-N/ resumable checkpoints (default: ``<output_dir>/../checkpoints``)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from studio.errors import ValidationError
from studio.inference.torch_setup import import_torch
from studio.jobs.reporter import JobReporter
from studio.training.config import FinetuneConfig, config_to_dict, method_specs
from studio.training.data import check_template_renders, split_examples, tokenize_rows
from studio.training.methods import (
    Device,
    kto_config_for,
    load_model,
    peft_config_for,
    pick_device,
    sft_config_for,
)

log = logging.getLogger(__name__)

RUN_FILE = "whetstone-run.json"
RUN_FORMAT = "whetstone-run/1"

StopReason = Literal["completed", "cancelled", "early_stopping"]


@dataclass
class TrainingResult:
    """What a training run produced. ``artifact_path`` is None when it was cancelled (resume it instead)."""

    stopped: StopReason
    artifact: Literal["adapter", "model"]
    artifact_path: Path | None
    steps: int
    total_steps: int
    epoch: float
    train_loss: float | None
    eval_loss: float | None
    best_eval_loss: float | None
    seconds: float
    seconds_per_step: float | None
    last_checkpoint: Path | None
    trainable_params: int
    total_params: int
    train_examples: int
    eval_examples: int
    #: of ``seconds``, the time before the model started loading: importing torch, transformers, TRL and PEFT
    #: (seconds in a fresh job process, nothing where they were imported already)
    startup_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the job row's result)."""
        data = asdict(self)
        for key in ("artifact_path", "last_checkpoint"):
            data[key] = str(data[key]) if data[key] is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingResult:
        """The inverse of :meth:`to_dict` (a launched run's ``result.json``)."""
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key in ("artifact_path", "last_checkpoint"):
            values[key] = Path(values[key]) if values[key] is not None else None
        return cls(**values)


def format_duration(seconds: float) -> str:
    """``75`` → ``"1 min 15 s"``; ``4000`` → ``"1 h 7 min"``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60} min"


def _count_params(model: Any) -> tuple[int, int]:
    def size(p: Any) -> int:  # DeepSpeed ZeRO-3 leaves an empty shard in place and keeps the real size aside
        return int(getattr(p, "ds_numel", 0) or p.numel())

    trainable = sum(size(p) for p in model.parameters() if p.requires_grad)
    total = sum(size(p) for p in model.parameters())
    return int(trainable), int(total)


def world_size() -> int:
    """How many training processes this run has (``accelerate launch`` sets ``WORLD_SIZE``; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class BuildTimes:
    """How long building a trainer took: loading the model and tokenizer, then preparing the data (TRL tokenises
    every example, masks the prompts and wraps the model in its PEFT adapter)."""

    load_seconds: float
    tokenise_seconds: float


def _no_phase(_message: str) -> None:
    """Where nobody watches the phases (estimates, scripts)."""


def _build_trainer(
    config: FinetuneConfig,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    model_path: Path,
    checkpoint_dir: Path,
    device: Device,
    callbacks: Sequence[Any],
    *,
    max_steps: int | None = None,
    evaluate: bool = True,
    phase: Callable[[str], None] = _no_phase,
) -> tuple[Any, BuildTimes]:
    """The trainer for the config and how long its two phases took; ``phase`` hears each phase's name as it starts.

    Supervised methods: an ``SFTTrainer`` on rows tokenised here with the chat template, every assistant message
    learned and everything else masked (:func:`studio.training.data.tokenize_row`). ``kto``: a ``KTOTrainer`` on
    the prompt / completion / label rows (TRL tokenises them)."""
    from datasets import Dataset
    from transformers import PrinterCallback

    has_eval = evaluate and bool(eval_rows)
    # The arguments come before the weights: under accelerate launch they set up the process group and, with
    # DeepSpeed ZeRO-3, the state from_pretrained reads to load the weights already sharded (FSDP likewise loads
    # them on the first process only); made after the model, every process would load a full copy first.
    if config.method == "kto":
        args = kto_config_for(config, checkpoint_dir, device, has_eval=has_eval, max_steps=max_steps)
    else:
        args = sft_config_for(config, checkpoint_dir, device, has_eval=has_eval, max_steps=max_steps)
    if world_size() > 1:
        _ = args.device  # initialises torch.distributed (the accelerate state) before the weights load
    phase("loading the base model")
    started = time.perf_counter()
    model, tokenizer = load_model(config, model_path, device)
    loaded = time.perf_counter()
    phase(f"tokenising {_examples_text(len(train_rows), len(eval_rows) if has_eval else 0)}")
    trainer: Any
    if config.method == "kto":
        from trl import KTOTrainer  # type: ignore[attr-defined]  # lazy-module export

        trainer = KTOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(eval_rows) if has_eval else None,
            processing_class=tokenizer,
            peft_config=peft_config_for(config),
            callbacks=list(callbacks),
        )
    else:
        from trl import SFTTrainer  # type: ignore[attr-defined]  # lazy-module export

        check_template_renders(tokenizer, [*train_rows, *eval_rows], config.base_model)
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(tokenize_rows(tokenizer, train_rows)),
            eval_dataset=Dataset.from_list(tokenize_rows(tokenizer, eval_rows)) if has_eval else None,
            processing_class=tokenizer,
            peft_config=peft_config_for(config),
            callbacks=list(callbacks),
        )
    # With progress bars off, transformers prints every log dict to stdout; the reporter gets them instead.
    trainer.remove_callback(PrinterCallback)
    return trainer, BuildTimes(loaded - started, time.perf_counter() - loaded)


def _import_training_libraries() -> None:
    """Import what training uses, so that its cost (seconds in a fresh process) is timed apart from loading."""
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import_torch()


def _examples_text(train_count: int, eval_count: int) -> str:
    """``"45 training and 5 evaluation examples"`` (or ``"45 training examples"``)."""
    return f"{train_count} training" + (f" and {eval_count} evaluation" if eval_count else "") + " examples"


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The ``checkpoint-N`` directory with the highest N (what resume continues from), or None."""
    found = [p for p in checkpoint_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def _check_resume(resume_from: Path | None) -> Path | None:
    if resume_from is None:
        return None
    if resume_from.is_dir() and not (resume_from / "trainer_state.json").is_file():
        inner = latest_checkpoint(resume_from)  # a checkpoints folder: take its newest checkpoint
        if inner is not None:
            return inner
    if not (resume_from / "trainer_state.json").is_file():
        raise ValidationError(
            f"cannot resume from {resume_from}: not a training checkpoint (no trainer_state.json)", param="resume_from"
        )
    return resume_from


def train(
    config: FinetuneConfig,
    examples: Sequence[Mapping[str, Any]],
    model_path: Path,
    output_dir: Path,
    reporter: JobReporter,
    resume_from: Path | None = None,
    *,
    checkpoint_dir: Path | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainingResult:
    """Fine-tune the model in ``model_path`` on ``examples`` as ``config`` says; save the artifact in ``output_dir``.

    ``examples`` are canonical chat examples (or preference pairs, trained on the chosen reply; for method ``kto``,
    KTO examples or preference pairs split into a desirable and an undesirable reply). Progress,
    curves, checkpoints and the log go to ``reporter``; when ``reporter.should_stop()`` turns true the run saves
    a checkpoint after the current step and returns with ``stopped="cancelled"`` and no artifact.
    ``resume_from`` (a ``checkpoint-N`` dir, or a folder of them) continues that run's step count, optimizer and
    scheduler. Early stopping ends the run when eval loss stops improving; the artifact then holds the last weights.
    ``callbacks`` are extra ``TrainerCallback``s (benchmarks and tests time steps with them).
    """
    started = time.perf_counter()
    spec = method_specs()[config.method]
    checkpoint_dir = checkpoint_dir or output_dir.parent / "checkpoints"
    resume_path = _check_resume(resume_from)
    train_rows, eval_rows = split_examples(examples, config.validation_split, config.seed, kto=config.method == "kto")
    device = pick_device()
    processes = world_size()
    where = f"{processes} {device.name} processes" if processes > 1 else device.name
    reporter.log(
        f"fine-tuning {config.base_model} with {spec.label} on {len(train_rows)} examples "
        f"({len(eval_rows)} held out for eval loss) on {where} in {device.dtype_name}"
    )
    if reporter.should_stop():
        reporter.log("cancelled before training started")
        return TrainingResult(
            "cancelled", spec.artifact, None, 0, 0, 0.0, None, None, None, 0.0, None, None, 0, 0,
            len(train_rows), len(eval_rows),
        )  # fmt: skip

    def phase(message: str) -> None:  # the monitor shows it beside its progress bar
        reporter.progress(0, None, 0.0, None, message)

    phase("importing the training libraries")
    _import_training_libraries()
    startup = time.perf_counter() - started
    reporter.log(f"imported torch, transformers, TRL and PEFT in {startup:.1f} s")
    import_torch().manual_seed(config.seed)
    from studio.training.callbacks import ReporterCallback

    callback = ReporterCallback(
        reporter,
        early_stopping_patience=config.early_stopping_patience,
        early_stopping_threshold=config.early_stopping_threshold,
    )
    trainer, times = _build_trainer(
        config, train_rows, eval_rows, model_path, checkpoint_dir, device, [callback, *callbacks], phase=phase
    )
    reporter.log(f"loaded the base model in {times.load_seconds:.1f} s")
    has_eval = trainer.eval_dataset is not None
    prepared = _examples_text(len(train_rows), len(eval_rows) if has_eval else 0)
    reporter.log(f"tokenised {prepared} in {times.tokenise_seconds:.1f} s")
    trainable, total = _count_params(trainer.model)
    reporter.log(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.3f}%)")

    output = trainer.train(resume_from_checkpoint=str(resume_path) if resume_path else None)
    state = trainer.state
    trainer.model.eval()  # dropout off (and checkpointing's train mode) for anyone generating with it next

    stopped: StopReason = (
        "cancelled" if callback.cancelled else "early_stopping" if callback.stopped_early else "completed"
    )
    artifact_path: Path | None = None
    if stopped != "cancelled":
        reporter.progress(state.global_step, state.max_steps, state.epoch, 0.0, f"saving the {spec.artifact}")
        artifact_path = output_dir
        _save_artifact(trainer, output_dir)
    last_checkpoint = latest_checkpoint(checkpoint_dir)
    train_loss = callback.last_train_loss
    if train_loss is None and output is not None and math.isfinite(float(output.training_loss)):
        train_loss = float(output.training_loss)
    result = TrainingResult(
        stopped=stopped,
        artifact=spec.artifact,
        artifact_path=artifact_path,
        steps=int(state.global_step),
        total_steps=int(state.max_steps),
        epoch=float(state.epoch or 0.0),
        train_loss=train_loss,
        eval_loss=callback.last_eval_loss,
        best_eval_loss=callback.best_eval_loss,
        seconds=time.perf_counter() - started,
        seconds_per_step=callback.seconds_per_step(),
        last_checkpoint=last_checkpoint,
        trainable_params=trainable,
        total_params=total,
        train_examples=len(train_rows),
        eval_examples=len(eval_rows),
        startup_seconds=startup,
    )
    if artifact_path is not None and trainer.is_world_process_zero():
        write_run_file(output_dir, config, model_path, result)
    reporter.progress(result.steps, result.total_steps, result.epoch, 0.0, stopped)
    reporter.log(f"training {stopped} at step {result.steps}/{result.total_steps} in {format_duration(result.seconds)}")
    return result


def _save_artifact(trainer: Any, output_dir: Path) -> None:
    """The adapter (PEFT format) or the full model (safetensors), plus the tokenizer, into ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model = trainer.model
    model.config.use_cache = True  # turned off for training; generation wants it back
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(output_dir))
        # SFTTrainer writes its own model card; ours is whetstone-run.json
        (output_dir / "README.md").unlink(missing_ok=True)


def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def write_run_file(output_dir: Path, config: FinetuneConfig, model_path: Path, result: TrainingResult) -> Path:
    """Write ``whetstone-run.json``: the artifact's lineage (dataset version → job → artifact) and results."""
    data = {
        "format": RUN_FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifact": result.artifact,
        "name": config.artifact_name,
        "method": config.method,
        "method_params": config.method_params(),
        "base_model": config.base_model,
        "base_model_path": str(model_path),
        "quantized_base": "bitsandbytes-nf4" if config.method == "qlora" else None,
        "dataset": {"name": config.dataset, "version": config.dataset_version, "hash": config.dataset_hash},
        "result": result.to_dict(),
        "config": config_to_dict(config),
        "versions": _package_versions(),
    }
    path = output_dir / RUN_FILE
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def read_run_file(artifact_dir: Path) -> dict[str, Any] | None:
    """The lineage record of a trained artifact, or None if the directory has none."""
    path = artifact_dir / RUN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == RUN_FORMAT else None
