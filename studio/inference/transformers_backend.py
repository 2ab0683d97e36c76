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
from typing import Any

from studio.errors import ModelLoadError, ValidationError
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
    capabilities = EngineCapabilities(logprobs=True, attention=False, adapters=False, chat_template=True)

    def __init__(
        self,
        model_id: str,
        path: Path,
        *,
        dtype: str = "auto",
        device: str = "auto",
        threads: int | None = None,
    ) -> None:
        torch = import_torch(threads)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        t0 = time.perf_counter()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = resolve_dtype(dtype, device)
        try:
            self.tokenizer: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype, local_files_only=True)
            self.model: Any = model.to(device)
        except Exception as exc:  # safetensors, tokenizers, torch each raise their own types
            raise ModelLoadError(f"could not load model '{model_id}' from {path}: {exc}") from exc
        self.model.eval()
        self._device = device
        self._eos_ids = self._collect_eos_ids()
        n_params = sum(p.numel() for p in self.model.parameters())
        mem = sum(p.numel() * p.element_size() for p in self.model.parameters())
        mem += sum(b.numel() * b.element_size() for b in self.model.buffers())
        self._info = LoadedModelInfo(
            model_id=model_id,
            backend=self.backend,
            path=Path(path),
            dtype=str(torch_dtype).removeprefix("torch."),
            device=device,
            parameters=n_params,
            memory_bytes=mem,
            load_seconds=time.perf_counter() - t0,
        )
        log.info("loaded %s (%s, %s) in %.1fs", model_id, self._info.dtype, device, self._info.load_seconds)

    @property
    def info(self) -> LoadedModelInfo:
        return self._info

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
    ) -> Iterator[StreamItem]:
        started = time.perf_counter()
        prompt = self.render_chat(messages, chat_template)
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return self._stream_ids(ids, params, cancel, started)

    def stream_completion(self, prompt: str, params: SamplingParams, cancel: threading.Event) -> Iterator[StreamItem]:
        started = time.perf_counter()
        ids = self.tokenizer(prompt)["input_ids"]
        return self._stream_ids(ids, params, cancel, started)

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
                f"the prompt has {len(prompt_ids)} tokens; this model's context is {ctx} tokens",
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
        del self.model
        if self._device == "cuda":
            self._torch.cuda.empty_cache()
        import gc

        gc.collect()


def default_threads() -> int:
    return os.cpu_count() or 1
