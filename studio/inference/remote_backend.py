"""Remote backend: any OpenAI-compatible server (a vLLM server, Triton's OpenAI frontend, llama-server,
Ollama, another Whetstone Studio) used like a local engine.

Requests stream (SSE) with ``logprobs`` so each streamed log-probability entry becomes one token event with
its alternatives; servers that send no log probabilities give one event per chunk. Token ids are unknown
(-1). Usage figures from the server's final chunk replace the local count of prompt tokens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from studio.errors import ModelLoadError, StudioError, UserError, ValidationError
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
from studio.inference.params import SamplingParams

log = logging.getLogger(__name__)

# Parameters OpenAI itself defines; the others are sent only when changed from their neutral value, since some
# servers reject unknown fields (vLLM and llama-server accept top_k and repetition_penalty).
_EXTENSIONS_NEUTRAL = {"top_k": 0, "repetition_penalty": 1.0}


class RemoteEngine(Engine):
    backend = "remote"
    capabilities = EngineCapabilities(
        logprobs=True, attention=False, adapters=False, chat_template=False, concurrent=True
    )

    # end-of-sequence tokens a server reports among the logprobs (vLLM does); the other engines do not count
    # them as generated tokens, so neither does this one
    hidden_tokens: frozenset[str] = frozenset()

    def __init__(
        self, model_id: str, base_url: str, remote_model: str, *, api_key: str | None = None, timeout: float = 300.0
    ) -> None:
        t0 = time.perf_counter()
        self.base_url = base_url.rstrip("/")
        self.remote_model = remote_model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout, connect=10))
        try:
            resp = self._client.get("/models")
        except httpx.HTTPError as exc:
            raise ModelLoadError(f"remote server {self.base_url} does not answer: {exc}") from None
        if resp.status_code in (401, 403):
            raise ModelLoadError(f"remote server {self.base_url} refused the API key (HTTP {resp.status_code})")
        if resp.status_code == 200:
            served = [str(m.get("id")) for m in resp.json().get("data", []) if isinstance(m, dict)]
            if served and remote_model not in served:
                raise ModelLoadError(
                    f"remote server {self.base_url} does not serve '{remote_model}'; it serves: {', '.join(served)}"
                )
        self._info = LoadedModelInfo(
            model_id=model_id,
            backend=self.backend,
            path=Path("."),
            dtype="remote",
            device=self.base_url,
            parameters=0,
            memory_bytes=0,
            load_seconds=time.perf_counter() - t0,
            extra={"quantization": "none", "remote_model": remote_model},
        )

    @property
    def info(self) -> LoadedModelInfo:
        return self._info

    def _body(self, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.remote_model,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.stop:
            body["stop"] = params.stop
        if params.seed is not None:
            body["seed"] = params.seed
        if params.frequency_penalty:
            body["frequency_penalty"] = params.frequency_penalty
        if params.presence_penalty:
            body["presence_penalty"] = params.presence_penalty
        for key, neutral in _EXTENSIONS_NEUTRAL.items():
            if getattr(params, key) != neutral:
                body[key] = getattr(params, key)
        return body

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        cancel: threading.Event,
        chat_template: ChatTemplateSpec | None = None,
        adapter: str | None = None,
    ) -> Iterator[StreamItem]:
        if chat_template is not None:
            raise ValidationError("a remote server applies its own chat template", param="chat_template")
        self._no_adapter(adapter)
        body = self._body(params)
        body["messages"] = [{"role": m.role, "content": m.content} for m in messages]
        if params.logprobs or params.top_logprobs:  # asking costs the server time: only when wanted
            body["logprobs"] = True
            body["top_logprobs"] = params.top_logprobs
        return self._stream("/chat/completions", body, cancel, chat=True)

    def stream_completion(
        self, prompt: str, params: SamplingParams, cancel: threading.Event, adapter: str | None = None
    ) -> Iterator[StreamItem]:
        self._no_adapter(adapter)
        body = self._body(params)
        body["prompt"] = prompt
        if params.logprobs or params.top_logprobs:
            body["logprobs"] = max(1, params.top_logprobs)
        return self._stream("/completions", body, cancel, chat=False)

    @staticmethod
    def _no_adapter(adapter: str | None) -> None:
        if adapter not in (None, "", "base"):
            raise ValidationError("adapters are chosen on the remote server, not here", param="adapter")

    @contextlib.contextmanager
    def _open_events(self, path: str, body: dict[str, Any]) -> Iterator[Iterator[bytes]]:
        """POST ``body`` to ``path`` and give the streamed reply's SSE ``data:`` payloads; HTTP errors become
        StudioErrors (the server's own message for a 4xx). Subclasses may read the stream another way."""
        try:
            with self._client.stream("POST", path, json=body) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise remote_error(resp)
                yield sse_payloads(resp.iter_bytes())
        except httpx.HTTPError as exc:
            raise StudioError(f"remote server {self.base_url} failed mid-stream: {exc}") from None

    def _stream(self, path: str, body: dict[str, Any], cancel: threading.Event, *, chat: bool) -> Iterator[StreamItem]:
        start = GenerationStart(prompt_tokens=0, started=time.perf_counter())
        yield start
        finish = "stop"
        tail = ""
        hidden = self.hidden_tokens
        with self._open_events(path, body) as payloads:
            for data in payloads:
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise StudioError(f"remote server error: {chunk['error']}")
                usage = chunk.get("usage")
                if usage:
                    start.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                for choice in chunk.get("choices") or []:
                    for event in _choice_events(choice, chat=chat):
                        if event.text or event.token not in hidden:
                            yield event
                    if choice.get("finish_reason"):
                        finish = "length" if choice["finish_reason"] == "length" else "stop"
        yield GenerationEnd(finish_reason=finish, tail_text=tail, time=time.perf_counter())  # type: ignore[arg-type]

    def unload(self) -> None:
        self._client.close()


def sse_payloads(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The ``data:`` payloads of a server-sent-event byte stream, as they arrive (a line may span pieces; CRLF and
    LF line ends both work). Bytes, not text: ``json.loads`` takes them as they are, which saves a decode per
    chunk on the hottest path of a proxied stream."""
    buf = b""
    for piece in pieces:
        buf += piece
        if b"\n" not in piece:
            continue
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()
    if buf.startswith(b"data:"):  # a last line without its line end
        yield buf[5:].strip()


def _choice_events(choice: dict[str, Any], *, chat: bool) -> Iterator[TokenEvent]:
    now = time.perf_counter()
    text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
    text = text or ""
    lp = choice.get("logprobs")
    entries: list[tuple[str, float, tuple[TopLogprob, ...]]] = []
    if chat and isinstance(lp, dict) and lp.get("content"):
        for e in lp["content"]:
            top = tuple(TopLogprob(str(t["token"]), -1, float(t["logprob"])) for t in e.get("top_logprobs") or [])
            entries.append((str(e["token"]), float(e["logprob"]), top))
    elif not chat and isinstance(lp, dict) and lp.get("tokens"):
        tops = lp.get("top_logprobs") or [None] * len(lp["tokens"])
        for tok, val, alts in zip(lp["tokens"], lp["token_logprobs"], tops, strict=False):
            top = tuple(
                sorted((TopLogprob(str(k), -1, float(v)) for k, v in (alts or {}).items()), key=lambda t: -t.logprob)
            )
            entries.append((str(tok), float(val if val is not None else 0.0), top))
    if not entries:
        if text:
            yield TokenEvent(-1, text, text, 0.0, (), now)
        return
    # the chunk's visible text goes with its first token; tokens of a stop sequence arrive without text
    for i, (token, logprob, top) in enumerate(entries):
        yield TokenEvent(-1, token, text if i == 0 else "", logprob, top, now)


def remote_error(resp: httpx.Response) -> StudioError:
    """The StudioError for an OpenAI-style error reply: a UserError with the server's status and ``param`` for a
    4xx (the request was wrong), a StudioError for anything else."""
    try:
        err = resp.json().get("error", {})
        message = err.get("message") if isinstance(err, dict) else str(err)
        param = err.get("param") if isinstance(err, dict) else None
    except (ValueError, AttributeError):
        message, param = resp.text[:300], None
    text = f"remote server answered HTTP {resp.status_code}: {message}"
    if 400 <= resp.status_code < 500:
        err_cls = UserError
        exc = err_cls(text, param=param)
        exc.status_code = resp.status_code
        return exc
    return StudioError(text)
