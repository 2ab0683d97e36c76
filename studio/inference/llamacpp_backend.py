"""llama.cpp backend (llama-cpp-python) for GGUF files, without converting them.

The chat template is the GGUF's own (``tokenizer.chat_template`` metadata) or the alias's, rendered here so
the prompt's token count is exact; generation streams through llama.cpp's OpenAI-shaped completion chunks,
parsed by the same code as the remote backend. Optional: a missing ``llama_cpp`` raises an error that names
the install command.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from studio.errors import BackendUnavailableError, ModelLoadError, ValidationError
from studio.inference.base import (
    ChatMessage,
    ChatTemplateSpec,
    Engine,
    EngineCapabilities,
    GenerationEnd,
    GenerationStart,
    LoadedModelInfo,
    StreamItem,
)
from studio.inference.params import SamplingParams
from studio.inference.remote_backend import _choice_events

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install llama-cpp-python==0.3.36 (or `make setup-engines`)"


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise BackendUnavailableError(f"the llamacpp engine needs llama-cpp-python: {INSTALL_HINT}") from None
    return llama_cpp


class LlamaCppEngine(Engine):
    backend = "llamacpp"
    capabilities = EngineCapabilities(logprobs=True, attention=False, adapters=False, chat_template=True)

    def __init__(
        self,
        model_id: str,
        gguf: Path,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        seed: int | None = None,
        n_gpu_layers: int = 0,
        quant: str | None = None,
    ) -> None:
        llama_cpp = import_llama_cpp()
        t0 = time.perf_counter()
        try:
            self.llm: Any = llama_cpp.Llama(
                model_path=str(gguf),
                n_ctx=n_ctx or 4096,
                n_threads=n_threads,
                seed=seed if seed is not None else llama_cpp.LLAMA_DEFAULT_SEED,
                n_gpu_layers=n_gpu_layers,
                logits_all=True,  # per-token log probabilities
                verbose=False,
            )
        except Exception as exc:
            raise ModelLoadError(f"llama.cpp could not load '{model_id}' from {gguf}: {exc}") from None
        meta = self.llm.metadata
        self._template = meta.get("tokenizer.chat_template")
        self._bos = self._token_text(meta.get("tokenizer.ggml.bos_token_id"))
        self._eos = self._token_text(meta.get("tokenizer.ggml.eos_token_id"))
        self._info = LoadedModelInfo(
            model_id=model_id,
            backend=self.backend,
            path=gguf,
            dtype=quant or "gguf",
            device="cuda" if n_gpu_layers else "cpu",
            parameters=_n_params(llama_cpp, self.llm),
            memory_bytes=gguf.stat().st_size,
            load_seconds=time.perf_counter() - t0,
            extra={"quantization": "gguf", "n_ctx": str(self.llm.n_ctx())},
        )

    def _token_text(self, token_id: Any) -> str:
        if token_id is None:
            return ""
        try:
            return bytes(self.llm.detokenize([int(token_id)], special=True)).decode("utf-8", "replace")
        except Exception:
            return ""

    @property
    def info(self) -> LoadedModelInfo:
        return self._info

    def render_chat(self, messages: Sequence[ChatMessage], chat_template: ChatTemplateSpec | None = None) -> str:
        """The prompt text: the alias's template if given, else the GGUF's embedded one."""
        from studio.aliases.templates import render_chat_template

        source = chat_template.source if chat_template else self._template
        if not source:
            raise ValidationError(
                f"GGUF '{self._info.model_id}' has no embedded chat template; give its alias a chat_template",
                param="chat_template",
            )
        bos = chat_template.bos_token if chat_template and chat_template.bos_token is not None else self._bos
        eos = chat_template.eos_token if chat_template and chat_template.eos_token is not None else self._eos
        return render_chat_template(
            source, [{"role": m.role, "content": m.content} for m in messages], bos_token=bos, eos_token=eos
        )

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        cancel: threading.Event,
        chat_template: ChatTemplateSpec | None = None,
        adapter: str | None = None,
    ) -> Iterator[StreamItem]:
        _no_adapter(adapter)
        return self._stream(self.render_chat(messages, chat_template), params, cancel, special=True)

    def stream_completion(
        self, prompt: str, params: SamplingParams, cancel: threading.Event, adapter: str | None = None
    ) -> Iterator[StreamItem]:
        _no_adapter(adapter)
        return self._stream(prompt, params, cancel, special=False)

    def _stream(
        self, prompt: str, params: SamplingParams, cancel: threading.Event, *, special: bool
    ) -> Iterator[StreamItem]:
        started = time.perf_counter()
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=not special, special=special)
        if not tokens:
            raise ValidationError("the prompt is empty", param="messages")
        ctx = self.llm.n_ctx()
        if len(tokens) >= ctx:
            raise ValidationError(
                f"the prompt has {len(tokens)} tokens, {len(tokens) - ctx + 1} more than fit the context of {ctx} "
                "tokens (context_params.n_ctx)",
                param="messages",
            )
        yield GenerationStart(prompt_tokens=len(tokens), started=started)
        chunks = self.llm.create_completion(
            tokens,
            max_tokens=min(params.max_tokens, ctx - len(tokens)),
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            min_p=0.0,
            repeat_penalty=params.repetition_penalty,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            stop=params.stop or None,
            seed=params.seed,
            logprobs=max(1, params.top_logprobs),
            stream=True,
        )
        finish = "stop"
        for chunk in chunks:
            if cancel.is_set():
                finish = "cancelled"
                break
            for choice in chunk.get("choices") or []:
                for ev in _choice_events(choice, chat=False):
                    if params.top_logprobs:
                        yield ev
                    else:
                        yield type(ev)(ev.token_id, ev.token, ev.text, ev.logprob, (), ev.time)
                if choice.get("finish_reason"):
                    finish = "length" if choice["finish_reason"] == "length" else "stop"
        yield GenerationEnd(finish_reason=finish, time=time.perf_counter())  # type: ignore[arg-type]

    def unload(self) -> None:
        self.llm.close()
        del self.llm


def _n_params(llama_cpp: Any, llm: Any) -> int:
    """Parameters as llama.cpp counts them (0 where this build does not expose the count)."""
    try:
        return int(llama_cpp.llama_model_n_params(llm.model))
    except Exception:
        return 0


def _no_adapter(adapter: str | None) -> None:
    if adapter not in (None, "", "base"):
        raise ValidationError("the llamacpp engine does not load PEFT adapters; use transformers", param="adapter")
