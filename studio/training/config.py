"""The fine-tuning job config: one schema for the YAML file, the wizard form, the CLI and the stored job row.

``FinetuneConfig`` documents every field once (help text, range, default); the UI shows that text as the
tooltip. Method-specific defaults ("smart defaults": full fine-tuning gets a lower learning rate than LoRA)
live in ``configs/finetune/<method>.yaml`` and fill in whatever a config leaves out, so
``FinetuneConfig(name=..., dataset=..., method="full")`` is already a sensible full fine-tune.

This module imports neither torch nor TRL: the CLI and the UI validate configs without loading them.
Only :mod:`studio.training.methods` maps these fields onto PEFT / TRL argument names.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from studio.errors import ValidationError
from studio.settings import BUNDLED_MODEL_ID, CONFIG_DIR
from studio.user_messages import user_sentence

log = logging.getLogger(__name__)

Method = Literal["lora", "qlora", "prefix", "adapter", "full", "kto"]
METHODS: tuple[Method, ...] = get_args(Method)
LrScheduler = Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"]
Strategy = Literal["auto", "ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
#: strategies that shard the model or its optimizer state over the processes (CUDA only, run time)
SHARDED_STRATEGIES: tuple[Strategy, ...] = ("deepspeed_zero2", "deepspeed_zero3", "fsdp")
#: methods the sharded strategies are offered for (DDP runs every method): PEFT documents LoRA/QLoRA with
#: DeepSpeed and FSDP, and leaves prompt-learning methods (prefix) out of its FSDP support
SHARDED_METHODS: tuple[Method, ...] = ("lora", "qlora", "full")
FINETUNE_CONFIG_DIR = CONFIG_DIR / "finetune"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class FinetuneConfig(BaseModel):
    """A fine-tuning job: which labelled examples, which base model, which method, how long (supervised
    fine-tuning, or KTO with method ``kto``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: Literal["finetune"] = Field("finetune", description="Job kind; always 'finetune' for this schema.")
    name: str = Field(
        min_length=1, max_length=100, description="A name for the job, shown in the job list (1-100 characters)."
    )

    # -- step 1: labelled examples -------------------------------------------------------------------------
    dataset: str = Field(min_length=1, max_length=200, description="Name of the training dataset (labelled examples).")
    dataset_version: int | None = Field(
        None, ge=1, description="Dataset version to train on (1 or more); empty means the latest version."
    )
    dataset_hash: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{8,64}$",
        description="Content hash of the dataset version; filled in when the job is submitted, for lineage.",
    )
    validation_split: float = Field(
        0.1,
        ge=0.0,
        le=0.5,
        description="Fraction of examples held out to measure eval loss (0-0.5); 0 disables evaluation.",
    )

    # -- step 2: base model and method ---------------------------------------------------------------------
    base_model: str = Field(
        BUNDLED_MODEL_ID,
        min_length=1,
        max_length=1024,
        description="Base model: a registry id, an alias or a model folder under STUDIO_HOME or STUDIO_MODEL_DIRS.",
    )
    method: Method = Field(
        "lora",
        description="Fine-tuning method: lora, qlora, prefix (prefix tuning), adapter (IA3 adapter layers), full, "
        "kto (KTO on replies labelled desirable / undesirable, as a LoRA adapter).",
    )
    lora_r: int = Field(
        8, ge=1, le=512, description="LoRA rank r (1-512). Lower = faster, higher = better quality (typical: 8-64)."
    )
    lora_alpha: int = Field(
        16, ge=1, le=2048, description="LoRA alpha (1-2048): scaling of the update, typically 2x the rank."
    )
    lora_dropout: float = Field(
        0.05, ge=0.0, le=0.5, description="LoRA dropout (0-0.5): prevents overfitting (0.0-0.3 recommended)."
    )
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None,
        description="Layers LoRA adapts: module names (e.g. q_proj, v_proj), 'all-linear', or empty for the "
        "architecture's usual choice.",
    )
    num_virtual_tokens: int = Field(
        20, ge=1, le=512, description="Prefix tuning: number of learned virtual tokens per layer (1-512)."
    )
    adapter_target_modules: list[str] | None = Field(
        None,
        description="Adapter layers (IA3): modules whose activations get a learned scale; empty for the "
        "architecture's usual choice (keys, values, feed-forward down projection).",
    )
    adapter_feedforward_modules: list[str] | None = Field(
        None,
        description="Adapter layers (IA3): which of the target modules are feed-forward layers (scaled on their "
        "input); must be a subset of adapter_target_modules.",
    )
    kto_beta: float = Field(
        0.1, gt=0.0, le=10.0, description="KTO β (more than 0, up to 10): how far the model may move from the base."
    )
    kto_desirable_weight: float = Field(
        1.0, gt=0.0, le=100.0, description="KTO: weight of the desirable replies' loss (more than 0, up to 100)."
    )
    kto_undesirable_weight: float = Field(
        1.0, gt=0.0, le=100.0, description="KTO: weight of the undesirable replies' loss (more than 0, up to 100)."
    )

    # -- step 3: training parameters -----------------------------------------------------------------------
    epochs: float = Field(
        3.0, gt=0.0, le=100.0, description="Passes over the training examples (more than 0, up to 100)."
    )
    max_steps: int | None = Field(
        None, ge=1, le=1_000_000, description="Stop after this many optimizer steps (1-1,000,000); overrides epochs."
    )
    batch_size: int = Field(4, ge=1, le=512, description="Examples per device per step (1-512).")
    gradient_accumulation: int = Field(
        1, ge=1, le=1024, description="Steps whose gradients are summed before each update (1-1024)."
    )
    learning_rate: float = Field(2e-4, gt=0.0, le=1.0, description="Peak learning rate (more than 0, up to 1).")
    lr_scheduler: LrScheduler = Field("linear", description="How the learning rate changes over training.")
    warmup_ratio: float = Field(
        0.03, ge=0.0, le=0.5, description="Fraction of steps spent warming the learning rate up from 0 (0-0.5)."
    )
    max_length: int = Field(
        512, ge=16, le=131072, description="Longest example in tokens (16-131072); longer ones are truncated."
    )
    packing: bool = Field(False, description="Pack several short examples into one sequence of max_length tokens.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about 20% slower."
    )
    eval_every_steps: int | None = Field(
        10, ge=1, le=1_000_000, description="Measure eval loss every N steps (1 or more); empty = once per epoch."
    )
    early_stopping_patience: int = Field(
        0,
        ge=0,
        le=100,
        description="Stop after this many evaluations without improvement of eval loss (0-100); 0 disables it.",
    )
    early_stopping_threshold: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="Smallest drop in eval loss that counts as an improvement (0-10).",
    )
    checkpoint_every_steps: int = Field(
        50, ge=1, le=1_000_000, description="Save a resumable checkpoint every N steps (1 or more)."
    )
    logging_steps: int = Field(
        1, ge=1, le=10_000, description="Record train loss, learning rate and grad norm every N steps (1-10,000)."
    )
    seed: int = Field(
        42, ge=0, le=2**32 - 1, description="Random seed for shuffling and initialisation (0-4294967295)."
    )
    strategy: Strategy = Field(
        "auto",
        description="How training uses several processes: auto (one process on CPU or one GPU, DDP over every "
        "visible GPU when there are several), ddp (a full model copy per process, gradients averaged; on CPU with "
        "num_processes 2 or more, CPU processes over gloo), deepspeed_zero2 (DeepSpeed ZeRO-2: optimizer state and "
        "gradients sharded), deepspeed_zero3 (ZeRO-3: weights sharded too), fsdp (PyTorch FSDP, weights sharded). "
        "DeepSpeed and FSDP need CUDA GPUs and the lora, qlora or full method. Settings: "
        "configs/distributed/<strategy>.yaml.",
    )
    num_processes: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Training processes (1-1024), one per GPU; empty = every visible GPU (one process without a "
        "GPU). Without a GPU, 2 or more runs DDP over that many CPU processes.",
    )
    cpu_offload: bool = Field(
        False,
        description="Keep optimizer state (ZeRO-3 and FSDP: the weights too) in CPU memory between uses: larger "
        "models fit on the GPUs, steps are slower. Only with strategy deepspeed_zero2, deepspeed_zero3 or fsdp.",
    )

    # -- step 4: schedule ----------------------------------------------------------------------------------
    priority: int = Field(
        0, ge=-100, le=100, description="Queue priority (-100 to 100); higher runs first among queued jobs."
    )
    not_before: datetime | None = Field(None, description="Do not start before this date and time; empty = now.")

    # -- output --------------------------------------------------------------------------------------------
    output_name: str | None = Field(
        None,
        max_length=100,
        pattern=_NAME_PATTERN,
        description="Name of the saved adapter or model (letters, digits, '_', '.', '-'); empty = the job name.",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_method_defaults(cls, data: Any) -> Any:
        """Fields a config leaves out take the chosen method's defaults from ``configs/finetune/<method>.yaml``."""
        if not isinstance(data, Mapping):
            return data
        method = data.get("method", "lora")
        specs = method_specs()
        if method not in specs:
            return data  # the Literal check reports it with the allowed values
        return {**specs[method].defaults, **data}

    @field_validator("strategy")
    @classmethod
    def _strategy_fits_method(cls, strategy: Strategy, info: ValidationInfo) -> Strategy:
        problem = _strategy_problem(info.data.get("method"), strategy, None, False)
        if problem is not None:
            raise ValueError(problem[1])
        return strategy

    @field_validator("num_processes")
    @classmethod
    def _processes_fit_strategy(cls, num_processes: int | None, info: ValidationInfo) -> int | None:
        if "strategy" not in info.data:  # the strategy itself was wrong and is reported on its own
            return num_processes
        problem = _strategy_problem(None, info.data["strategy"], num_processes, False)
        if problem is not None:
            raise ValueError(problem[1])
        return num_processes

    @field_validator("cpu_offload")
    @classmethod
    def _offload_fits_strategy(cls, cpu_offload: bool, info: ValidationInfo) -> bool:
        if "strategy" not in info.data:
            return cpu_offload
        problem = _strategy_problem(info.data.get("method"), info.data["strategy"], None, cpu_offload)
        if problem is not None:
            raise ValueError(problem[1])
        return cpu_offload

    @model_validator(mode="after")
    def _check_combinations(self) -> FinetuneConfig:
        # the field validators name the field; this catches what an assignment changed afterwards (method)
        problem = _strategy_problem(self.method, self.strategy, self.num_processes, self.cpu_offload)
        if problem is not None:
            raise ValueError(problem[1])
        if self.early_stopping_patience > 0 and self.validation_split == 0:
            raise ValueError(
                "early_stopping_patience needs eval loss: set validation_split above 0 or early_stopping_patience to 0"
            )
        if self.method == "kto" and self.batch_size < 2:
            raise ValueError(
                "method kto needs batch_size 2 or more: KTO estimates its KL term from the other replies in a batch"
            )
        if self.method == "kto" and self.packing:
            raise ValueError("method kto cannot pack examples: set packing to false")
        if self.method == "adapter" and self.adapter_feedforward_modules:
            targets = set(self.adapter_target_modules or [])
            extra = [m for m in self.adapter_feedforward_modules if m not in targets]
            if self.adapter_target_modules is None or extra:
                raise ValueError(
                    f"adapter_feedforward_modules must be a subset of adapter_target_modules; not targeted: "
                    f"{', '.join(extra or self.adapter_feedforward_modules)}"
                )
        return self

    @property
    def artifact_name(self) -> str:
        """The saved adapter's / model's name: ``output_name``, else the job name made file-system safe."""
        if self.output_name:
            return self.output_name
        safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in self.name).strip("-.") or "finetune"
        return safe[:100]

    def method_params(self) -> dict[str, Any]:
        """The parameters of the chosen method only (for display and lineage)."""
        return {name: getattr(self, name) for name in method_specs()[self.method].params}


def _strategy_problem(
    method: str | None, strategy: str, num_processes: int | None, cpu_offload: bool
) -> tuple[str, str] | None:
    """What is wrong with this method / strategy / processes / offload combination, as ``(field, message)``, or
    None. Only what holds on every machine; what depends on the GPUs there is checked when the job starts
    (:func:`studio.training.launch.plan_launch`)."""
    sharded = strategy in SHARDED_STRATEGIES
    if sharded and method is not None and method not in SHARDED_METHODS:
        return "strategy", (
            f"strategy {strategy} is offered for the lora, qlora and full methods only (method is {method}); "
            "use strategy ddp or auto for it"
        )
    if strategy == "ddp" and num_processes == 1:
        return "num_processes", (
            "num_processes 1 with strategy ddp is a single process: set num_processes to 2 or more, leave it empty "
            "for every visible GPU, or choose strategy auto"
        )
    if cpu_offload and not sharded:
        return "cpu_offload", (
            f"cpu_offload needs strategy deepspeed_zero2, deepspeed_zero3 or fsdp (strategy is {strategy}): DDP "
            "keeps everything on the GPUs"
        )
    if cpu_offload and method == "qlora" and strategy == "deepspeed_zero3":
        # PEFT's DeepSpeed guide: ZeRO-3 + QLoRA with CPU offloading uses *more* GPU memory than without
        return "cpu_offload", (
            "cpu_offload with method qlora and strategy deepspeed_zero3 uses more GPU memory than without it (PEFT's "
            "DeepSpeed guide): set cpu_offload to false, or use strategy fsdp for QLoRA with CPU offloading"
        )
    return None


@dataclass(frozen=True)
class MethodSpec:
    """What the wizard shows for one method, and the defaults it fills in (``configs/finetune/<method>.yaml``)."""

    method: Method
    label: str
    badge: str
    summary: str
    description: str
    bullets: tuple[str, ...]
    artifact: Literal["adapter", "model"]
    params: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    recommended: bool = False


@cache
def method_specs() -> dict[Method, MethodSpec]:
    """Every method's description, badge, parameters and defaults, read once from ``configs/finetune/``."""
    specs: dict[Method, MethodSpec] = {}
    known = set(FinetuneConfig.model_fields)
    for method in METHODS:
        path = FINETUNE_CONFIG_DIR / f"{method}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("method") != method:
            raise ValueError(f"{path} must be a mapping with 'method: {method}'")
        defaults = dict(data.get("defaults") or {})
        params = tuple(data.get("params") or ())
        unknown = sorted((set(defaults) | set(params)) - known)
        if unknown:
            raise ValueError(f"{path} names unknown config fields: {', '.join(unknown)}")
        specs[method] = MethodSpec(
            method=method,
            label=str(data["label"]),
            badge=str(data["badge"]),
            summary=str(data["summary"]),
            description=str(data["description"]),
            bullets=tuple(str(b) for b in data.get("bullets") or ()),
            artifact=data["artifact"],
            params=params,
            defaults=defaults,
            recommended=bool(data.get("recommended", False)),
        )
    return specs


@dataclass(frozen=True)
class FieldSpec:
    """One config field as a form shows it: help text, default and allowed range or choices."""

    name: str
    description: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()


def field_specs() -> dict[str, FieldSpec]:
    """Help text, default and range of every ``FinetuneConfig`` field (the UI's tooltips and slider bounds)."""
    out: dict[str, FieldSpec] = {}
    for name, info in FinetuneConfig.model_fields.items():
        low, high = _bounds(name)
        choices: tuple[str, ...] = ()
        if name == "method":
            choices = METHODS
        elif name == "lr_scheduler":
            choices = get_args(LrScheduler)
        elif name == "strategy":
            choices = STRATEGIES
        out[name] = FieldSpec(
            name=name,
            description=info.description or "",
            default=None if info.is_required() else info.default,
            minimum=low,
            maximum=high,
            choices=choices,
        )
    return out


def _bounds(name: str) -> tuple[float | None, float | None]:
    low: float | None = None
    high: float | None = None
    for meta in FinetuneConfig.model_fields[name].metadata:
        for attr in ("ge", "gt"):
            value = getattr(meta, attr, None)
            if value is not None:
                low = float(value)
        for attr in ("le", "lt"):
            value = getattr(meta, attr, None)
            if value is not None:
                high = float(value)
    return low, high


def _format_number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _explain(error: Mapping[str, Any]) -> tuple[str, str]:
    """One pydantic error as ``(field, message)`` naming the field and what it accepts."""
    loc = [str(p) for p in error.get("loc", ())]
    name = loc[0] if loc else "config"
    kind = str(error.get("type", ""))
    got = error.get("input")
    if kind == "extra_forbidden":
        known = list(FinetuneConfig.model_fields)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return name, f"unknown key '{name}'{hint}; known keys: {', '.join(known)}"
    if not loc:
        return "config", str(error.get("msg", "invalid config")).removeprefix("Value error, ")
    where = ".".join(loc)
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if name in FinetuneConfig.model_fields and kind != "value_error":  # a validator's own message says it all
        low, high = _bounds(name)
        if low is not None or high is not None:
            strict_low = any(getattr(m, "gt", None) is not None for m in FinetuneConfig.model_fields[name].metadata)
            lo = "any" if low is None else ("more than " if strict_low else "") + _format_number(low)
            hi = "any" if high is None else _format_number(high)
            message = f"{message}; allowed range: {lo} to {hi}"
    return name, f"{where}: {message} (got {got!r})"


def parse_config(data: Mapping[str, Any]) -> FinetuneConfig:
    """Validate a mapping into a :class:`FinetuneConfig`.

    Raises :class:`studio.errors.ValidationError` whose message names every wrong field with its allowed range
    (or the known keys, for an unknown one) and whose ``param`` is the first wrong field.
    """
    try:
        return FinetuneConfig.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        explained = [_explain(e) for e in exc.errors()]
        message = "invalid fine-tuning config: " + "; ".join(m for _, m in explained)
        said = "; ".join(user_sentence(e, FinetuneConfig) for e in exc.errors())  # what the wizard's toast says
        raise ValidationError(message, param=explained[0][0] if explained else None, user_message=said) from None


def config_from_yaml(text: str) -> FinetuneConfig:
    """Parse a fine-tuning config from YAML text (a job file, or the wizard's Review step)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(f"fine-tuning config is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationError("fine-tuning config must be a YAML mapping of field: value")
    return parse_config(data)


def load_config(path: Path) -> FinetuneConfig:
    """Read and validate a fine-tuning config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read fine-tuning config {path}: {exc}") from None
    return config_from_yaml(text)


_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("job", ("kind", "name")),
    ("labelled examples", ("dataset", "dataset_version", "dataset_hash", "validation_split")),
    ("base model and method", ("base_model", "method")),
    (
        "training",
        (
            "epochs",
            "max_steps",
            "batch_size",
            "gradient_accumulation",
            "learning_rate",
            "lr_scheduler",
            "warmup_ratio",
            "max_length",
            "packing",
            "gradient_checkpointing",
            "eval_every_steps",
            "early_stopping_patience",
            "early_stopping_threshold",
            "checkpoint_every_steps",
            "logging_steps",
            "seed",
            "strategy",
            "num_processes",
            "cpu_offload",
        ),
    ),
    ("schedule and output", ("priority", "not_before", "output_name")),
)


def config_to_dict(config: FinetuneConfig) -> dict[str, Any]:
    """The config as plain data in a readable order, with only the chosen method's parameters."""
    data = config.model_dump(mode="json")
    method_fields = set(method_specs()[config.method].params)
    all_method_fields = {p for spec in method_specs().values() for p in spec.params}
    out: dict[str, Any] = {}
    for _, names in _SECTIONS:
        for name in names:
            out[name] = data[name]
            if name == "method":
                out.update({p: data[p] for p in method_specs()[config.method].params})
    leftover = set(data) - set(out) - (all_method_fields - method_fields)
    out.update({k: data[k] for k in sorted(leftover)})
    return out


def config_to_yaml(config: FinetuneConfig) -> str:
    """The full config as YAML (what the Review step shows and ``studio jobs submit`` reads back)."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)


@cache
def qlora_available() -> tuple[bool, str]:
    """Whether QLoRA can run here: ``(True, "")`` or ``(False, why)``.

    Checks that bitsandbytes is installed and really quantizes a tensor to 4-bit NF4 and back on this
    machine's device (bitsandbytes >= 0.45 has a CPU backend; older builds need CUDA).
    """
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "QLoRA needs the bitsandbytes package, which is not installed (pip install bitsandbytes)."
    try:
        import bitsandbytes.functional as bnbf
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        weights = torch.randn(64, 64, device=device, dtype=torch.float32)
        packed, state = bnbf.quantize_4bit(weights, quant_type="nf4")
        restored = bnbf.dequantize_4bit(packed, state, quant_type="nf4")
        error = float((restored.float() - weights).abs().mean())
    except Exception as exc:  # any failure means: not usable here, say why
        return False, f"bitsandbytes cannot quantize to 4-bit on this machine: {type(exc).__name__}: {exc}"
    if not error < 0.2:
        return False, f"bitsandbytes 4-bit quantization is broken on this machine (mean error {error:.3f})"
    return True, ""
