"""Preference training: the ``dpo`` and ``reward`` job kinds (TRL ``DPOTrainer`` / ``RewardTrainer``, LoRA by
default), trained on a preference dataset version (``{"prompt": [...], "chosen", "rejected"}`` pairs, e.g. the
Compare tab's export).

``DpoConfig`` / ``RewardModelConfig`` are the one schema for the YAML file, the Compare tab's form and the stored
job row; :func:`dpo_args` / :func:`reward_args` are the only places that map their fields onto TRL's names.

Artifacts: a DPO LoRA run saves a PEFT adapter, registered under ``STUDIO_HOME/adapters/<name>`` so Compare
and the Playground load it by name on its base model (``whetstone-run.json`` records the base); a full DPO
run saves a model under ``models/``. A reward model is a sequence classifier with one output (LoRA merged into
it); it is saved in the run folder (``runs/<job>/artifact``) and not registered as a chat model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field

from studio.errors import ValidationError
from studio.jobs.kinds import JobKind, register_kind
from studio.jobs.reporter import JobReporter
from studio.jobs.runtime import JobRuntime
from studio.settings import BUNDLED_MODEL_ID, Settings

log = logging.getLogger(__name__)

DpoLoss = Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "apo_down"]
DPO_LOSSES: tuple[str, ...] = get_args(DpoLoss)
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
RUN_FILE = "whetstone-run.json"
RUN_FORMAT = "whetstone-run/1"


class PreferenceJobConfig(BaseModel):
    """What DPO and reward-model jobs share: the preference data, the base model, LoRA and the schedule."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(min_length=1, max_length=100, description="A name for the job, shown in the job list.")
    dataset: str = Field(min_length=1, max_length=200, description="Preference dataset (prompt/chosen/rejected).")
    dataset_version: int | None = Field(None, ge=1, description="Version to train on; empty means the latest.")
    dataset_hash: str | None = Field(
        None, pattern=r"^[0-9a-f]{8,64}$", description="Content hash of the version; filled in at submit time."
    )
    base_model: str = Field(BUNDLED_MODEL_ID, min_length=1, description="Base model: registry id, alias or path.")
    method: Literal["lora", "full"] = Field("lora", description="lora (an adapter; default) or full (every weight).")
    lora_r: int = Field(8, ge=1, le=512, description="LoRA rank r (1-512).")
    lora_alpha: int = Field(16, ge=1, le=2048, description="LoRA alpha (1-2048), typically 2x the rank.")
    lora_dropout: float = Field(0.05, ge=0.0, le=0.5, description="LoRA dropout (0-0.5).")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="Layers LoRA adapts; empty for the architecture's usual choice."
    )
    epochs: float = Field(1.0, gt=0.0, le=100.0, description="Passes over the pairs (more than 0, up to 100).")
    max_steps: int | None = Field(None, ge=1, le=1_000_000, description="Stop after this many steps; overrides epochs.")
    batch_size: int = Field(2, ge=1, le=512, description="Pairs per device per step (1-512).")
    gradient_accumulation: int = Field(1, ge=1, le=1024, description="Steps summed before each update (1-1024).")
    learning_rate: float = Field(5e-5, gt=0.0, le=1.0, description="Peak learning rate.")
    max_length: int = Field(512, ge=16, le=131072, description="Longest prompt + reply in tokens; longer is cut.")
    logging_steps: int = Field(1, ge=1, le=10_000, description="Record the curves every N steps.")
    checkpoint_every_steps: int = Field(
        50, ge=1, le=1_000_000, description="Save a resumable checkpoint every N steps."
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Random seed.")
    priority: int = Field(0, ge=-100, le=100, description="Queue priority; higher runs first.")
    not_before: datetime | None = Field(None, description="Do not start before this time; empty = now.")
    output_name: str | None = Field(
        None, max_length=100, pattern=_NAME_PATTERN, description="Name of the saved adapter/model; empty = job name."
    )

    @property
    def artifact_name(self) -> str:
        """``output_name``, else the job name made file-system safe."""
        if self.output_name:
            return self.output_name
        safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in self.name).strip("-.") or "preference"
        return safe[:100]


class DpoConfig(PreferenceJobConfig):
    """Direct Preference Optimization (TRL ``DPOTrainer``): learn to prefer the chosen replies."""

    kind: Literal["dpo"] = Field("dpo", description="Job kind; always 'dpo' for this schema.")
    beta: float = Field(
        0.1, gt=0.0, le=10.0, description="β: how far the model may move from the reference (higher = less)."
    )
    loss_type: DpoLoss = Field("sigmoid", description="DPO loss: sigmoid (the paper's), hinge, ipo, robust, ...")


class RewardModelConfig(PreferenceJobConfig):
    """A reward model (TRL ``RewardTrainer``): a one-output classifier scoring chosen above rejected."""

    kind: Literal["reward"] = Field("reward", description="Job kind; always 'reward' for this schema.")
    center_rewards_coefficient: float | None = Field(
        None, ge=0.0, le=1.0, description="Pull the rewards' mean towards 0 (TRL's coefficient; empty = off)."
    )


AnyPreferenceConfig = DpoConfig | RewardModelConfig


def config_yaml(config: AnyPreferenceConfig) -> str:
    """The config as YAML (what the Compare tab prefills and ``studio jobs submit`` reads)."""
    data = config.model_dump(mode="json", exclude_none=True)
    ordered = {"kind": data.pop("kind"), "name": data.pop("name"), **data}
    return yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True)


def parse_config_yaml(text: str) -> AnyPreferenceConfig:
    """YAML text → ``DpoConfig`` or ``RewardModelConfig`` (by its ``kind``); errors name the field."""
    import pydantic

    try:
        data = yaml.safe_load(text or "")
    except yaml.YAMLError as exc:
        raise ValidationError(f"the job config is not valid YAML: {exc}", param="config") from None
    if not isinstance(data, dict):
        raise ValidationError("the job config must be a YAML mapping (key: value lines)", param="config")
    kind = data.get("kind")
    model: type[DpoConfig] | type[RewardModelConfig]
    if kind == "dpo":
        model = DpoConfig
    elif kind == "reward":
        model = RewardModelConfig
    else:
        raise ValidationError(f"kind must be 'dpo' or 'reward', not {kind!r}", param="kind")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        first = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else "config"
        raise ValidationError(f"invalid {kind} job config: {problems}", param=first) from None


# -- mapping onto TRL / PEFT ---------------------------------------------------------------------------------------
def _common_args(config: PreferenceJobConfig, output_dir: Path, bf16: bool, cpu: bool) -> dict[str, Any]:
    return {
        "output_dir": str(output_dir),
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps if config.max_steps is not None else -1,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "learning_rate": config.learning_rate,
        "max_length": config.max_length,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": config.checkpoint_every_steps,
        "save_total_limit": 2,
        "seed": config.seed,
        "data_seed": config.seed,
        "bf16": bf16,
        "fp16": False,
        "use_cpu": cpu,
        "report_to": [],
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def dpo_args(config: DpoConfig, output_dir: Path, *, bf16: bool = False, cpu: bool = True) -> Any:
    """TRL's ``DPOConfig`` for our config."""
    from trl import DPOConfig as TrlDpoConfig  # type: ignore[attr-defined]

    return TrlDpoConfig(beta=config.beta, loss_type=[config.loss_type], **_common_args(config, output_dir, bf16, cpu))


def reward_args(config: RewardModelConfig, output_dir: Path, *, bf16: bool = False, cpu: bool = True) -> Any:
    """TRL's ``RewardConfig`` for our config."""
    from trl import RewardConfig as TrlRewardConfig  # type: ignore[attr-defined]

    extra: dict[str, Any] = {}
    if config.center_rewards_coefficient is not None:
        extra["center_rewards_coefficient"] = config.center_rewards_coefficient
    return TrlRewardConfig(**_common_args(config, output_dir, bf16, cpu), **extra)


def lora_config_for(config: PreferenceJobConfig, task: Literal["CAUSAL_LM", "SEQ_CLS"]) -> Any | None:
    """PEFT ``LoraConfig`` (None for full training)."""
    if config.method != "lora":
        return None
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType[task],
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        bias="none",
    )


# -- training ------------------------------------------------------------------------------------------------------
def _rows(examples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    from studio.datasets.formats import to_trl_record

    rows = []
    for i, example in enumerate(examples):
        if not {"prompt", "chosen", "rejected"} <= set(example):
            raise ValidationError(
                f"example {i + 1} is not a preference pair (prompt/chosen/rejected); DPO and reward models need "
                "a preference dataset such as the Compare tab's export",
                param="dataset",
            )
        rows.append(to_trl_record(example))
    if not rows:
        raise ValidationError("no training pairs: the dataset is empty", param="dataset")
    return rows


def train_preference(
    config: AnyPreferenceConfig,
    examples: Sequence[Mapping[str, Any]],
    model_path: Path,
    output_dir: Path,
    reporter: JobReporter,
    *,
    checkpoint_dir: Path | None = None,
    resume_from: Path | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train DPO or a reward model on preference ``examples``; save the artifact in ``output_dir``.

    Returns a JSON-able summary (``stopped``, ``steps``, ``train_loss``, ``artifact``, ``artifact_path``);
    a cancelled run saves a checkpoint and no artifact. ``callbacks`` are extra ``TrainerCallback``s.
    """
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback

    from studio.inference.torch_setup import import_torch
    from studio.training.callbacks import ReporterCallback
    from studio.training.methods import pick_device

    started = time.perf_counter()
    torch = import_torch()
    torch.manual_seed(config.seed)
    device = pick_device()
    rows = _rows(examples)
    checkpoint_dir = checkpoint_dir or output_dir.parent / "checkpoints"
    tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if device.bf16 else torch.float32
    reporter.log(f"{config.kind} on {len(rows)} preference pairs from {model_path} ({config.method}, {device.name})")
    callback = ReporterCallback(reporter)
    reporter.progress(0, None, 0.0, None, "loading model")
    trainer: Any
    if isinstance(config, DpoConfig):
        from transformers import AutoModelForCausalLM
        from trl import DPOTrainer  # type: ignore[attr-defined]

        model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=dtype, local_files_only=True)
        model.config.use_cache = False
        trainer = DPOTrainer(
            model=model,
            args=dpo_args(config, checkpoint_dir, bf16=device.bf16, cpu=device.name == "cpu"),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora_config_for(config, "CAUSAL_LM"),
            callbacks=[callback, *callbacks],
        )
    else:
        from transformers import AutoModelForSequenceClassification
        from trl import RewardTrainer  # type: ignore[attr-defined]

        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_path), num_labels=1, dtype=dtype, local_files_only=True
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        trainer = RewardTrainer(
            model=model,
            args=reward_args(config, checkpoint_dir, bf16=device.bf16, cpu=device.name == "cpu"),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora_config_for(config, "SEQ_CLS"),
            callbacks=[callback, *callbacks],
        )
    trainer.remove_callback(PrinterCallback)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    trained: Any = trainer.model
    trained.eval()
    state = trainer.state
    stopped = "cancelled" if callback.cancelled else "completed"
    artifact = "adapter" if isinstance(config, DpoConfig) and config.method == "lora" else "model"
    artifact_path: Path | None = None
    if stopped == "completed":
        output_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(config, RewardModelConfig) and config.method == "lora":
            merged = trained.merge_and_unload()  # one plain classifier: loads without PEFT
            merged.save_pretrained(str(output_dir))
        else:
            trained.config.use_cache = True
            trainer.save_model(str(output_dir))
        tokenizer.save_pretrained(str(output_dir))
        (output_dir / "README.md").unlink(missing_ok=True)
        artifact_path = output_dir
    result: dict[str, Any] = {
        "stopped": stopped,
        "kind": config.kind,
        "artifact": artifact,
        "artifact_path": str(artifact_path) if artifact_path else None,
        "steps": int(state.global_step),
        "total_steps": int(state.max_steps),
        "epoch": float(state.epoch or 0.0),
        "train_loss": callback.last_train_loss,
        "seconds": time.perf_counter() - started,
        "train_examples": len(rows),
    }
    if artifact_path is not None:
        _write_run_file(artifact_path, config, model_path, result)
    steps, total = int(state.global_step), int(state.max_steps)
    reporter.progress(steps, total, float(state.epoch or 0.0), 0.0, stopped)
    reporter.log(f"{config.kind} training {stopped} at step {steps}/{total}")
    return result


def _write_run_file(output_dir: Path, config: AnyPreferenceConfig, model_path: Path, result: dict[str, Any]) -> None:
    """``whetstone-run.json``: lineage (dataset version → job → artifact), the base model, the results."""
    data = {
        "format": RUN_FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifact": result["artifact"],
        "name": config.artifact_name,
        "method": config.kind,
        "method_params": {
            "peft": config.method,
            **({"beta": config.beta, "loss_type": config.loss_type} if isinstance(config, DpoConfig) else {}),
        },
        "base_model": config.base_model,
        "base_model_path": str(model_path),
        "dataset": {"name": config.dataset, "version": config.dataset_version, "hash": config.dataset_hash},
        "result": result,
        "config": config.model_dump(mode="json"),
    }
    (output_dir / RUN_FILE).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


# -- job kinds -----------------------------------------------------------------------------------------------------
def prepare_preference(settings: Settings, db: Any, config: AnyPreferenceConfig) -> AnyPreferenceConfig:
    """At submit time: the dataset version exists and holds preference pairs (its number and hash are pinned),
    and the base model resolves."""
    from studio.training.job import _store, resolve_base_model

    version = _store(settings, db).get_version(config.dataset, config.dataset_version)
    if version.kind != "preference":
        raise ValidationError(
            f"dataset '{config.dataset}' v{version.number} holds {version.kind} examples; {config.kind} needs "
            "preference pairs (export them from the Compare tab)",
            param="dataset",
        )
    resolve_base_model(settings, config.base_model)
    return config.model_copy(update={"dataset_version": version.number, "dataset_hash": version.content_hash})


def run_preference(config: AnyPreferenceConfig, runtime: JobRuntime) -> dict[str, Any]:
    """The job body of ``dpo`` and ``reward``: load the pinned dataset version, train, register the artifact."""
    from studio.training.job import _store, register_artifact, resolve_base_model

    settings = runtime.settings
    version = _store(settings, runtime.db).get_version(config.dataset, config.dataset_version)
    if config.dataset_hash and not version.content_hash.startswith(config.dataset_hash):
        raise ValidationError(
            f"dataset '{config.dataset}' v{version.number} changed since the job was submitted", param="dataset_hash"
        )
    examples = _store(settings, runtime.db).load_examples(version)
    config = config.model_copy(update={"dataset_version": version.number, "dataset_hash": version.content_hash})
    model_path = resolve_base_model(settings, config.base_model)
    runtime.log(f"dataset {config.dataset} v{version.number} ({len(examples)} pairs); base model {config.base_model}")
    data = train_preference(
        config, examples, model_path, runtime.run_dir / "artifact", runtime,
        checkpoint_dir=runtime.run_dir / "checkpoints", resume_from=runtime.resume_from,
    )  # fmt: skip
    data["dataset"] = {"name": config.dataset, "version": version.number, "version_id": version.id}
    data["base_model"] = config.base_model
    path = data.get("artifact_path")
    if path and not (isinstance(config, RewardModelConfig)):
        name = register_artifact(settings, Path(path), config.artifact_name, data["artifact"], runtime.job.id)
        data["registered_as"] = name
        runtime.log(f"saved the {data['artifact']} as '{name}' ({path})")
    elif path:
        runtime.log(f"saved the reward model in {path}")
    return data


DPO_KIND = register_kind(
    JobKind(
        "dpo",
        DpoConfig,
        run_preference,
        "Direct Preference Optimization with TRL's DPOTrainer (LoRA by default) on preference pairs.",
        prepare=lambda config, settings, db: prepare_preference(settings, db, config),
    )
)
REWARD_KIND = register_kind(
    JobKind(
        "reward",
        RewardModelConfig,
        run_preference,
        "A reward model with TRL's RewardTrainer (LoRA merged into a one-output classifier) on preference pairs.",
        prepare=lambda config, settings, db: prepare_preference(settings, db, config),
    )
)
