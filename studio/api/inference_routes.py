"""Studio inference API (``/api/inference/...``): load and unload models, adapters, generate (JSON or SSE),
compare an adapter with its base, and a WebSocket that streams token events with log probabilities.

Generation routes keep disk work (alias and model resolution) off the event loop and cancel their generations
when the client leaves (:mod:`studio.api.disconnect`); the WebSocket answers every bad frame or refused request
with an OpenAI-shaped error message and a close code that says why (1003 not text, 1007 not JSON, 1008 refused
request, 1013 busy, 1011 server error).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError
from starlette.concurrency import run_in_threadpool

from studio.api.disconnect import cancel_on_disconnect
from studio.api.routing import StudioRoute
from studio.api.schemas import GENERATION_ERRORS, KEYED_ERRORS, RequestBody, server_error_body
from studio.compare.stream import ContenderSpec, start_sides
from studio.context import AppContext
from studio.errors import RateLimitError, StudioError, UserError, ValidationError
from studio.inference.base import ChatMessage, GenerationEnd, GenerationStart, LoadedModelInfo, TokenEvent
from studio.inference.manager import GenerationHandle
from studio.inference.params import SamplingParams, validation_error_from_pydantic
from studio.inference.stats import GenerationResult
from studio.monitor import memory_snapshot

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/inference", tags=["Inference"], responses=KEYED_ERRORS, route_class=StudioRoute)


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class LoadRequest(RequestBody):
    model: str = Field(min_length=1, description="Alias, registry id or local path.")
    adapter: str | None = Field(None, description="PEFT adapter directory (absolute, or a name under adapters/).")
    adapter_name: str | None = None
    quantization: Literal["none", "int8", "int4", "nf4", "auto"] = Field(
        "none", description="bitsandbytes quantization at load; auto = only when the model would not fit."
    )
    engine: Literal["auto", "transformers", "vllm", "llamacpp", "onnxruntime", "remote"] | None = Field(
        None, description="Engine for this load; default: the alias's context_params.engine, else auto."
    )


class GenerateRequest(RequestBody):
    """``prompt`` (raw text, no chat template) or ``messages`` (chat template applied)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"model": "default", "messages": [{"role": "user", "content": "Name a prime number."}]},
                {"model": "default", "prompt": "2, 3, 5, 7,", "params": {"temperature": 0}, "stream": True},
            ]
        }
    )

    model: str = Field(min_length=1)
    prompt: str | None = None
    messages: list[MessageIn] | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="Any SamplingParams field.")
    adapter: str | None = Field(None, description="Loaded adapter name, 'base' for the base model, or none.")
    stream: bool = Field(False, description="true: Server-Sent Events with one JSON message per token.")
    safety: bool | None = Field(
        None, description="Filter prompt and reply with the safety policy; default: on for aliases with a policy."
    )

    @model_validator(mode="after")
    def _one_input(self) -> GenerateRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("'prompt' is empty")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' is empty")
        return self


class ContenderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="Alias, registry id or local path.")
    adapter: str | None = Field(None, description="Adapter name under adapters/ or a path; none = the base model.")


class CompareRequest(RequestBody):
    """``models`` (2-4 contenders, each ``"model"``, ``"model + adapter"`` or ``{"model", "adapter"}``) answer the
    same ``prompt`` or ``messages``; results come back in the order given. The older form -- one ``model`` and
    its ``adapter`` -- compares that adapter with its base model."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"models": ["default", "default"], "prompt": "Name a prime number."}]}
    )

    models: list[str | ContenderIn] | None = Field(None, min_length=2, max_length=4)
    model: str | None = Field(None, min_length=1, description="Older form: the model whose adapter meets its base.")
    adapter: str | None = Field(None, description="Older form: the adapter to compare with the base model.")
    prompt: str | None = None
    messages: list[MessageIn] | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="Any SamplingParams field, for every side.")

    @model_validator(mode="after")
    def _check(self) -> CompareRequest:
        if (self.models is None) == (self.model is None):
            raise ValueError("give 'models' (2-4 contenders) or, for adapter vs base, 'model'")
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("'prompt' is empty")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' is empty")
        return self


class SwapAdapterRequest(RequestBody):
    adapter: str | None = Field(None, description="Loaded adapter name, a new adapter path, or null/'base'.")


def _ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def info_dict(info: LoadedModelInfo) -> dict[str, Any]:
    return {
        "model": info.model_id,
        "backend": info.backend,
        "engine": info.backend,
        "engine_reason": info.extra.get("engine_reason", ""),
        "path": str(info.path),
        "dtype": info.dtype,
        "device": info.device,
        "parameters": info.parameters,
        "memory_bytes": info.memory_bytes,
        "load_seconds": round(info.load_seconds, 3),
        "quantization": info.extra.get("quantization", "none"),
        "adapters": [a for a in info.extra.get("adapters", "").split(",") if a],
        "active_adapter": info.extra.get("active_adapter") or None,
    }


def params_from(ctx: AppContext, model: str, params: dict[str, Any]) -> SamplingParams:
    unknown = sorted(set(params) - set(SamplingParams.model_fields))
    if unknown:
        raise ValidationError(f"unknown parameter 'params.{unknown[0]}'", param=f"params.{unknown[0]}")
    try:
        return ctx.engines.params_for(model, **params)
    except ValidationError as exc:
        if exc.param not in SamplingParams.model_fields:  # e.g. the model name, refused while resolving it
            raise
        raise ValidationError(exc.message, param=f"params.{exc.param}") from None


def token_dict(ev: TokenEvent) -> dict[str, Any]:
    return {
        "token": ev.token,
        "token_id": ev.token_id,
        "text": ev.text,
        "logprob": ev.logprob,
        "top": [{"token": t.token, "token_id": t.token_id, "logprob": t.logprob} for t in ev.top_logprobs],
    }


def result_dict(result: GenerationResult, model: str) -> dict[str, Any]:
    stats = result.stats
    return {
        "model": model,
        "text": result.text,
        "finish_reason": stats.finish_reason,
        "usage": {
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "total_tokens": stats.prompt_tokens + stats.completion_tokens,
        },
        "stats": stats.to_dict(),
        "tokens": [token_dict(t) for t in result.tokens],
        "safety": result.safety,
    }


def start_generation(ctx: AppContext, body: GenerateRequest, *, owner: str | None = None) -> GenerationHandle:
    params = params_from(ctx, body.model, body.params)
    if body.messages is not None:
        messages = [ChatMessage(m.role, m.content) for m in body.messages]
        return ctx.engines.start_chat(
            body.model,
            messages,
            params,
            endpoint="api.generate",
            owner=owner,
            adapter=body.adapter,
            safety=body.safety,
        )
    return ctx.engines.start_completion(
        body.model,
        body.prompt or "",
        params,
        endpoint="api.generate",
        owner=owner,
        adapter=body.adapter,
        safety=body.safety,
    )


@router.post("/load")
def load_model(body: LoadRequest, request: Request) -> dict[str, Any]:
    """Load a model (converting a GGUF once), optionally quantized and with an adapter."""
    ctx = _ctx(request)
    engine = ctx.engines.load(body.model, quantization=body.quantization, engine=body.engine)
    if body.adapter:
        ctx.engines.load_adapter_on(engine, body.adapter, body.adapter_name)
    return {"loaded": info_dict(engine.info), "memory": memory_snapshot().to_dict()}


@router.get("/estimate", responses={404: GENERATION_ERRORS[404]})
def estimate(
    request: Request,
    model: str,
    quantization: Literal["none", "int8", "int4", "nf4"] = "none",
) -> dict[str, Any]:
    """Memory a model would need, before loading it, and whether it fits."""
    est = _ctx(request).engines.estimate(model, quantization=quantization)
    return {**est.__dict__, "summary": est.summary()}


@router.get("/models/loaded")
def loaded_models(request: Request) -> dict[str, Any]:
    """Every loaded model with its memory, plus this process's memory figures."""
    return {
        "models": [info_dict(i) for i in _ctx(request).engines.loaded()],
        "memory": memory_snapshot().to_dict(),
    }


@router.post("/models/{model_id:path}/unload")
def unload_model(model_id: str, request: Request) -> dict[str, Any]:
    """Free a model's memory. 404 when it is not loaded."""
    ctx = _ctx(request)
    ctx.engines.engine(model_id)  # 404 if not loaded
    ctx.engines.unload(model_id)
    return {"unloaded": model_id, "memory": memory_snapshot().to_dict()}


@router.post("/models/{model_id:path}/swap-adapter")
def swap_adapter(model_id: str, body: SwapAdapterRequest, request: Request) -> dict[str, Any]:
    """Hot-swap the active adapter without reloading the base model."""
    ctx = _ctx(request)
    active = ctx.engines.swap_adapter(model_id, body.adapter)
    return {"model": ctx.engines.engine(model_id).info.model_id, "active_adapter": active}


@router.post("/generate", response_model=None, responses=GENERATION_ERRORS)
async def generate(body: GenerateRequest, request: Request) -> dict[str, Any] | StreamingResponse:
    """Generate a reply with per-token log probabilities. ``stream: true`` answers with Server-Sent Events:
    one ``{"type": "token", ...}`` message per token, then ``{"done": true, ...}`` with the stats."""
    from studio.api.openai_routes import first_or_whole

    ctx = _ctx(request)
    handle = await run_in_threadpool(start_generation, ctx, body)
    # errors before the first token become proper 4xx responses
    it, first = await first_or_whole(request, handle, body.stream)
    if not body.stream:
        return result_dict(handle.result, body.model)  # the model as the request named it (an alias stays one)

    async def events() -> AsyncIterator[str]:
        item = first
        try:
            while item is not None:
                for msg in stream_messages(item, handle, body.model):
                    yield f"data: {json.dumps(msg)}\n\n"
                item = await anext(it, None)
        except StudioError as exc:
            yield f"data: {json.dumps(exc.to_openai())}\n\n"
        finally:
            if not handle.result.finished:  # closed early: the client left mid-stream
                handle.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def compare_result(result: GenerationResult, spec: ContenderSpec, model_id: str) -> dict[str, Any]:
    """One side of a comparison: ``model`` as the caller named it, the reply, usage and figures."""
    full = result_dict(result, model_id)
    return {
        "model": spec.label,
        "model_id": model_id,
        "adapter": spec.adapter,
        "text": full["text"],
        "finish_reason": full["finish_reason"],
        "usage": full["usage"],
        "stats": full["stats"],
    }


async def _whole(request: Request, handles: list[GenerationHandle]) -> list[GenerationResult]:
    """Run every generation to its end (all at once), cancelling them all if the client leaves; the first
    failing one (in order) raises its error."""

    async def consume(handle: GenerationHandle) -> None:
        async for _ in handle.aiter():
            pass

    def cancel_all() -> None:
        for handle in handles:
            handle.cancel()

    async def run_all() -> list[BaseException | None]:
        return await asyncio.gather(*(consume(h) for h in handles), return_exceptions=True)

    outcomes = await cancel_on_disconnect(request, run_all(), cancel_all)
    for outcome in outcomes:
        if outcome is not None:
            raise outcome
    return [h.result for h in handles]


@router.post("/compare", responses=GENERATION_ERRORS)
async def compare(body: CompareRequest, request: Request) -> dict[str, Any]:
    """The same prompt answered by 2-4 models/aliases/adapters at once: ``{"results": [{"model", "text", "usage",
    "stats"}, ...]}`` in the order given. The older form (``model`` + ``adapter``) also answers ``adapter`` and
    ``base``."""
    ctx = _ctx(request)
    if body.messages is None:
        messages = [ChatMessage("user", body.prompt or "")]
    else:
        messages = [ChatMessage(m.role, m.content) for m in body.messages]
    if body.model is not None:
        model = body.model
        params = await run_in_threadpool(params_from, ctx, model, body.params)
        adapter = await run_in_threadpool(ctx.engines.comparison_adapter, model, body.adapter)
        # one after the other on the same weights, as compare_with_base does, each cancelled if the client leaves
        (with_adapter,) = await _whole(
            request,
            [
                await run_in_threadpool(
                    lambda: ctx.engines.start_chat(model, messages, params, endpoint="compare.adapter", adapter=adapter)
                )
            ],
        )
        (base,) = await _whole(
            request,
            [
                await run_in_threadpool(
                    lambda: ctx.engines.start_chat(model, messages, params, endpoint="compare.base", adapter="base")
                )
            ],
        )
        model_id = (await run_in_threadpool(ctx.engines.engine, model)).info.model_id
        return {
            "adapter": result_dict(with_adapter, model),
            "base": result_dict(base, model),
            "results": [
                compare_result(with_adapter, ContenderSpec(body.model, adapter), model_id),
                compare_result(base, ContenderSpec(body.model), model_id),
            ],
        }
    specs = [
        ContenderSpec.parse(m) if isinstance(m, str) else ContenderSpec(m.model, m.adapter) for m in body.models or []
    ]

    def start() -> tuple[list[str], list[GenerationHandle]]:
        per_side = [params_from(ctx, spec.model, body.params) for spec in specs]
        model_ids = [ctx.engines.resolve(spec.model).entry.id for spec in specs]
        started = start_sides(ctx.engines, specs, [messages] * len(specs), per_side, endpoint="compare.api")
        handles = [h for h in started if not isinstance(h, StudioError)]
        failed = [h for h in started if isinstance(h, StudioError)]
        if failed:  # a side that cannot start fails the whole comparison
            for handle in handles:
                handle.cancel()
            raise failed[0]
        return model_ids, handles

    model_ids, handles = await run_in_threadpool(start)
    results = await _whole(request, handles)
    return {
        "results": [
            compare_result(r, spec, model_id) for r, spec, model_id in zip(results, specs, model_ids, strict=True)
        ]
    }


def stream_messages(item: Any, handle: GenerationHandle, model: str) -> list[dict[str, Any]]:
    """The JSON messages one stream item turns into (shared by SSE and the WebSocket); ``model`` as the request
    named it."""
    if isinstance(item, GenerationStart):
        return [{"type": "start", "model": model, "prompt_tokens": item.prompt_tokens}]
    if isinstance(item, TokenEvent):
        return [{"type": "token", **token_dict(item)}]
    if isinstance(item, GenerationEnd):
        out: list[dict[str, Any]] = []
        if item.tail_text:
            out.append({"type": "text", "text": item.tail_text})
        out.append({"type": "done", "done": True, **result_dict(handle.result, model), "tokens": None})
        return out
    return []


class _BadFrame(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


async def _receive_json(websocket: WebSocket) -> Any:
    """The next frame as parsed JSON; _BadFrame for a binary frame (close 1003) or text that is not JSON (1007)."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text = message.get("text")
    if text is None:
        raise _BadFrame("send the generate request as a JSON text frame, not a binary frame", 1003)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadFrame(f"send a JSON generate request: {exc}", 1007) from None


def _close_code(exc: StudioError) -> int:
    if isinstance(exc, RateLimitError):
        return 1013  # try again later
    return 1008 if isinstance(exc, UserError) else 1011


async def _refuse(websocket: WebSocket, body: dict[str, Any], code: int) -> None:
    """Send an error message in OpenAI's shape, then close with ``code`` (the client may be gone already)."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.send_json(body)
        await websocket.close(code=code)


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    """Send one generate request (same body as POST /generate); receive a JSON message per token event and
    a final ``{"done": true, ...}``. Send ``{"type": "stop"}`` at any time to end generation early.

    A refused request gets ``{"error": {...}}`` (OpenAI's shape) and a close code: 1003 for a binary frame,
    1007 for text that is not JSON, 1008 for a bad request, 1013 when the model is busy (429), 1011 for a
    server error."""
    ctx: AppContext = websocket.app.state.ctx
    if ctx.users.authenticate(websocket.headers, websocket.cookies) is None:
        await websocket.close(code=4401, reason="missing or wrong API key")
        return
    await websocket.accept()
    try:
        raw = await _receive_json(websocket)
        try:
            body = GenerateRequest.model_validate(raw)
        except PydanticValidationError as exc:
            raise validation_error_from_pydantic(exc) from None
        handle = await run_in_threadpool(start_generation, ctx, body)
    except WebSocketDisconnect:
        return
    except _BadFrame as exc:
        error = {"message": exc.message, "type": "invalid_request_error", "param": None, "code": None}
        await _refuse(websocket, {"error": error}, exc.code)
        return
    except StudioError as exc:
        await _refuse(websocket, exc.to_openai(), _close_code(exc))
        return
    except Exception:
        ref = uuid.uuid4().hex[:12]
        log.exception("WebSocket generate request failed (reference %s)", ref)
        await _refuse(websocket, server_error_body(ref), 1011)
        return

    async def listen_for_stop() -> None:
        try:
            while True:
                try:
                    msg = await _receive_json(websocket)
                except _BadFrame:
                    continue  # only {"type": "stop"} means anything once generation runs
                if isinstance(msg, dict) and msg.get("type") == "stop":
                    handle.cancel()
        except (WebSocketDisconnect, RuntimeError):
            handle.cancel()

    listener = asyncio.create_task(listen_for_stop())
    try:
        async for item in handle.aiter():
            for msg in stream_messages(item, handle, body.model):
                await websocket.send_json(msg)
    except StudioError as exc:
        await _refuse(websocket, exc.to_openai(), _close_code(exc))
        return
    except (WebSocketDisconnect, OSError):
        handle.cancel()
        return
    except Exception:
        ref = uuid.uuid4().hex[:12]
        log.exception("WebSocket generation %s failed (reference %s)", handle.id, ref)
        handle.cancel()
        await _refuse(websocket, server_error_body(ref), 1011)
        return
    finally:
        listener.cancel()
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.close()
