"""ONNX Runtime backend: a causal LM exported by Optimum (``model.onnx`` with ``past_key_values.N.key/value``
inputs and ``present.N.key/value`` outputs, task ``text-generation-with-past``) run with onnxruntime's
``InferenceSession`` on CPU (or CUDA when onnxruntime-gpu is installed).

The tokenizer and chat template come from the export folder (``studio.export.onnx`` copies them from the
source model) and are read with transformers; the token loop, sampling, stop sequences, seeds and logprobs are
the transformers engine's own (:mod:`studio.inference.decode`), so both engines answer a greedy request with the
same tokens. No adapters (merge one before exporting) and no attention maps.
"""

from __future__ import annotations

import json
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
    GenerationStart,
    LoadedModelInfo,
    StreamItem,
)
from studio.inference.decode import decode_tokens
from studio.inference.params import SamplingParams
from studio.inference.torch_setup import import_torch

INSTALL_HINT = "pip install onnxruntime==1.32.0 (make setup installs it)"
MODEL_FILE = "model.onnx"
_NP_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError(f"the onnxruntime engine needs onnxruntime: {INSTALL_HINT}") from None
    return onnxruntime


def onnx_model_file(path: Path) -> Path:
    """The ``model.onnx`` of an export folder (or the file itself)."""
    return path if path.suffix == ".onnx" else path / MODEL_FILE


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"
    capabilities = EngineCapabilities(logprobs=True, attention=False, adapters=False, chat_template=True)

    def __init__(self, model_id: str, path: Path, *, threads: int | None = None, seed: int | None = None) -> None:
        ort = import_onnxruntime()
        self._torch = import_torch(threads)
        t0 = time.perf_counter()
        folder = path if path.is_dir() else path.parent
        model_file = onnx_model_file(path)
        if not model_file.is_file():
            raise ModelLoadError(f"'{model_id}' has no {MODEL_FILE}; export it with `studio export onnx`")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session: Any = ort.InferenceSession(str(model_file), options, providers=providers)
        except Exception as exc:
            raise ModelLoadError(f"onnxruntime could not load '{model_id}': {str(exc)[:300]}") from None
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:
            raise ModelLoadError(f"'{model_id}' has no readable tokenizer next to {MODEL_FILE}: {exc}") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._past_names = sorted(
            (n for n in inputs if n.startswith("past_key_values.")), key=lambda n: (int(n.split(".")[1]), n)
        )
        if "input_ids" not in inputs or not self._past_names:
            raise ModelLoadError(
                f"'{model_id}' is not a decoder exported with its KV cache (task text-generation-with-past)"
            )
        self._has_positions = "position_ids" in inputs
        first = inputs[self._past_names[0]]
        self._kv_heads, self._head_dim = int(first.shape[1]), int(first.shape[3])
        self._kv_dtype = _NP_TYPES.get(first.type, "float32")
        self._outputs = [o.name for o in self.session.get_outputs()]
        config = _read_json(folder / "config.json")
        self._n_ctx = int(config.get("max_position_embeddings") or 0) or None
        self._eos_ids = _eos_ids(folder, self.tokenizer)
        self._encode_lock = threading.Lock()
        self._seed = seed
        self._info = LoadedModelInfo(
            model_id=model_id,
            backend=self.backend,
            path=folder,
            dtype=self._kv_dtype,
            device="cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu",
            parameters=_onnx_parameters(model_file),
            memory_bytes=sum(f.stat().st_size for f in folder.glob("model.onnx*") if f.is_file()),
            load_seconds=time.perf_counter() - t0,
            extra={"providers": ",".join(self.session.get_providers()), "onnxruntime": str(ort.__version__)},
        )

    @property
    def info(self) -> LoadedModelInfo:
        return self._info

    def render_chat(self, messages: Sequence[ChatMessage], chat_template: ChatTemplateSpec | None = None) -> str:
        from studio.aliases.templates import render_chat_template

        source = chat_template.source if chat_template else getattr(self.tokenizer, "chat_template", None)
        if not source:
            raise ValidationError(
                f"model '{self._info.model_id}' has no chat template; use /v1/completions with a raw prompt",
                param="messages",
            )
        bos = chat_template.bos_token if chat_template and chat_template.bos_token is not None else None
        eos = chat_template.eos_token if chat_template and chat_template.eos_token is not None else None
        if chat_template is None:
            text = self.tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages], tokenize=False, add_generation_prompt=True
            )
            return str(text)
        return render_chat_template(
            source,
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            bos_token=str(bos if bos is not None else self.tokenizer.bos_token or ""),
            eos_token=str(eos if eos is not None else self.tokenizer.eos_token or ""),
        )

    def encode(self, text: str, *, special: bool) -> list[int]:
        with self._encode_lock:
            ids: list[int] = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text, special=False))

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        cancel: threading.Event,
        chat_template: ChatTemplateSpec | None = None,
        adapter: str | None = None,
    ) -> Iterator[StreamItem]:
        _no_adapter(adapter)
        started = time.perf_counter()
        return self._stream(
            self.encode(self.render_chat(messages, chat_template), special=False), params, cancel, started
        )

    def stream_completion(
        self, prompt: str, params: SamplingParams, cancel: threading.Event, adapter: str | None = None
    ) -> Iterator[StreamItem]:
        _no_adapter(adapter)
        started = time.perf_counter()
        return self._stream(self.encode(prompt, special=True), params, cancel, started)

    def _stream(
        self, prompt_ids: list[int], params: SamplingParams, cancel: threading.Event, started: float
    ) -> Iterator[StreamItem]:
        if not prompt_ids:
            raise ValidationError("the prompt is empty", param="messages")
        ctx = self._n_ctx
        if ctx is not None and len(prompt_ids) >= ctx:
            raise ValidationError(
                f"the prompt has {len(prompt_ids)} tokens, {len(prompt_ids) - ctx + 1} more than fit this model's "
                f"context of {ctx} tokens (with room for one new token); shorten it",
                param="messages",
            )
        max_new = params.max_tokens if ctx is None else min(params.max_tokens, ctx - len(prompt_ids))
        if params.seed is None and self._seed is not None:  # the alias's n_seed, as llama.cpp and vLLM use it
            params = params.model_copy(update={"seed": self._seed})
        yield GenerationStart(prompt_tokens=len(prompt_ids), started=started)
        yield from decode_tokens(
            self._torch, self._step, self.tokenizer, self._eos_ids, prompt_ids, params, cancel, max_new
        )

    def _step(self, input_ids: Any, past: Any) -> tuple[Any, Any]:
        """One session run: the new tokens after ``past`` (a dict of the previous ``present`` arrays)."""
        import numpy as np

        ids = input_ids.cpu().numpy().astype(np.int64)
        seen = 0 if past is None else int(past[self._past_names[0]].shape[2])
        total = seen + ids.shape[1]
        feed: dict[str, Any] = {"input_ids": ids, "attention_mask": np.ones((1, total), dtype=np.int64)}
        if self._has_positions:
            feed["position_ids"] = np.arange(seen, total, dtype=np.int64)[None, :]
        if past is None:
            empty = np.zeros((1, self._kv_heads, 0, self._head_dim), dtype=self._kv_dtype)
            feed.update({name: empty for name in self._past_names})
        else:
            feed.update(past)
        outputs = self.session.run(None, feed)
        by_name = dict(zip(self._outputs, outputs, strict=True))
        logits = self._torch.from_numpy(np.ascontiguousarray(by_name["logits"][:, -1, :])).float()
        present = {name: by_name[name.replace("past_key_values.", "present.")] for name in self._past_names}
        return logits, present

    def unload(self) -> None:
        del self.session


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _eos_ids(folder: Path, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (_read_json(folder / "generation_config.json").get("eos_token_id"), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list):
            ids.update(int(i) for i in source)
    return ids


def _onnx_parameters(model_file: Path) -> int:
    """Parameters counted from the graph's initializers (0 where the file cannot be read without its data)."""
    try:
        import onnx

        model = onnx.load(str(model_file), load_external_data=False)
    except Exception:
        return 0
    total = 0
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= int(d)
        total += n
    return total


def _no_adapter(adapter: str | None) -> None:
    if adapter not in (None, "", "base"):
        raise ValidationError(
            "the onnxruntime engine does not load PEFT adapters; export the adapter merged into its base",
            param="adapter",
        )
