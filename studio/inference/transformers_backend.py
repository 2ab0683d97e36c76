"""Transformers backend: any local Hugging Face causal LM, CPU or CUDA.

Decoding is a KV-cached loop of our own rather than ``model.generate`` so that every token comes out with its
id, log probability, top alternatives and a timestamp as soon as it exists, and so that cancellation and
stop sequences take effect between two tokens.

The generations running on one loaded model are decoded together (:mod:`studio.inference.batching`): one
forward pass per step for the running batch, requests joining and leaving between steps, up to ``max_parallel``
(the alias's ``n_parallel``) at once and the rest waiting first come, first served. Each keeps its own sampling
parameters, seed, stop strings, logprobs and adapter: the base model and LoRA adapters share a batch (PEFT's
mixed-adapter forward), other injected adapters batch per adapter, prompt-learning adapters decode alone. A
request gets the same tokens in a batch as alone (see the batching module for why, and where that ends).
Loading adapters and attention maps take their turn between two steps (a first-come-first-served lock).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from studio.errors import GenerationError, ModelLoadError, StudioError, ValidationError
from studio.inference.base import (
    ChatMessage,
    ChatTemplateSpec,
    Engine,
    EngineCapabilities,
    GenerationStart,
    LoadedModelInfo,
    StreamItem,
)
from studio.inference.batching import (
    ALONE,
    BatchCounters,
    BatchRequest,
    BatchScheduler,
    RowLayout,
    enable_row_attention,
    install_exact_lora_mixing,
    rows_keep_their_bits,
)
from studio.inference.decode import TokenPicker, TokenTexts
from studio.inference.locks import FairLock
from studio.inference.params import SamplingParams
from studio.inference.torch_setup import cpu_has_amx, import_torch, resolve_dtype

log = logging.getLogger(__name__)


#: (model folder, dtype, device) -> :func:`rows_keep_their_bits`'s answer, once per process
_ROW_CHECKS: dict[tuple[str, str, str], str | None] = {}


class TransformersEngine(Engine):
    backend = "transformers"
    capabilities = EngineCapabilities(logprobs=True, attention=True, adapters=True, chat_template=True, concurrent=True)

    def __init__(
        self,
        model_id: str,
        path: Path,
        *,
        dtype: str = "auto",
        device: str = "auto",
        threads: int | None = None,
        quantization: Quantization = "none",
        max_parallel: int | None = None,
    ) -> None:
        torch = import_torch(threads)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        t0 = time.perf_counter()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = resolve_dtype(dtype, device)
        kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": True}
        if quantization != "none":
            kwargs["quantization_config"] = bitsandbytes_config(quantization, torch_dtype)
        try:
            self.tokenizer: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model: Any = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
            self.model: Any = model if quantization != "none" else model.to(device)
        except StudioError:
            raise
        except Exception as exc:  # safetensors, tokenizers, torch each raise their own types
            raise ModelLoadError(f"could not load model '{model_id}' from {path}: {exc}") from exc
        self.model.eval()
        self._device = device
        self._eos_ids = self._collect_eos_ids()
        self._token_text = TokenTexts(self.tokenizer)
        self._adapters: dict[str, Path] = {}  # every loaded adapter by name
        self._prompt_models: dict[str, Any] = {}  # the prompt-learning ones among them, each with its PEFT wrapper
        self._active_adapter: str | None = None
        self._mixable = False  # the injected adapters are LoRA layers whose rows can share a forward pass
        # one decode step (or adapter change, or attention map) at a time, in arrival order; guards the model and
        # which adapter is switched in
        self._step = FairLock()
        self._applied: str | object | None = _UNKNOWN  # the adapter the PEFT model has switched in (None: base)
        # generations decoding at once (each holds its KV cache rows); more wait, first come first served
        self.max_parallel = max_parallel or DEFAULT_PARALLEL
        self._batch_off = enable_row_attention(torch, self.model, device)  # None, or why requests decode alone
        if self._batch_off is not None:
            log.info("batched decoding off for %s: %s", model_id, self._batch_off)
        self._scheduler = BatchScheduler(torch, self, self._step, self.max_parallel, device)
        if self._batch_off is None:  # does this machine keep a row's bits in a batch? (checked once per process)
            self._batch_off = self._check_rows(path, torch_dtype, device)
            if self._batch_off is not None:
                log.warning("batched decoding off for %s: %s", model_id, self._batch_off)
        self._encode_lock = threading.Lock()  # a fast tokenizer must not be borrowed by two threads that may mutate it
        self._info = LoadedModelInfo(
            model_id=model_id,
            backend=self.backend,
            path=Path(path),
            dtype=str(torch_dtype).removeprefix("torch."),
            device=device,
            parameters=sum(p.numel() for p in self.model.parameters()),
            memory_bytes=self._tensor_bytes(),
            load_seconds=time.perf_counter() - t0,
            extra={
                "quantization": quantization,
                "max_parallel": str(max_parallel or DEFAULT_PARALLEL),
                "batching": "on" if self._batch_off is None else f"off ({self._batch_off})",
            },
        )
        log.info("loaded %s (%s, %s) in %.1fs", model_id, self._info.dtype, device, self._info.load_seconds)

    def _check_rows(self, path: Any, dtype: Any, device: Any) -> str | None:
        """Why a batched row might not answer as alone on this machine (None: batching keeps it exact).

        On a CPU, batching needs kernels that give a row the same bits in a batch as alone: measured to hold on an
        Intel Xeon with AMX (0 of 330 bf16 rows differed in batches of up to 32) and not on an AMD EPYC without
        AMX (avx512_bf16: batched rows of the bundled model and of a tiny model left and joined batches with other
        tokens), so only AMX CPUs batch. There, :func:`rows_keep_their_bits` checks this model once per process
        (a later load reuses the answer)."""
        if str(device).startswith("cpu") and not cpu_has_amx():
            return (
                "this CPU has no AMX: its kernels do not give a row the same bits in a batch as alone (measured on "
                "an AMD EPYC), so each request decodes alone and answers exactly as alone"
            )
        key = (str(Path(path).resolve()), str(dtype), str(device))
        if key not in _ROW_CHECKS:
            with self._step:
                _ROW_CHECKS[key] = rows_keep_their_bits(self._torch, self, self.group_key(None), device=device)
        return _ROW_CHECKS[key]

    def _tensor_bytes(self) -> int:
        mem = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return int(mem + sum(b.numel() * b.element_size() for b in self.model.buffers()))

    @property
    def info(self) -> LoadedModelInfo:
        self._info.memory_bytes = self._tensor_bytes()
        self._info.extra["adapters"] = ",".join(self._adapters)
        self._info.extra["active_adapter"] = self._active_adapter or ""
        return self._info

    # -- adapters (PEFT) -----------------------------------------------------------------------------------
    @property
    def adapters(self) -> dict[str, Path]:
        """Loaded adapters by name."""
        return dict(self._adapters)

    @property
    def active_adapter(self) -> str | None:
        """The adapter requests use when they name none (None = the base model)."""
        return self._active_adapter

    def load_adapter(self, path: Path, name: str | None = None) -> str:
        """Load a PEFT adapter on top of the base weights and make it active.

        Adapters that change the weights (LoRA, IA3, ...) are injected into the model's layers; prompt-learning
        adapters (prefix tuning, prompt tuning, p-tuning) leave the weights alone and put virtual tokens in front
        of the prompt. Loading a second adapter keeps the base and the first one in memory: switching is a hot
        swap."""
        path = Path(path).expanduser()
        config_file = path / "adapter_config.json"
        if not config_file.is_file():
            raise ValidationError(f"{path} is not a PEFT adapter directory (no adapter_config.json)", param="adapter")
        name = name or path.name
        if name == BASE_ADAPTER:
            raise ValidationError(f"'{BASE_ADAPTER}' is reserved for the base model", param="adapter")
        from peft import PeftConfig

        try:
            config = PeftConfig.from_pretrained(str(path))
        except Exception as exc:
            raise ValidationError(f"cannot read the adapter config in {path}: {_short(exc)}", param="adapter") from None
        with self._step:  # between two decode steps of any running generation
            self._applied = _UNKNOWN  # loading switches the new adapter in; the next step switches back
            if config.is_prompt_learning:
                self._load_prompt_adapter(path, name, config)
                self._drop_injected(name)  # the name may have held an injected adapter before
            else:
                self._load_injected_adapter(path, name, config)
                self._prompt_models.pop(name, None)
            self._adapters[name] = path
            self._active_adapter = name
            return name

    def _misfit(self, path: Path, exc: BaseException) -> ValidationError:
        base = _adapter_base(path / "adapter_config.json")
        hint = f" It was trained on '{base}'." if base else ""
        return ValidationError(
            f"adapter {path} does not fit model '{self._info.model_id}': {_short(exc)}.{hint}", param="adapter"
        )

    def _base_model(self) -> Any:
        """The transformers model under any PEFT wrapper (with injected adapter layers, if any)."""
        from peft import PeftModel

        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    def _load_injected_adapter(self, path: Path, name: str, config: Any) -> None:
        from peft import PeftModel

        was_peft = isinstance(self.model, PeftModel)
        if was_peft:
            kinds = {c.peft_type for n, c in self.model.peft_config.items() if n != name}
            if kinds and config.peft_type not in kinds:
                others = ", ".join(n for n in self._adapters if n not in self._prompt_models and n != name)
                have = ", ".join(sorted(str(getattr(k, "value", k)) for k in kinds))
                raise ValidationError(
                    f"adapter {path} is {getattr(config.peft_type, 'value', config.peft_type)}, but this model "
                    f"already carries {have} adapters ({others}); PEFT cannot mix the two on one loaded model: "
                    "unload the model and load it again with this adapter",
                    param="adapter",
                )
            if name in self.model.peft_config:
                self.model.delete_adapter(name)
                self._adapters.pop(name, None)
        try:
            if not was_peft:
                # PeftModel injects the adapter layers into the base model in place
                self.model = PeftModel(self.model, config, adapter_name=name)
                self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            else:
                self.model.load_adapter(str(path), adapter_name=name)
        except Exception as exc:
            self._undo_failed_adapter(name, was_peft)
            raise self._misfit(path, exc) from None
        self.model.eval()
        self._mixable = install_exact_lora_mixing(self.model)

    def _load_prompt_adapter(self, path: Path, name: str, config: Any) -> None:
        """A prompt-learning adapter gets a PEFT wrapper of its own around the (shared) base model: only its
        prompt encoder is new. Decoding feeds the prompt through the wrapper (which puts the virtual tokens in
        front) and every later token through the base model with the KV cache that prefill made."""
        from peft import PeftModel, PeftType

        if config.peft_type not in (PeftType.PREFIX_TUNING, PeftType.PROMPT_TUNING, PeftType.P_TUNING):
            raise ValidationError(
                f"adapter {path} is {config.peft_type.value}; of the prompt-learning methods the studio serves prefix "
                "tuning, prompt tuning and p-tuning",
                param="adapter",
            )
        try:
            wrapper = PeftModel.from_pretrained(self._base_model(), str(path), adapter_name=name, is_trainable=False)
            wrapper.prompt_encoder.to(self._device)
        except Exception as exc:
            raise self._misfit(path, exc) from None
        wrapper.eval()
        self._prompt_models[name] = wrapper

    def _drop_injected(self, name: str) -> None:
        from peft import PeftModel

        if isinstance(self.model, PeftModel) and name in self.model.peft_config:
            if len(self.model.peft_config) == 1:
                self.model = self.model.unload()  # its only adapter: back to the plain model
            else:
                self.model.delete_adapter(name)

    def _undo_failed_adapter(self, name: str, was_peft: bool) -> None:
        """Take a half-loaded adapter out again so the model answers exactly as before."""
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return
        if was_peft:
            if name in getattr(self.model, "peft_config", {}):
                self.model.delete_adapter(name)
            injected = [n for n in self._adapters if n not in self._prompt_models]
            if injected:
                self.model.set_adapter(injected[0])  # any: the next decode step switches to what it needs
        else:
            self.model = self.model.unload()  # removes the injected layers without merging them

    def set_active_adapter(self, name: str | None) -> None:
        """Hot-swap: make a loaded adapter (or None / 'base' for the base model) the default."""
        if name in (None, "", BASE_ADAPTER):
            self._active_adapter = None
            return
        if name not in self._adapters:
            known = ", ".join(self._adapters) or "none loaded"
            raise ValidationError(f"adapter '{name}' is not loaded; loaded: {known}", param="adapter")
        self._active_adapter = name

    def _target_adapter(self, requested: str | None) -> str | None:
        """The adapter a request runs with, fixed when it starts: the named one, None for the base model ('base'
        or ''), the active adapter when it names none."""
        target = self._active_adapter if requested is None else (None if requested in ("", BASE_ADAPTER) else requested)
        if target is not None and target not in self._adapters:
            known = ", ".join(self._adapters) or "none"
            raise ValidationError(f"adapter '{target}' is not loaded on this model; loaded: {known}", param="adapter")
        return target

    def _switch_to(self, target: str | None) -> None:
        """Make the model's layers compute with the injected adapter ``target`` (None: the base weights); call
        holding ``self._step``. Costs nothing when the previous step used the same adapter."""
        if target == self._applied:
            return
        from peft import PeftModel

        model: Any = self.model
        injected = isinstance(model, PeftModel)
        if not injected:  # no injected adapter: only the base weights exist
            if target is not None:
                raise ValidationError(f"adapter '{target}' is no longer loaded on this model", param="adapter")
        elif target is None:
            model.base_model.disable_adapter_layers()
        elif target not in self._adapters or target in self._prompt_models:
            raise ValidationError(f"adapter '{target}' is no longer loaded on this model", param="adapter")
        else:
            model.base_model.enable_adapter_layers()
            model.set_adapter(target)
        self._applied = target

    def _switch_to_mixed(self, adapters: list[str | None]) -> dict[str, Any]:
        """Prepare a mixed-adapter forward pass (PEFT's ``adapter_names``: each row its LoRA or the base); call
        holding ``self._step``. Returns the extra forward arguments."""
        from peft import PeftModel

        model: Any = self.model
        if not isinstance(self.model, PeftModel):  # the adapters were unloaded: only base rows can go on
            gone = sorted({a for a in adapters if a is not None})
            if gone:
                raise ValidationError(f"adapter '{gone[0]}' is no longer loaded on this model", param="adapter")
            return {}
        for name in adapters:
            if name is not None and (name in self._prompt_models or name not in model.peft_config):
                raise ValidationError(f"adapter '{name}' is no longer loaded on this model", param="adapter")
        if self._applied is not _MIXED:
            model.base_model.enable_adapter_layers()
            self._applied = _MIXED
        return {"adapter_names": [PEFT_BASE if name is None else name for name in adapters]}

    def _forward_alone(self, target: str | None, input_ids: Any, past: Any) -> Any:
        """One forward pass of a request that decodes alone (a prompt-learning adapter, or a model whose cache
        cannot be batched); call holding ``self._step``.

        A prompt-learning adapter runs on the bare base weights: its prefill goes through its own PEFT wrapper
        (virtual tokens in front), later steps through the base model with the cache that made."""
        inputs = {"input_ids": input_ids, "past_key_values": past, "use_cache": True}
        prompt_model = self._prompt_models.get(target) if target is not None else None
        if prompt_model is None:
            self._switch_to(target)
            return self.model(**inputs)
        self._switch_to(None)
        if past is None:
            return prompt_model(**inputs)
        return self._base_model()(**inputs)

    # -- batched decoding (the scheduler's runner) -----------------------------------------------------------
    @property
    def batch_counters(self) -> BatchCounters:
        """What the decode scheduler did so far (forward passes, prefills, peak batch and peak running)."""
        return replace(self._scheduler.counters)

    def group_key(self, adapter: str | None) -> tuple[Any, ...]:
        """Which requests decode together: base and LoRA rows all in one batch (PEFT mixes LoRA adapters per
        row), rows of another injected method per adapter, prompt-learning adapters and unbatchable models
        alone."""
        from peft import PeftModel, PeftType

        if (adapter is not None and adapter in self._prompt_models) or self._batch_off is not None:
            return (ALONE, adapter)
        model: Any = self.model
        if (
            self._mixable
            and isinstance(model, PeftModel)
            and all(c.peft_type == PeftType.LORA for c in model.peft_config.values())
        ):
            return (_MIXED_GROUP,)
        return (_ADAPTER_GROUP, adapter)

    def new_picker(self, request: BatchRequest) -> TokenPicker:
        return TokenPicker(
            self._torch,
            self.tokenizer,
            self._eos_ids,
            request.prompt_ids,
            request.params,
            request.max_new,
            self._device,
            self._token_text,
        )

    def _batch_inputs(self, key: tuple[Any, ...], adapters: list[str | None]) -> dict[str, Any]:
        if key[0] == _MIXED_GROUP:
            return self._switch_to_mixed(adapters)
        self._switch_to(key[1])
        return {}

    def prefill(self, key: Any, adapter: str | None, prompt_ids: list[int]) -> tuple[Any, Any]:
        """The prompt's forward pass, alone (batch 1): the first token's logits and the prompt's KV cache."""
        input_ids = self._torch.tensor([prompt_ids], device=self._device)
        if key[0] == ALONE:
            out = self._forward_alone(adapter, input_ids, None)
        else:
            from transformers import DynamicCache

            extra = self._batch_inputs(key, [adapter])
            out = self.model(
                input_ids=input_ids,
                past_key_values=DynamicCache(config=self.model.config),
                use_cache=True,
                logits_to_keep=1,
                **extra,
            )
        return out.logits[:, -1, :].float(), out.past_key_values

    def decode(
        self,
        key: Any,
        adapters: list[str | None],
        input_ids: Any,
        position_ids: Any,
        cache: Any,
        layout: RowLayout | None,
    ) -> tuple[Any, Any]:
        """One decode step of a group's rows (one token each): their next logits and the grown cache."""
        if key[0] == ALONE:
            out = self._forward_alone(adapters[0], input_ids, cache)
        else:
            extra = self._batch_inputs(key, adapters)
            out = self.model(
                input_ids=input_ids,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                row_layout=layout,
                **extra,
            )
            if layout is not None and not layout.calls:
                raise GenerationError(f"{type(self.model).__name__} ignored the per-row attention of a batch")
        return out.logits[:, -1, :].float(), out.past_key_values

    def _collect_eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, list):
                ids.update(int(i) for i in source)
        return ids

    # -- prompts -------------------------------------------------------------------------------------------
    def render_chat(self, messages: Sequence[ChatMessage], chat_template: ChatTemplateSpec | None = None) -> str:
        """The prompt text the chat template (the model's own unless ``chat_template`` is given) makes of
        ``messages``."""
        if chat_template is not None:
            from studio.aliases.templates import render_chat_template

            bos = chat_template.bos_token if chat_template.bos_token is not None else self.tokenizer.bos_token
            eos = chat_template.eos_token if chat_template.eos_token is not None else self.tokenizer.eos_token
            return render_chat_template(
                chat_template.source,
                [{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=True,
                bos_token=str(bos or ""),
                eos_token=str(eos or ""),
            )
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValidationError(
                f"model '{self._info.model_id}' has no chat template; use /v1/completions with a raw prompt",
                param="messages",
            )
        text = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=True,
        )
        return str(text)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text, special=False))

    def encode(self, text: str, *, special: bool) -> list[int]:
        """Token ids of ``text`` (``special``: with the tokenizer's BOS/EOS, as a raw completion prompt is fed)."""
        with self._encode_lock:
            ids: list[int] = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return ids

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        cancel: threading.Event,
        chat_template: ChatTemplateSpec | None = None,
        adapter: str | None = None,
    ) -> Iterator[StreamItem]:
        started = time.perf_counter()
        ids = self.encode(self.render_chat(messages, chat_template), special=False)
        return self._stream_ids(ids, params, cancel, started, self._target_adapter(adapter))

    def stream_completion(
        self, prompt: str, params: SamplingParams, cancel: threading.Event, adapter: str | None = None
    ) -> Iterator[StreamItem]:
        started = time.perf_counter()
        ids = self.encode(prompt, special=True)
        return self._stream_ids(ids, params, cancel, started, self._target_adapter(adapter))

    def attention(
        self, token_ids: list[int], prompt_len: int = 0, max_tokens: int = 256, adapter: str | None = None
    ) -> Any:
        """Attention maps for ``token_ids`` with ``adapter``'s weights (None: the active adapter; 'base': the base
        model) — one forward pass with eager attention, taking its turn between decode steps (it switches the
        model's attention implementation for that pass); see :func:`studio.playground.attention.compute_attention`."""
        from studio.playground.attention import compute_attention

        target = self._target_adapter(adapter)
        if target in self._prompt_models:
            raise ValidationError(
                f"attention maps are not available for the prompt-learning adapter '{target}' (its virtual tokens "
                "have no text); pick the base model or a LoRA adapter",
                param="adapter",
            )
        with self._step:
            self._switch_to(target)
            return compute_attention(
                self.model, self.tokenizer, token_ids, prompt_len=prompt_len, max_tokens=max_tokens
            )

    def chat_token_ids(
        self, messages: Sequence[ChatMessage], chat_template: ChatTemplateSpec | None = None
    ) -> list[int]:
        """The prompt token ids the chat template makes of ``messages`` (what generation would feed the model)."""
        return self.encode(self.render_chat(messages, chat_template), special=False)

    # -- decoding ------------------------------------------------------------------------------------------
    def _stream_ids(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        cancel: threading.Event,
        started: float,
        adapter: str | None,
    ) -> Iterator[StreamItem]:
        if not prompt_ids:
            raise ValidationError("the prompt is empty", param="messages")
        ctx = getattr(self.model.config, "max_position_embeddings", None)
        if ctx is not None and len(prompt_ids) >= ctx:
            raise ValidationError(
                f"the prompt has {len(prompt_ids)} tokens, {len(prompt_ids) - ctx + 1} more than fit this model's "
                f"context of {ctx} tokens (with room for one new token); shorten it",
                param="messages",
            )
        max_new = params.max_tokens if ctx is None else min(params.max_tokens, ctx - len(prompt_ids))
        yield GenerationStart(prompt_tokens=len(prompt_ids), started=started)
        yield from self._scheduler.stream(BatchRequest(prompt_ids, params, cancel, adapter, max_new))

    def unload(self) -> None:
        self._scheduler.stop()  # after its current step; before the lock, which that step holds
        with self._step:
            self._adapters.clear()
            self._prompt_models.clear()
            del self.model
        if self._device == "cuda":
            self._torch.cuda.empty_cache()
        import gc

        gc.collect()


def default_threads() -> int:
    return os.cpu_count() or 1


BASE_ADAPTER = "base"
DEFAULT_PARALLEL = 8  # generations one model decodes at once unless the alias's n_parallel says otherwise
_UNKNOWN = object()  # ``_applied`` before the first step and after an adapter was loaded
_MIXED = object()  # ``_applied`` while LoRA layers are on for a mixed-adapter batch (``adapter_names``)
_MIXED_GROUP = "mixed"  # group key of base + LoRA rows
_ADAPTER_GROUP = "adapter"  # group key prefix of rows of one adapter (methods PEFT cannot mix per row)
PEFT_BASE = "__base__"  # PEFT's name for "no adapter" in ``adapter_names``
Quantization = Literal["none", "int8", "int4", "nf4"]


def bitsandbytes_config(quantization: str, compute_dtype: Any) -> Any:
    """The transformers ``BitsAndBytesConfig`` for int8 / int4 (fp4) / nf4; a clear error when bitsandbytes
    cannot run here."""
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except Exception as exc:
        raise ValidationError(
            f"quantization '{quantization}' needs bitsandbytes, which is not usable here ({_short(exc)}); "
            "install requirements-cuda.txt or choose 'none'",
            param="quantization",
        ) from None
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization in ("int4", "nf4"):
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4" if quantization == "nf4" else "fp4",
            bnb_4bit_compute_dtype=compute_dtype,
        )
    raise ValidationError(
        f"unknown quantization '{quantization}'; choose none, int8, int4, nf4 or auto", param="quantization"
    )


def _adapter_base(config_file: Path) -> str | None:
    import json

    try:
        value = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "…"
