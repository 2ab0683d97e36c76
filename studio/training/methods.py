"""The one place that maps :class:`FinetuneConfig` fields onto PEFT, bitsandbytes and TRL argument names.

Method → PEFT:
    lora     ``LoraConfig(r, lora_alpha, lora_dropout, target_modules)`` on the base in float32 (bf16 on CUDA)
    qlora    the same ``LoraConfig`` on a base loaded with ``BitsAndBytesConfig`` (4-bit NF4, double
             quantization) and passed through ``prepare_model_for_kbit_training``
    prefix   ``PrefixTuningConfig(num_virtual_tokens)``
    adapter  ``IA3Config(target_modules, feedforward_modules)``: learned scaling vectors on keys, values and
             feed-forward activations (PEFT has no bottleneck adapter; see ``configs/finetune/adapter.yaml``)
    full     no PEFT config: every weight trains, the artifact is a complete model
    kto      the same ``LoraConfig`` as lora, trained by TRL's ``KTOTrainer`` (``KTOConfig(beta, desirable_weight,
             undesirable_weight)``) instead of ``SFTTrainer``
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import BackendUnavailableError, ModelLoadError
from studio.inference.torch_setup import import_torch
from studio.training.config import FinetuneConfig, qlora_available

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Device:
    """Where training runs and in which precision."""

    name: str  # "cpu" or "cuda"
    bf16: bool  # mixed precision on CUDA when supported; CPU trains in float32
    count: int = 1  # CUDA devices visible (more than one → ``accelerate launch``)

    @property
    def dtype_name(self) -> str:
        return "bfloat16" if self.bf16 else "float32"


def pick_device() -> Device:
    """CUDA with bf16 where available, else the CPU in float32 (bf16 autocast on CPU loses too much accuracy
    for the small batches trained here, and fp32 keeps results reproducible)."""
    torch = import_torch()
    if torch.cuda.is_available():
        return Device("cuda", bool(torch.cuda.is_bf16_supported()), int(torch.cuda.device_count()))
    return Device("cpu", False, 0)


def peft_config_for(config: FinetuneConfig) -> Any | None:
    """The PEFT config for the chosen method (None for full fine-tuning)."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, TaskType

    if config.method in ("lora", "qlora", "kto"):
        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.target_modules,
            bias="none",
        )
    if config.method == "prefix":
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=config.num_virtual_tokens)
    if config.method == "adapter":
        return IA3Config(
            task_type=TaskType.CAUSAL_LM,
            target_modules=config.adapter_target_modules,
            feedforward_modules=config.adapter_feedforward_modules,
        )
    return None


#: strategies that shard the model's weights across ranks
SHARDED_STRATEGIES = ("fsdp", "deepspeed_zero3")


def quantization_config_for(config: FinetuneConfig, device: Device) -> Any | None:
    """The bitsandbytes 4-bit NF4 config for QLoRA (None for every other method)."""
    if config.method != "qlora":
        return None
    ok, why = qlora_available()
    if not ok:
        raise BackendUnavailableError(why, code="qlora_unavailable")
    torch = import_torch()
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if device.bf16 else torch.float32,
        # FSDP and ZeRO-3 shard the quantized weights: they must be stored in a float dtype (PEFT's QLoRA guides)
        bnb_4bit_quant_storage=torch.bfloat16 if config.strategy in SHARDED_STRATEGIES else torch.uint8,
    )


def load_model(config: FinetuneConfig, model_path: Path, device: Device) -> tuple[Any, Any]:
    """Load the base model and tokenizer from a local directory, ready to hand to ``SFTTrainer``.

    QLoRA bases are quantized while loading and prepared for k-bit training; the PEFT wrapping itself is left
    to ``SFTTrainer`` (``peft_config``) so the studio and a plain TRL script train the same way.
    """
    torch = import_torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quant = quantization_config_for(config, device)
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if device.bf16 else torch.float32, "local_files_only": True}
    if quant is not None:
        kwargs["quantization_config"] = quant
        if config.strategy not in SHARDED_STRATEGIES:  # ZeRO-3/FSDP place the shards themselves (no device_map)
            # under accelerate launch each rank holds its own quantized copy on its own GPU
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0")) if device.name == "cuda" else "cpu"}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(model_path), **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load base model from {model_path} for training: {exc}") from exc
    if tokenizer.chat_template is None:
        raise ModelLoadError(
            f"the tokenizer in {model_path} has no chat template; supervised fine-tuning on chat examples needs one"
        )
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    # KV caching is useless while training and conflicts with gradient checkpointing.
    model.config.use_cache = False
    return model, tokenizer


def _trainer_args(
    config: FinetuneConfig, output_dir: Path, device: Device, *, has_eval: bool, max_steps: int | None
) -> dict[str, Any]:
    """The ``TrainingArguments`` every method shares."""
    if has_eval:
        eval_kwargs: dict[str, Any] = {
            "eval_strategy": "steps" if config.eval_every_steps else "epoch",
            "per_device_eval_batch_size": config.batch_size,
        }
        if config.eval_every_steps:
            eval_kwargs["eval_steps"] = config.eval_every_steps
    else:
        eval_kwargs = {"eval_strategy": "no"}
    steps = max_steps if max_steps is not None else config.max_steps
    return {
        "output_dir": str(output_dir),
        "num_train_epochs": config.epochs,
        "max_steps": steps if steps is not None else -1,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler,
        "warmup_steps": config.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        "max_length": config.max_length,
        "gradient_checkpointing": config.gradient_checkpointing,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": config.checkpoint_every_steps,
        "save_total_limit": 2,
        "seed": config.seed,
        "data_seed": config.seed,
        "bf16": device.bf16,
        "fp16": False,
        "use_cpu": device.name == "cpu",
        "report_to": [],
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        **eval_kwargs,
    }


def sft_config_for(
    config: FinetuneConfig,
    output_dir: Path,
    device: Device,
    *,
    has_eval: bool,
    max_steps: int | None = None,
) -> Any:
    """TRL's ``SFTConfig`` for our config. ``output_dir`` receives the resumable ``checkpoint-N`` dirs.

    Evaluation runs every ``eval_every_steps`` (or per epoch) only when there is a validation set; logging,
    checkpoints and early stopping are reported by :class:`studio.training.callbacks.ReporterCallback`, so
    TRL's own reporting integrations and progress bars are off.
    """
    from trl import SFTConfig  # type: ignore[attr-defined]  # lazy-module export

    return SFTConfig(
        packing=config.packing,
        completion_only_loss=True,  # only the assistant's tokens (``completion_mask``) are learned
        **_trainer_args(config, output_dir, device, has_eval=has_eval, max_steps=max_steps),
    )


def kto_config_for(
    config: FinetuneConfig,
    output_dir: Path,
    device: Device,
    *,
    has_eval: bool,
    max_steps: int | None = None,
) -> Any:
    """TRL's ``KTOConfig`` for a ``kto`` config (the rows are read in the order given: they are shuffled before)."""
    from trl import KTOConfig  # type: ignore[attr-defined]  # lazy-module export

    return KTOConfig(
        beta=config.kto_beta,
        desirable_weight=config.kto_desirable_weight,
        undesirable_weight=config.kto_undesirable_weight,
        **_trainer_args(config, output_dir, device, has_eval=has_eval, max_steps=max_steps),
    )
