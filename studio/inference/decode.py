"""The per-request token logic shared by the engines that run a model's forward pass themselves (transformers,
ONNX Runtime): sampling parameters applied to the logits as transformers' logits processors define them, one
token at a time with its log probability, top alternatives and timestamp, stop sequences and cancellation between
two tokens.

:class:`TokenPicker` holds one request's state (its random generator, penalties, stop-text buffer, counts) and
turns the logits of its next position into stream items. It sees one ``[1, vocab]`` row at a time whether the
request decodes alone or as one row of a batch, so a request gets the same tokens either way (the batch only has
to give it the same logits). :func:`decode_tokens` is the single-request loop on top of it.

Per-token work a request did not ask for is skipped: the chosen token's log probability is ``logit -
logsumexp`` (no full-vocabulary log-softmax copy), top-k alternatives only when ``top_logprobs`` asks, top-p on
the top-k candidates rather than a sort of the whole vocabulary, and the reply text is decoded incrementally (a
few tokens per step, not the whole reply)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from studio.inference.base import GenerationEnd, StreamItem, TokenEvent, TopLogprob
from studio.inference.detok import REPLACEMENT_CHAR, StopTextBuffer
from studio.inference.params import SamplingParams

Step = Callable[[Any, Any], tuple[Any, Any]]


def repetition_processor(params: SamplingParams) -> Any:
    """transformers' repetition penalty for ``params`` (None when it is 1.0, off)."""
    if params.repetition_penalty == 1.0:
        return None
    from transformers import RepetitionPenaltyLogitsProcessor

    return RepetitionPenaltyLogitsProcessor(params.repetition_penalty)


def sample_token(torch: Any, scores: Any, params: SamplingParams, generator: Any) -> int:
    """Sample the next token from ``scores`` (``[1, vocab]``) with temperature, then top-k, then top-p, as
    transformers' warpers define them, drawing with ``generator``."""
    probs, indices = sampling_candidates(torch, scores, params)
    choice = int(torch.multinomial(probs, 1, generator=generator).item())
    return choice if indices is None else int(indices[0, choice].item())


def sampling_candidates(torch: Any, scores: Any, params: SamplingParams) -> tuple[Any, Any]:
    """``(weights, token ids)`` to draw from, ``[1, n]`` each (ids None: the whole vocabulary in order); a token
    cut by top-k or top-p has weight 0.

    transformers' top-p warper sorts the whole vocabulary on every step, even after top-k left 50 tokens; on a
    49k vocabulary that sort was the larger part of a batched step's sampling. Here top-p works on the
    candidates only: the top-k ones, or (no top-k) the 256 most likely when they hold the top-p mass, else the
    sorted vocabulary. A token is kept while the probability mass before it is below ``top_p``: the tokens
    transformers keeps."""
    if params.temperature != 1.0:
        scores = scores / params.temperature
    vocab = scores.shape[-1]
    if params.top_k <= 0 and params.top_p >= 1.0:
        return torch.softmax(scores, dim=-1), None
    if params.top_k > 0:
        values, indices = torch.topk(scores, min(params.top_k, vocab))
        probs = torch.softmax(values, dim=-1)
    else:
        values, indices = torch.topk(scores, min(_TOP_P_CANDIDATES, vocab))
        probs = torch.exp(values - torch.logsumexp(scores, dim=-1, keepdim=True))
        if float(probs.sum()) < params.top_p:  # the cut lies beyond the candidates
            values, indices = torch.sort(scores, descending=True)
            probs = torch.softmax(values, dim=-1)
    if params.top_p < 1.0:
        before = torch.cumsum(probs, dim=-1) - probs
        probs = torch.where(before < params.top_p, probs, torch.zeros_like(probs))
    return probs, indices


_TOP_P_CANDIDATES = 256


class IncrementalText:
    """The decoded text of a growing token list, decoding only the last few tokens per step.

    The usual streaming detokenizer (as in vLLM and TGI): the text of ``ids[prefix:]`` minus the text of
    ``ids[prefix:read]`` is what the newest tokens add, once it no longer ends in an incomplete UTF-8 character;
    decoding from a few tokens back keeps the spacing rules of tokenizers that treat a word's first piece
    specially. ``text`` is the whole reply so far (with a possibly incomplete last character, which
    :class:`StopTextBuffer` holds back)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._done = ""  # text of ids[:read], settled
        self._prefix = 0
        self._read = 0

    def add(self, token_id: int) -> str:
        """Append one token; return the reply text so far."""
        self._ids.append(token_id)
        head = self._decode(self._ids[self._prefix : self._read])
        full = self._decode(self._ids[self._prefix :])
        tail = full[len(head) :]
        if tail and not tail.endswith(REPLACEMENT_CHAR):
            self._done += tail
            self._prefix, self._read = self._read, len(self._ids)
            return self._done
        return self._done + tail

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True)) if ids else ""


class TokenTexts:
    """Each token id's own text (``TokenEvent.token`` and the alternatives), decoded once per id."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self._cache[token_id] = str(self._tokenizer.decode([token_id]))
        return text


class TokenPicker:
    """One request's next-token choice, logprobs, stop sequences and length limit.

    Feed :meth:`advance` the float logits ``[1, vocab]`` of the request's next position; it returns the stream
    items they produce (a :class:`TokenEvent`, and a :class:`GenerationEnd` when the request is over) and sets
    ``finished``. ``last_id`` is the token to feed the model next."""

    def __init__(
        self,
        torch: Any,
        tokenizer: Any,
        eos_ids: set[int],
        prompt_ids: list[int],
        params: SamplingParams,
        max_new: int,
        device: Any = "cpu",
        token_text: Callable[[int], str] | None = None,
    ) -> None:
        self._torch = torch
        self._params = params
        self._eos = eos_ids
        self._max_new = max_new
        self._device = device
        self._gen = torch.Generator(device=device)
        if params.seed is not None:
            self._gen.manual_seed(params.seed)
        else:
            self._gen.seed()
        self._repetition = repetition_processor(params)
        self._penalties = bool(params.frequency_penalty or params.presence_penalty)
        self._ids = list(prompt_ids)  # prompt and reply: what the repetition penalty looks at
        self._text = IncrementalText(tokenizer)
        self._token_text = token_text or TokenTexts(tokenizer)
        self._buf = StopTextBuffer(params.stop)
        self._counts: dict[int, int] = {}
        self.generated = 0
        self.last_id = prompt_ids[-1] if prompt_ids else 0
        self.finished = max_new <= 0
        self.end: GenerationEnd | None = None
        if self.finished:
            self.end = GenerationEnd(finish_reason="length", time=time.perf_counter())

    def advance(self, logits: Any) -> list[StreamItem]:
        """The items one next-token choice produces from ``logits`` (``[1, vocab]``, float)."""
        torch, params = self._torch, self._params
        scores = logits
        if self._counts and self._penalties:
            idx = torch.tensor(list(self._counts), device=self._device)
            cnt = torch.tensor(list(self._counts.values()), device=self._device, dtype=scores.dtype)
            scores = scores.clone()
            scores[0, idx] -= cnt * params.frequency_penalty + params.presence_penalty
        if self._repetition is not None:
            scores = self._repetition(torch.tensor([self._ids], device=self._device), scores)
        if params.greedy:
            next_id = int(torch.argmax(scores, dim=-1).item())
        else:
            next_id = sample_token(torch, scores, params, self._gen)
        now = time.perf_counter()
        if next_id in self._eos:
            return [self._finish("stop", now)]
        row = logits[0]
        lse = torch.logsumexp(row, dim=-1)
        top: tuple[TopLogprob, ...] = ()
        if params.top_logprobs:
            values, indices = torch.topk(row, params.top_logprobs)
            top = tuple(
                TopLogprob(self._token_text(int(i)), int(i), float(v))
                for v, i in zip((values - lse).tolist(), indices.tolist(), strict=True)
            )
        self._ids.append(next_id)
        self._counts[next_id] = self._counts.get(next_id, 0) + 1
        self.generated += 1
        self.last_id = next_id
        event = TokenEvent(
            token_id=next_id,
            token=self._token_text(next_id),
            text=self._buf.update(self._text.add(next_id)),
            logprob=float(row[next_id] - lse),
            top_logprobs=top,
            time=now,
        )
        if self._buf.stopped:
            return [event, self._finish("stop", time.perf_counter())]
        if self.generated >= self._max_new:
            return [event, self._finish("length", time.perf_counter())]
        return [event]

    def cancel(self) -> GenerationEnd:
        """The end of a request cancelled between two tokens."""
        return self._finish("cancelled", time.perf_counter())

    def _finish(self, reason: str, now: float) -> GenerationEnd:
        self.finished = True
        tail = "" if self._buf.stopped else self._buf.flush()
        self.end = GenerationEnd(finish_reason=reason, tail_text=tail, time=now)  # type: ignore[arg-type]
        return self.end


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
    """Yield a :class:`TokenEvent` per generated token, then one :class:`GenerationEnd`.

    ``step(input_ids, past) -> (logits, past)``: ``input_ids`` a ``[1, n]`` tensor of the new tokens (the whole
    prompt first, then one token), ``past`` whatever the step returned last (``None`` at first), ``logits`` the
    ``[1, vocab]`` float scores of the last position."""
    picker = TokenPicker(torch, tokenizer, eos_ids, prompt_ids, params, max_new, device)
    if picker.end is not None:
        yield picker.end
        return
    with torch.inference_mode():
        logits, past = step(torch.tensor([prompt_ids], device=device), None)
        while True:
            if cancel.is_set():
                yield picker.cancel()
                return
            items = picker.advance(logits)
            yield from items
            if picker.finished:
                return
            logits, past = step(torch.tensor([[picker.last_id]], device=device), past)
