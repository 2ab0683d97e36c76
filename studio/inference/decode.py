"""The KV-cached token loop shared by the engines that run a model's forward pass themselves (transformers,
ONNX Runtime): sampling parameters applied to the logits with transformers' own logits processors, one token at
a time with its log probability, top alternatives and timestamp, stop sequences and cancellation between two
tokens.

An engine hands in ``step(input_ids, past) -> (logits, past)``: ``input_ids`` a ``[1, n]`` tensor of the new
tokens (the whole prompt first, then one token), ``past`` whatever the step returned last (``None`` at first),
``logits`` the ``[1, vocab]`` float scores of the last position.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from studio.inference.base import GenerationEnd, StreamItem, TokenEvent, TopLogprob
from studio.inference.detok import StopTextBuffer
from studio.inference.params import SamplingParams

Step = Callable[[Any, Any], tuple[Any, Any]]


def logits_processors(params: SamplingParams) -> Any:
    """transformers' processors for ``params``: repetition penalty, then temperature, top-k and top-p (sampling)."""
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


def decode_tokens(
    torch: Any,
    step: Step,
    tokenizer: Any,
    eos_ids: set[int],
    prompt_ids: list[int],
    params: SamplingParams,
    cancel: Any,
    max_new: int,
    device: Any = "cpu",
) -> Iterator[StreamItem]:
    """Yield a :class:`TokenEvent` per generated token, then one :class:`GenerationEnd`."""
    gen = torch.Generator(device=device)
    if params.seed is not None:
        gen.manual_seed(params.seed)
    else:
        gen.seed()
    processors = logits_processors(params)
    text_buf = StopTextBuffer(params.stop)
    generated: list[int] = []
    counts: dict[int, int] = {}
    finish: str = "length"
    with torch.inference_mode():
        all_ids = torch.tensor([prompt_ids], device=device)
        logits, past = step(all_ids, None)
        for _ in range(max_new):
            if cancel.is_set():
                finish = "cancelled"
                break
            raw_logprobs = torch.log_softmax(logits, dim=-1)
            scores = logits
            if counts and (params.frequency_penalty or params.presence_penalty):
                idx = torch.tensor(list(counts), device=device)
                cnt = torch.tensor(list(counts.values()), device=device, dtype=scores.dtype)
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
                    TopLogprob(str(tokenizer.decode([int(i)])), int(i), float(v))
                    for v, i in zip(values.tolist(), indices.tolist(), strict=True)
                )
            if next_id in eos_ids:
                finish = "stop"
                break
            generated.append(next_id)
            counts[next_id] = counts.get(next_id, 0) + 1
            new_text = text_buf.update(str(tokenizer.decode(generated, skip_special_tokens=True)))
            yield TokenEvent(
                token_id=next_id,
                token=str(tokenizer.decode([next_id])),
                text=new_text,
                logprob=float(raw_logprobs[0, next_id].item()),
                top_logprobs=top,
                time=now,
            )
            if text_buf.stopped:
                finish = "stop"
                break
            next_tensor = torch.tensor([[next_id]], device=device)
            all_ids = torch.cat([all_ids, next_tensor], dim=-1)
            logits, past = step(next_tensor, past)
    tail = "" if text_buf.stopped else text_buf.flush()
    yield GenerationEnd(finish_reason=finish, tail_text=tail, time=time.perf_counter())  # type: ignore[arg-type]
