"""Merging a PEFT adapter into its base model and saving the result as a plain transformers model.

The base is loaded in float32 and the adapter applied through PEFT; ``merge_and_unload()`` folds the adapter's
weights into the base's layers, and the merged model is saved as safetensors with its tokenizer (chat template
included: ``chat_template.jinja``) and generation config. Only adapters that change weights (LoRA and its
variants, IA3, ...) can be merged; prompt-learning adapters (prefix or prompt tuning) add virtual tokens instead
and are refused with a message.

The merged weights are saved in float32 by default when an adapter was merged: the base's 16-bit weights plus the
adapter's update are no longer 16-bit numbers, and rounding them back changes the model's answers (see
:mod:`studio.export.verify`). ``dtype`` picks another one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from studio.errors import ValidationError

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def adapter_base(adapter_dir: Path) -> str | None:
    """The base model an adapter was made for (``base_model_name_or_path`` in its config), or None."""
    try:
        value = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def check_adapter_files(adapter_dir: Path, label: str) -> None:
    """Refuse a folder that is not a complete, mergeable PEFT adapter (ValidationError on ``adapter``): no
    ``adapter_config.json``, weights only as a pickle ``.bin`` (never loaded), no weights yet (half-trained), or a
    prompt-learning adapter."""
    config_file = adapter_dir / ADAPTER_CONFIG
    if not config_file.is_file():
        raise ValidationError(
            f"adapter '{label}' is not a PEFT adapter: it has no {ADAPTER_CONFIG} (a half-trained run has none yet)",
            param="adapter",
        )
    if not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        pickled = (adapter_dir / "adapter_model.bin").is_file()
        why = (
            "its weights are a pickle (adapter_model.bin), which the studio never loads: save it with safetensors"
            if pickled
            else f"it has no {ADAPTER_WEIGHTS} (a half-trained run has none yet)"
        )
        raise ValidationError(f"adapter '{label}' cannot be exported: {why}", param="adapter")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValidationError(
            f"adapter '{label}': {ADAPTER_CONFIG} is not valid JSON ({exc})", param="adapter"
        ) from None
    peft_type = str(config.get("peft_type", "")).upper() if isinstance(config, dict) else ""
    if peft_type in ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING", "CPT"):
        raise ValidationError(
            f"adapter '{label}' is {peft_type.lower()}: it adds virtual tokens instead of changing weights, so it "
            "cannot be merged into the model (export its base model, and serve the adapter on transformers)",
            param="adapter",
        )


def source_dtype(model_dir: Path) -> str:
    """The dtype a model folder's config names (``dtype`` or ``torch_dtype``), else float32."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    value = config.get("dtype") or config.get("torch_dtype") if isinstance(config, dict) else None
    return str(value) if value in ("float32", "bfloat16", "float16") else "float32"


def save_dtype(requested: str, model_dir: Path, merged_adapter: bool) -> str:
    """The dtype the export is saved in: ``requested``, or for ``auto`` float32 when an adapter was merged (its
    update does not survive rounding to 16 bits exactly) and the source's own dtype otherwise (lossless)."""
    if requested != "auto":
        return requested
    return "float32" if merged_adapter else source_dtype(model_dir)


def load_merged(model_dir: Path, adapter_dir: Path | None) -> Any:
    """The model of ``model_dir`` in float32 with ``adapter_dir`` merged into its weights (a plain transformers
    model, no PEFT wrapper). A misfit adapter is a ValidationError on ``adapter``."""
    from studio.inference.torch_setup import import_torch

    torch = import_torch()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, local_files_only=True)
    if adapter_dir is None:
        return model.eval()
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except Exception as exc:  # shapes or module names that do not fit this base
        text = " ".join(str(exc).split())[:300]
        raise ValidationError(
            f"adapter '{adapter_dir.name}' does not fit model {model_dir.name}: {text}", param="adapter"
        ) from None
    return peft_model.merge_and_unload().eval()


def save_model(model: Any, tokenizer_dir: Path, out_dir: Path, dtype: str, report: Callable[[str], None]) -> list[str]:
    """Save ``model`` (cast to ``dtype``) as safetensors into ``out_dir`` with the tokenizer of ``tokenizer_dir``
    (its chat template too) and a generation config. Returns the files written."""
    from studio.inference.torch_setup import import_torch

    torch = import_torch()
    from transformers import AutoTokenizer, GenerationConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.to(getattr(torch, dtype))
    model.config.use_cache = True
    model.save_pretrained(str(out_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    tokenizer.save_pretrained(str(out_dir))
    if not (out_dir / "generation_config.json").is_file():
        GenerationConfig.from_model_config(model.config).save_pretrained(str(out_dir))
    if not getattr(tokenizer, "chat_template", None):
        report("note: the tokenizer has no chat template; the export has none either")
    return sorted(p.name for p in out_dir.iterdir() if p.is_file())


def tokenizer_source(model_dir: Path, adapter_dir: Path | None) -> Path:
    """Where the export's tokenizer comes from: the adapter's folder when training saved one there (it may carry
    the template the adapter was trained with), else the base model's."""
    if adapter_dir is not None and (adapter_dir / "tokenizer_config.json").is_file():
        return adapter_dir
    return model_dir


def merge_to_folder(
    model_dir: Path,
    adapter_dir: Path | None,
    out_dir: Path,
    report: Callable[[str], None],
    dtype: str = "auto",
) -> dict[str, Any]:
    """Merge ``adapter_dir`` (or nothing: a plain copy as safetensors) into the model of ``model_dir`` and save the
    result into ``out_dir``. Returns ``{"dtype", "files", "parameters"}``."""
    if dtype not in DTYPES:
        raise ValidationError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}", param="dtype")
    model = load_merged(model_dir, adapter_dir)
    chosen = save_dtype(dtype, model_dir, adapter_dir is not None)
    what = f"{model_dir.name} + adapter {adapter_dir.name}" if adapter_dir is not None else model_dir.name
    report(f"merged {what}; saving as {chosen} safetensors")
    parameters = int(sum(p.numel() for p in model.parameters()))
    files = save_model(model, tokenizer_source(model_dir, adapter_dir), out_dir, chosen, report)
    del model
    return {"dtype": chosen, "files": files, "parameters": parameters}
