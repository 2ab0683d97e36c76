"""OpenAI-compatible endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``.

``/v1/models`` lists user aliases, then model aliases (see :func:`studio.aliases.listing.model_cards`), and a
response's ``model`` is the name the request gave (an alias stays the alias; the request log records the model).

Errors use OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``): 400 for bad parameters
with the field in ``param`` (and for an alias whose file is broken, code ``alias_file_broken``), 404 for an
unknown model, 413 for a prompt over ``STUDIO_MAX_PROMPT_CHARS``, 429
with ``Retry-After`` when the model's running and waiting places are all taken.

Resolving the model, building parameters and starting the generation touch the disk (alias files, model
folders), so they run in a worker thread, never on the event loop. A client that leaves cancels its generation,
streaming or not (:mod:`studio.api.disconnect`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from studio.aliases.listing import model_card, model_cards
from studio.api.disconnect import cancel_on_disconnect
from studio.api.routing import StudioRoute
from studio.api.schemas import GENERATION_ERRORS, KEYED_ERRORS, ChatCompletionRequest, CompletionRequest
from studio.context import AppContext
from studio.inference.base import GenerationEnd, GenerationStart, StreamItem, TokenEvent
from studio.inference.manager import GenerationHandle
from studio.inference.params import SamplingParams
from studio.inference.stats import GenerationResult

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"], responses=KEYED_ERRORS, route_class=StudioRoute)


def _ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def _token_logprob(ev: TokenEvent) -> dict[str, Any]:
    return {
        "token": ev.token,
        "logprob": ev.logprob,
        "bytes": list(ev.token.encode("utf-8")),
        "top_logprobs": [
            {"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode("utf-8"))} for t in ev.top_logprobs
        ],
    }


# A placeholder text whose JSON form occurs nowhere else in a chunk: where a chunk template holds the text.
_MARK = "\x00whetstone-text\x00"


def _text_chunk_encoder(template: str) -> Callable[[str], str]:
    """The SSE chunk for one piece of text, built from ``template`` (a whole chunk whose text is ``_MARK``) by
    putting the JSON-escaped text in its place: the same bytes ``json.dumps`` of the whole chunk gives, for a
    third of the CPU. Every token of every stream is one such chunk, and on a small machine serving a vLLM model
    that CPU is taken from vLLM."""
    head, tail = template.split(json.dumps(_MARK), 1)
    return lambda text: head + json.dumps(text) + tail


def _usage(result: GenerationResult) -> dict[str, int]:
    stats = result.stats
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
    }


def _finish(result: GenerationResult) -> str:
    reason = result.end.finish_reason if result.end else "stop"
    return "stop" if reason == "cancelled" else reason


@router.get("/models")
def list_models(request: Request) -> dict[str, Any]:
    """Every name a request may use: user aliases (``owned_by`` "alias"), then every usable model the registry
    finds (bundled, local directories, GGUF files, Hugging Face cache). ``source`` says user or model alias,
    ``root`` the model that serves it."""
    ctx = _ctx(request)
    views = ctx.engines.resolver.list_aliases()
    return {"object": "list", "data": model_cards(views, ctx.settings, created=int(time.time()))}


@router.get("/models/{model:path}")
def retrieve_model(model: str, request: Request) -> dict[str, Any]:
    """One name as a request would resolve it: a user alias, a model id, ``default`` or a model path."""
    ctx = _ctx(request)
    return model_card(model, ctx.engines.resolve(model), ctx.settings, created=int(time.time()))


async def _first_item(handle: GenerationHandle) -> tuple[AsyncIterator[StreamItem], StreamItem | None]:
    """Pull the stream's first item now so that errors before generation become proper HTTP errors."""
    it = handle.aiter()
    first = await anext(it, None)
    return it, first


async def _consume(handle: GenerationHandle) -> None:
    """Run the whole generation (its errors raise here, before any response starts)."""
    async for _ in handle.aiter():
        pass


async def first_or_whole(
    request: Request, handle: GenerationHandle, stream: bool
) -> tuple[AsyncIterator[StreamItem], StreamItem | None]:
    """Wait, cancelling on disconnect, for a streaming generation's first item or a whole non-streaming one
    (then the iterator is empty and the result is on ``handle.result``)."""
    if stream:
        return await cancel_on_disconnect(request, _first_item(handle), handle.cancel)
    await cancel_on_disconnect(request, _consume(handle), handle.cancel)
    return _nothing(), None


async def _nothing() -> AsyncIterator[StreamItem]:
    return
    yield


@router.post("/chat/completions", response_model=None, responses=GENERATION_ERRORS)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
    ctx = _ctx(request)

    def start() -> tuple[SamplingParams, GenerationHandle]:
        params = ctx.engines.params_for(body.model, **body.sampling_overrides())
        messages = [m.to_message() for m in body.messages]
        return params, ctx.engines.start_chat(body.model, messages, params, endpoint="openai.chat", safety=body.safety)

    params, handle = await run_in_threadpool(start)
    cid = f"chatcmpl-{handle.id}"
    created = int(time.time())
    it, first = await first_or_whole(request, handle, body.stream)

    if not body.stream:
        result = handle.result
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": result.text},
            "finish_reason": _finish(result),
            "logprobs": {"content": [_token_logprob(t) for t in result.tokens]} if params.logprobs else None,
        }
        return JSONResponse(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": body.model,
                "choices": [choice],
                "usage": _usage(result),
                **({"safety": result.safety} if result.safety is not None else {}),
            }
        )

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None, safety: Any = None) -> str:
        payload: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}],
        }
        if safety is not None:  # Whetstone extension: the safety layer's findings, on the final chunk
            payload["safety"] = safety
        if include_usage:
            payload["usage"] = None
        return f"data: {json.dumps(payload)}\n\n"

    text_chunk = _text_chunk_encoder(chunk({"content": _MARK}))

    async def events() -> AsyncIterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        items = [first] if first is not None else []
        try:
            while True:
                for item in items:
                    if isinstance(item, TokenEvent):
                        if params.logprobs:
                            yield chunk({"content": item.text}, logprobs={"content": [_token_logprob(item)]})
                        elif item.text:
                            yield text_chunk(item.text)
                    elif isinstance(item, GenerationEnd):
                        if item.tail_text:
                            yield chunk({"content": item.tail_text})
                        yield chunk({}, finish=_finish(handle.result), safety=handle.result.safety)
                nxt = await anext(it, None)
                if nxt is None:
                    break
                items = [nxt]
        except Exception as exc:
            err = getattr(exc, "to_openai", None)
            body_ = err() if callable(err) else {"error": {"message": str(exc), "type": "server_error"}}
            yield f"data: {json.dumps(body_)}\n\n"
        finally:
            if not handle.result.finished:  # closed early: the client left mid-stream
                handle.cancel()
        if include_usage and handle.result.start is not None:
            usage_chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.model,
                "choices": [],
                "usage": _usage(handle.result),
            }
            yield f"data: {json.dumps(usage_chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/completions", response_model=None, responses=GENERATION_ERRORS)
async def completions(body: CompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
    ctx = _ctx(request)

    def start() -> tuple[SamplingParams, GenerationHandle]:
        params = ctx.engines.params_for(body.model, **body.sampling_overrides())
        return params, ctx.engines.start_completion(
            body.model, body.prompt_text, params, endpoint="openai.completions", safety=body.safety
        )

    params, handle = await run_in_threadpool(start)
    cid = f"cmpl-{handle.id}"
    created = int(time.time())
    it, first = await first_or_whole(request, handle, body.stream)

    def legacy_logprobs(tokens: list[TokenEvent], offset: int) -> dict[str, Any]:
        offsets, pos = [], offset
        for t in tokens:
            offsets.append(pos)
            pos += len(t.token)
        return {
            "tokens": [t.token for t in tokens],
            "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [{a.token: a.logprob for a in t.top_logprobs} for t in tokens],
            "text_offset": offsets,
        }

    if not body.stream:
        result = handle.result
        return JSONResponse(
            {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "text": result.text,
                        "finish_reason": _finish(result),
                        "logprobs": legacy_logprobs(result.tokens, 0) if params.logprobs else None,
                    }
                ],
                "usage": _usage(result),
                **({"safety": result.safety} if result.safety is not None else {}),
            }
        )

    def chunk(text: str, finish: str | None = None, logprobs: Any = None) -> str:
        payload = {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": body.model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": logprobs}],
        }
        return f"data: {json.dumps(payload)}\n\n"

    text_chunk = _text_chunk_encoder(chunk(_MARK))

    async def events() -> AsyncIterator[str]:
        item: StreamItem | None = first
        pos = 0
        try:
            while item is not None:
                if isinstance(item, TokenEvent) and params.logprobs:
                    yield chunk(item.text, logprobs=legacy_logprobs([item], pos))
                    pos += len(item.token)
                elif isinstance(item, TokenEvent) and item.text:
                    yield text_chunk(item.text)
                    pos += len(item.token)
                elif isinstance(item, GenerationEnd):
                    yield chunk(item.tail_text, finish=_finish(handle.result))
                elif not isinstance(item, GenerationStart | TokenEvent):
                    break
                item = await anext(it, None)
        except Exception as exc:
            err = getattr(exc, "to_openai", None)
            body_ = err() if callable(err) else {"error": {"message": str(exc), "type": "server_error"}}
            yield f"data: {json.dumps(body_)}\n\n"
        finally:
            if not handle.result.finished:  # closed early: the client left mid-stream
                handle.cancel()
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
