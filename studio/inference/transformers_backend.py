"""Transformers backend: any local Hugging Face causal LM, CPU or CUDA.

Decoding is a plain KV-cached loop rather than ``model.generate`` so that every token comes out with its
id, log probability, top alternatives and a timestamp as soon as it exists, and so that cancellation and
stop sequences take effect between two tokens.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from studio.errors import ModelLoadError, StudioError, ValidationError
from studio.inference.base import (
    ChatMessage,
    ChatTemplateSpec,
    Engine,
    EngineCapabilities,
    GenerationEnd,
    GenerationStart,
    LoadedModelInfo,
    StreamItem,
    TokenEvent,
    TopLogprob,
)
from studio.inference.detok import StopTextBuffer
from studio.inference.params import SamplingParams
from studio.inference.torch_setup import import_torch, resolve_dtype

log = logging.getLogger(__name__)


class TransformersEngine(Engine):
    backend = "transformers"
    capabilities = EngineCapabilities(logprobs=True, attention=True, adapters=True, chat_template=True)

    def __init__(
        self,
        model_id: str,
        path: Path,
        *,
        dtype: str = "auto",
        device: str = "auto",
        threads: int | None = None,
        quantization: Quantization = "none",
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
        self._adapters: dict[str, Path] = {}
        self._active_adapter: str | None = None
        self._info = LoadedModelInfo(
            model_id=model_id,
            backend=self.backend,
            path=Path(path),
            dtype=str(torch_dtype).removeprefix("torch."),
            device=device,
            parameters=sum(p.numel() for p in self.model.parameters()),
            memory_bytes=self._tensor_bytes(),
            load_seconds=time.perf_counter() - t0,
            extra={"quantization": quantization},
        )
        log.info("loaded %s (%s, %s) in %.1fs", model_id, self._info.dtype, device, self._info.load_seconds)

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
        """Load a PEFT adapter (LoRA, IA3, ...) on top of the base weights and make it active.

        Loading a second adapter keeps the base and the first one in memory: switching is a hot swap."""
        path = Path(path).expanduser()
        config_file = path / "adapter_config.json"
        if not config_file.is_file():
            raise ValidationError(f"{path} is not a PEFT adapter directory (no adapter_config.json)", param="adapter")
        name = name or path.name
        if name == BASE_ADAPTER:
            raise ValidationError(f"'{BASE_ADAPTER}' is reserved for the base model", param="adapter")
        from peft import PeftConfig, PeftModel

        was_peft = isinstance(self.model, PeftModel)
        if was_peft and name in self._adapters:
            self.model.delete_adapter(name)
            self._adapters.pop(name, None)
        try:
            config = PeftConfig.from_pretrained(str(path))
            if not was_peft:
                # PeftModel injects the adapter layers into the base model in place
                self.model = PeftModel(self.model, config, adapter_name=name)
                self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            else:
                self.model.load_adapter(str(path), adapter_name=name)
        except Exception as exc:
            self._undo_failed_adapter(name, was_peft)
            base = _adapter_base(config_file)
            hint = f" It was trained on '{base}'." if base else ""
            raise ValidationError(
                f"adapter {path} does not fit model '{self._info.model_id}': {_short(exc)}.{hint}", param="adapter"
            ) from None
        self.model.eval()
        self._adapters[name] = path
        self._active_adapter = name
        return name

    def _undo_failed_adapter(self, name: str, was_peft: bool) -> None:
        """Take a half-loaded adapter out again so the model answers exactly as before."""
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return
        if was_peft:
            if name in getattr(self.model, "peft_config", {}):
                self.model.delete_adapter(name)
            if self._active_adapter:
                self.model.set_adapter(self._active_adapter)
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

    def _apply_adapter(self, requested: str | None) -> None:
        """Switch the PEFT model to what this request asks for (called under the engine lock)."""
        if not self._adapters:
            if requested not in (None, "", BASE_ADAPTER):
                raise ValidationError(f"adapter '{requested}' is not loaded on this model", param="adapter")
            return
        target = self._active_adapter if requested is None else (None if requested in ("", BASE_ADAPTER) else requested)
        if target is None:
            self.model.base_model.disable_adapter_layers()
            return
        if target not in self._adapters:
            known = ", ".join(self._adapters)
            raise ValidationError(f"adapter '{target}' is not loaded; loaded: {known}", param="adapter")
        self.model.base_model.enable_adapter_layers()
        self.model.set_adapter(target)

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
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        cancel: threading.Event,
        chat_template: ChatTemplateSpec | None = None,
        adapter: str | None = None,
    ) -> Iterator[StreamItem]:
        started = time.perf_counter()
        prompt = self.render_chat(messages, chat_template)
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        self._apply_adapter(adapter)
        return self._stream_ids(ids, params, cancel, started)

    def stream_completion(
        self, prompt: str, params: SamplingParams, cancel: threading.Event, adapter: str | None = None
    ) -> Iterator[StreamItem]:
        started = time.perf_counter()
        ids = self.tokenizer(prompt)["input_ids"]
        self._apply_adapter(adapter)
        return self._stream_ids(ids, params, cancel, started)

    def attention(self, token_ids: list[int], prompt_len: int = 0, max_tokens: int = 256) -> Any:
        """Attention maps for ``token_ids`` (one forward pass with eager attention; call under the engine lock:
        it switches the model's attention implementation for that pass); see
        :func:`studio.playground.attention.compute_attention`."""
        from studio.playground.attention import compute_attention

        return compute_attention(self.model, self.tokenizer, token_ids, prompt_len=prompt_len, max_tokens=max_tokens)

    def chat_token_ids(
        self, messages: Sequence[ChatMessage], chat_template: ChatTemplateSpec | None = None
    ) -> list[int]:
        """The prompt token ids the chat template makes of ``messages`` (what generation would feed the model)."""
        ids: list[int] = self.tokenizer(self.render_chat(messages, chat_template), add_special_tokens=False)[
            "input_ids"
        ]
        return ids

    # -- decoding ------------------------------------------------------------------------------------------
    def _processors(self, params: SamplingParams) -> Any:
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        procs = LogitsProcessorList()
        if params.repetition_penalty != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
        if not params.greedy:
            if params.temperature != 1.0:
                procs.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k > 0:
                procs.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                procs.append(TopPLogitsWarper(params.top_p))
        return procs

    def _stream_ids(
        self, prompt_ids: list[int], params: SamplingParams, cancel: threading.Event, started: float
    ) -> Iterator[StreamItem]:
        torch = self._torch
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

        gen = torch.Generator(device=self._device)
        if params.seed is not None:
            gen.manual_seed(params.seed)
        else:
            gen.seed()
        processors = self._processors(params)
        text_buf = StopTextBuffer(params.stop)
        generated: list[int] = []
        counts: dict[int, int] = {}
        finish: str = "length"
        with torch.inference_mode():
            all_ids = torch.tensor([prompt_ids], device=self._device)
            out = self.model(input_ids=all_ids, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            for _ in range(max_new):
                if cancel.is_set():
                    finish = "cancelled"
                    break
                raw_logprobs = torch.log_softmax(logits, dim=-1)
                scores = logits
                if counts and (params.frequency_penalty or params.presence_penalty):
                    idx = torch.tensor(list(counts), device=self._device)
                    cnt = torch.tensor(list(counts.values()), device=self._device, dtype=scores.dtype)
                    scores = scores.clone()
                    scores[0, idx] -= cnt * params.frequency_penalty + params.presence_penalty
                scores = processors(all_ids, scores)
                if params.greedy:
                    next_id = int(torch.argmax(scores, dim=-1).item())
                else:
                    probs = torch.softmax(scores, dim=-1)
                    next_id = int(torch.multinomial(probs, 1, generator=gen).item())
                now = time.perf_counter()
                top: tuple[TopLogprob, ...] = ()
                if params.top_logprobs:
                    values, indices = torch.topk(raw_logprobs[0], params.top_logprobs)
                    top = tuple(
                        TopLogprob(str(self.tokenizer.decode([int(i)])), int(i), float(v))
                        for v, i in zip(values.tolist(), indices.tolist(), strict=True)
                    )
                if next_id in self._eos_ids:
                    finish = "stop"
                    break
                generated.append(next_id)
                counts[next_id] = counts.get(next_id, 0) + 1
                new_text = text_buf.update(str(self.tokenizer.decode(generated, skip_special_tokens=True)))
                yield TokenEvent(
                    token_id=next_id,
                    token=str(self.tokenizer.decode([next_id])),
                    text=new_text,
                    logprob=float(raw_logprobs[0, next_id].item()),
                    top_logprobs=top,
                    time=now,
                )
                if text_buf.stopped:
                    finish = "stop"
                    break
                next_tensor = torch.tensor([[next_id]], device=self._device)
                all_ids = torch.cat([all_ids, next_tensor], dim=-1)
                out = self.model(input_ids=next_tensor, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
        tail = "" if text_buf.stopped else text_buf.flush()
        yield GenerationEnd(finish_reason=finish, tail_text=tail, time=time.perf_counter())  # type: ignore[arg-type]

    def unload(self) -> None:
        self._adapters.clear()
        del self.model
        if self._device == "cuda":
            self._torch.cuda.empty_cache()
        import gc

        gc.collect()


def default_threads() -> int:
    return os.cpu_count() or 1


BASE_ADAPTER = "base"
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
