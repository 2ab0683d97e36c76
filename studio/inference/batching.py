"""Continuous batching for the transformers engine: the generations running on one model are decoded together,
one forward pass per step for the whole running batch, and requests join and leave between two steps.

Lifecycle of a request (one scheduler thread per engine, started with the first request)::

    submit ──► waiting (FIFO) ──admit──► prefill alone ──► row of its group ──► ... ──► done
                   │                         (first token)     (one token per step)
                   └─ cancelled while waiting: leaves at once, no token

At most ``max_parallel`` requests are running (prefilled, holding KV cache) at once; the others wait in arrival
order. A cancelled or abandoned running request leaves at the next step; the others go on.

**Why a batched row answers exactly as the request alone.** Every request is prefilled alone (batch 1), so its
prompt's cache is what a solo run makes. Rows of a group share one left-padded KV cache (each row's tokens are
the last ``length`` columns; joining pads the shorter side on the left, leaving drops rows and columns that only
padding uses) and get explicit ``position_ids``. Attention for a decode step runs per row on that row's own
unpadded keys (:func:`row_attention`, rows of equal length together): a masked, padded softmax sums in another
order than the solo run and changes the last bits (measured: 4 of 20 bf16 and 14 of 20 fp32 cases differ). The
linear layers run batched: torch's CPU bf16 kernels give a row the same bits as alone in batches of up to 32 rows
(0 of 330 rows differed; beyond 32 they do not, hence :data:`ROWS_PER_PASS`), but not in a prompt-sized matmul,
which is why prompts are prefilled one by one. fp32 kernels (MKL) differ by ~1 ulp between batch 1 and 8, so in
fp32 a near-tie can in principle flip a token (none did in 16 bundled-model chats of 32 tokens); on CUDA neither
dtype is promised. Sampling, stop strings and logprobs are per row
(:class:`~studio.inference.decode.TokenPicker`, with the request's own ``torch.Generator``).

Groups: the base model and LoRA adapters share one group (PEFT's mixed-adapter batches, ``adapter_names`` per
row, with :func:`exact_lora_mixed_forward`); other injected adapters get a group per adapter; prompt-learning
adapters (prefix tuning, ...) and models whose cache or attention cannot be batched decode each request alone,
one forward per request per step.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from studio.errors import GenerationError
from studio.inference.base import GenerationEnd, StreamItem
from studio.inference.decode import TokenPicker
from studio.inference.params import SamplingParams

log = logging.getLogger(__name__)

ROW_ATTENTION = "studio_rows"  # the attention implementation name registered with transformers
ALONE = "alone"  # first element of a group key whose requests never share a forward pass
_POLL_S = 0.05  # how often a waiting consumer looks at its cancel event
# Most rows in one forward pass. torch's CPU bf16 matmul gives a row the same bits as alone up to 32 rows and not
# beyond (measured: at 33 rows 31 of 33 lm_head rows differ in the last bit), so a bigger batch of one group
# decodes as several passes of at most 32 rows.
ROWS_PER_PASS = 32


# -- attention per row ------------------------------------------------------------------------------------------
@dataclass
class RowLayout:
    """Where each row's own keys start in a left-padded cache, grouped by start (rows of one start share a call).

    ``parts``: (start column, row slice or index tensor); ``restore``: the permutation back to batch order when
    the parts are not already in it; ``calls`` counts attention calls (a model that ignores the layout shows 0)."""

    parts: list[tuple[int, Any]]
    restore: Any = None
    calls: int = 0

    @classmethod
    def build(cls, torch: Any, starts: list[int], device: Any = "cpu") -> RowLayout:
        by_start: dict[int, list[int]] = {}
        for row, start in enumerate(starts):
            by_start.setdefault(start, []).append(row)
        parts: list[tuple[int, Any]] = []
        order: list[int] = []
        for start, rows in by_start.items():
            if rows == list(range(rows[0], rows[-1] + 1)):
                parts.append((start, slice(rows[0], rows[-1] + 1)))
            else:
                parts.append((start, torch.tensor(rows, device=device)))
            order.extend(rows)
        restore = None
        if order != list(range(len(starts))):
            inverse = [0] * len(order)
            for pos, row in enumerate(order):
                inverse[row] = pos
            restore = torch.tensor(inverse, device=device)
        return cls(parts, restore)


def row_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    row_layout: RowLayout | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers attention function: SDPA, and in a batched decode step SDPA per row on its own keys (rows
    with the same start together), without a mask."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if row_layout is None:
        return sdpa_attention_forward(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    row_layout.calls += 1
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    outputs = []
    # One row's attention is a few microseconds of work; spread over the intra-op threads it costs a thread
    # wake-up each (with OMP_WAIT_POLICY=PASSIVE, ~100 us against ~25 us on one thread: 32 rows x 30 layers was a
    # third of a decode step), so the rows run on this thread alone (torch's OpenMP thread count is per calling
    # thread: other threads keep theirs). Solo and batched rows both do, so a row's bits do not depend on it.
    threads = torch.get_num_threads() if query.device.type == "cpu" else 1
    if threads > 1:
        torch.set_num_threads(1)
    try:
        for start, rows in row_layout.parts:
            if isinstance(rows, slice):
                q, k, v = query[rows], key[rows, :, start:], value[rows, :, start:]
            else:
                q, k, v = query.index_select(0, rows), key.index_select(0, rows), value.index_select(0, rows)
                k, v = k[:, :, start:], v[:, :, start:]
            outputs.append(torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scaling, enable_gqa=gqa))
    finally:
        if threads > 1:
            torch.set_num_threads(threads)
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0)
    if row_layout.restore is not None:
        out = out.index_select(0, row_layout.restore)
    return out.transpose(1, 2).contiguous(), None


_registered = threading.Lock()


def register_row_attention() -> str:
    """Register :func:`row_attention` (with SDPA's mask function) with transformers; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    with _registered:
        AttentionInterface.register(ROW_ATTENTION, row_attention)
        AttentionMaskInterface.register(ROW_ATTENTION, sdpa_mask)
    return ROW_ATTENTION


def enable_row_attention(torch: Any, model: Any, device: Any) -> str | None:
    """Switch ``model`` to :func:`row_attention` and check with one tiny forward pass that its attention layers
    use it; None when batched decoding can go on, else why not (the model is left as it was)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        layers = DynamicCache(config=model.config).layers
    except Exception as exc:
        return f"no dynamic KV cache for this model: {_short(exc)}"
    if any(type(layer) is not DynamicLayer for layer in layers):
        return "sliding-window or other special cache layers"
    previous = getattr(model.config, "_attn_implementation", None)
    try:
        model.set_attn_implementation(register_row_attention())
        layout = RowLayout.build(torch, [0, 0], device)
        with torch.inference_mode():
            model(
                input_ids=torch.zeros((2, 1), dtype=torch.long, device=device),
                position_ids=torch.zeros((2, 1), dtype=torch.long, device=device),
                past_key_values=DynamicCache(config=model.config),
                use_cache=True,
                logits_to_keep=1,
                row_layout=layout,
            )
        if layout.calls:
            return None
        reason = "its attention layers do not use transformers' attention interface"
    except Exception as exc:
        reason = f"per-row attention unavailable: {_short(exc)}"
    try:
        if previous is not None and getattr(model.config, "_attn_implementation", None) != previous:
            model.set_attn_implementation(previous)
    except Exception:  # could not switch back: it never switched
        log.debug("could not restore attention implementation %s", previous, exc_info=True)
    return reason


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "…"


# -- LoRA rows of several adapters in one forward pass ----------------------------------------------------------
def exact_lora_mixed_forward(self: Any, x: Any, *args: Any, adapter_names: list[str], **kwargs: Any) -> Any:
    """PEFT LoRA ``Linear._mixed_batch_forward`` (``adapter_names``: one adapter or ``__base__`` per row) with the
    single-adapter forward's arithmetic: PEFT's own version rounds each adapter's delta to the model dtype before
    adding it, while the single-adapter path adds in the adapter's dtype (float32) and rounds once, so a bf16 row
    in a mixed batch would answer differently from the same request alone and from PEFT's ``generate``."""
    if any(name in self.lora_variant for name in adapter_names):  # DoRA and other variants: PEFT's own
        return type(self)._mixed_batch_forward(self, x, *args, adapter_names=adapter_names, **kwargs)
    kwargs.pop("alora_offsets", None)
    result = self.base_layer(x, *args, **kwargs)
    dtype = result.dtype
    for name in dict.fromkeys(adapter_names):
        if name not in self.lora_A:  # the base ("__base__") or an adapter without this layer
            continue
        rows = [i for i, n in enumerate(adapter_names) if n == name]
        lora_a = self.lora_A[name]
        sub = self._cast_input_dtype(x[rows], lora_a.weight.dtype)
        delta = self.lora_B[name](lora_a(self.lora_dropout[name](sub))) * self.scaling[name]
        result[rows] = (result[rows] + delta).to(dtype)
    return result


def install_exact_lora_mixing(model: Any) -> bool:
    """Give every LoRA ``Linear`` of ``model`` :func:`exact_lora_mixed_forward`; False when the model has LoRA
    layers of another kind (embeddings, quantized layers), whose rows then batch per adapter instead."""
    from types import MethodType

    from peft.tuners.lora.layer import Linear, LoraLayer

    mixable = True
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        if type(module) is Linear:
            if "_mixed_batch_forward" not in vars(module):
                setattr(module, "_mixed_batch_forward", MethodType(exact_lora_mixed_forward, module))  # noqa: B010
        else:
            mixable = False
    return mixable


# -- the padded cache of a group --------------------------------------------------------------------------------
def cache_layers(cache: Any) -> list[Any]:
    """The per-layer key/value holders of a transformers ``DynamicCache``."""
    return list(cache.layers)


def join_rows(torch: Any, cache: Any, width: int, row_cache: Any, row_width: int) -> tuple[Any, int]:
    """Append the rows of ``row_cache`` to ``cache``, left-padding whichever is shorter; returns the cache and
    its new width (columns)."""
    new_width = max(width, row_width)
    for layer, extra in zip(cache_layers(cache), cache_layers(row_cache), strict=True):
        layer.keys = torch.cat([_pad_left(torch, layer.keys, new_width), _pad_left(torch, extra.keys, new_width)])
        layer.values = torch.cat([_pad_left(torch, layer.values, new_width), _pad_left(torch, extra.values, new_width)])
    return cache, new_width


def keep_rows(torch: Any, cache: Any, rows: list[int], drop_columns: int) -> None:
    """Keep only ``rows`` (in that order) and drop the first ``drop_columns`` columns (padding in every kept row)."""
    index = torch.tensor(rows, device=cache_layers(cache)[0].keys.device)
    for layer in cache_layers(cache):
        layer.keys = layer.keys.index_select(0, index)[:, :, drop_columns:]
        layer.values = layer.values.index_select(0, index)[:, :, drop_columns:]


def _pad_left(torch: Any, t: Any, width: int) -> Any:
    missing = width - t.shape[-2]
    if missing <= 0:
        return t
    return torch.nn.functional.pad(t, (0, 0, missing, 0))


# -- requests and groups ----------------------------------------------------------------------------------------
@dataclass(eq=False)
class BatchRequest:
    """One generation handed to the scheduler; its stream items arrive on ``events``."""

    prompt_ids: list[int]
    params: SamplingParams
    cancel: threading.Event
    adapter: str | None
    max_new: int
    events: queue.SimpleQueue[StreamItem | BaseException] = field(default_factory=queue.SimpleQueue)
    state: Literal["waiting", "running", "done"] = "waiting"
    abandoned: bool = False  # the consumer stopped reading


@dataclass(eq=False)
class _Row:
    request: BatchRequest
    picker: TokenPicker
    length: int  # tokens of this row in the cache (its prompt and the tokens fed back so far)


@dataclass(eq=False)
class _Group:
    key: Hashable
    rows: list[_Row] = field(default_factory=list)
    cache: Any = None
    width: int = 0  # cache columns (the longest row)

    @property
    def alone(self) -> bool:
        return isinstance(self.key, tuple) and bool(self.key) and self.key[0] == ALONE


@dataclass
class BatchCounters:
    """What the scheduler did, for tests and monitoring (not timings)."""

    decode_passes: int = 0  # forward passes of decode steps (one per group per step)
    prefills: int = 0
    tokens: int = 0
    peak_running: int = 0  # most requests running (holding a KV cache) at once
    peak_batch: int = 0  # most rows in one forward pass


class BatchRunner(Protocol):
    """What the engine gives the scheduler: grouping, prefill and one decode step for a group."""

    def group_key(self, adapter: str | None) -> Hashable:
        """The group a request with ``adapter`` decodes in; a tuple starting with :data:`ALONE` never batches."""
        ...

    def new_picker(self, request: BatchRequest) -> TokenPicker:
        """The request's token picker (sampling state)."""
        ...

    def prefill(self, key: Hashable, adapter: str | None, prompt_ids: list[int]) -> tuple[Any, Any]:
        """Run the prompt alone; ``(logits [1, vocab] float, cache)``."""
        ...

    def decode(
        self,
        key: Hashable,
        adapters: list[str | None],
        input_ids: Any,
        position_ids: Any,
        cache: Any,
        layout: RowLayout | None,
    ) -> tuple[Any, Any]:
        """One forward pass of a group's rows; ``(logits [rows, vocab] float, cache)``."""
        ...


class BatchScheduler:
    """The continuous-batching loop of one engine (see the module docstring); ``lock`` is held for each step so
    that adapter changes and attention maps run between two steps."""

    def __init__(self, torch: Any, runner: BatchRunner, lock: Any, max_parallel: int, device: Any = "cpu") -> None:
        self._torch = torch
        self._runner = runner
        self._lock = lock
        self.max_parallel = max_parallel
        self._device = device
        self._cond = threading.Condition(threading.Lock())
        self._waiting: deque[BatchRequest] = deque()
        self._groups: list[_Group] = []
        self._running = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.counters = BatchCounters()

    # -- consumer side (the generation's own thread) ---------------------------------------------------------
    def stream(self, request: BatchRequest) -> Iterator[StreamItem]:
        """Queue ``request`` and yield its items as the scheduler produces them."""
        self._submit(request)
        try:
            while True:
                try:
                    item = request.events.get(timeout=_POLL_S)
                except queue.Empty:
                    if request.cancel.is_set() and self._withdraw(request):
                        yield GenerationEnd(finish_reason="cancelled", time=time.perf_counter())
                        return
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, GenerationEnd):
                    return
        finally:
            request.abandoned = True  # the scheduler drops it at its next step if it is still running
            self._withdraw(request)

    def _submit(self, request: BatchRequest) -> None:
        with self._cond:
            if self._stopping:
                raise GenerationError("the model was unloaded; load it again")
            self._waiting.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="batch-decode", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _withdraw(self, request: BatchRequest) -> bool:
        """Take a request that still waits out of the line; False when it already runs or ended."""
        with self._cond:
            if request.state != "waiting":
                return False
            self._waiting.remove(request)
            request.state = "done"
            return True

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def stop(self, timeout: float = 60.0) -> None:
        """End the loop after its current step; requests still queued or running end with an error."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the loop (scheduler thread) --------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._stopping and not self._waiting and not self._running:
                        self._cond.wait()
                    if self._stopping:
                        break
                with self._lock, self._torch.inference_mode():
                    self._step()
        except BaseException as exc:  # a bug here must not leave consumers waiting forever
            log.exception("batch decode loop failed")
            self._fail_all(GenerationError(f"the decode loop failed ({type(exc).__name__}); see the server log"))
            return
        self._fail_all(GenerationError("the model was unloaded while this generation ran"))

    def _fail_all(self, error: BaseException) -> None:
        with self._cond:
            self._stopping = True
            waiting = list(self._waiting)
            self._waiting.clear()
            for request in waiting:
                request.state = "done"
        for request in waiting:
            request.events.put(error)
        for group in self._groups:
            for row in group.rows:
                self._end(row.request, error)
            group.rows.clear()
        self._groups.clear()
        self._running = 0

    def _step(self) -> None:
        self._drop_cancelled()
        self._admit()
        for group in self._groups:
            if group.rows:
                self._decode(group)
        self._groups = [g for g in self._groups if g.rows]

    def _drop_cancelled(self) -> None:
        for group in self._groups:
            gone = [i for i, row in enumerate(group.rows) if row.request.abandoned or row.request.cancel.is_set()]
            for i in gone:
                row = group.rows[i]
                if not row.request.abandoned:
                    self._end(row.request, row.picker.cancel())
            self._remove(group, gone)

    def _admit(self) -> None:
        while self._running < self.max_parallel:
            with self._cond:
                if not self._waiting:
                    return
                request = self._waiting.popleft()
                request.state = "running"
            self._start(request)

    def _start(self, request: BatchRequest) -> None:
        runner = self._runner
        try:
            picker = runner.new_picker(request)
            if picker.end is not None:  # nothing to generate
                self._end(request, picker.end)
                return
            key = runner.group_key(request.adapter)
            logits, cache = runner.prefill(key, request.adapter, request.prompt_ids)
        except BaseException as exc:
            self._end(request, exc)
            return
        self.counters.prefills += 1
        if request.cancel.is_set():
            self._end(request, picker.cancel())
            return
        if not self._deliver(request, picker, logits):
            return
        row = _Row(request, picker, len(request.prompt_ids))
        group = None if isinstance(key, tuple) and key and key[0] == ALONE else self._group_for(key)
        if group is None:
            group = _Group(key)
            self._groups.append(group)
        if group.cache is None:
            group.cache, group.width = cache, _width(cache)
        else:
            group.cache, group.width = join_rows(self._torch, group.cache, group.width, cache, row.length)
        group.rows.append(row)
        self._running += 1
        self.counters.peak_running = max(self.counters.peak_running, self._running)

    def _group_for(self, key: Hashable) -> _Group | None:
        for group in self._groups:
            if group.key == key and 0 < len(group.rows) < ROWS_PER_PASS:
                return group
        return None

    def _decode(self, group: _Group) -> None:
        torch, rows = self._torch, group.rows
        input_ids = torch.tensor([[row.picker.last_id] for row in rows], device=self._device)
        layout = positions = None
        if not group.alone:
            positions = torch.tensor([[row.length] for row in rows], device=self._device)
            layout = RowLayout.build(torch, [group.width - row.length for row in rows], self._device)
        try:
            logits, group.cache = self._runner.decode(
                group.key, [row.request.adapter for row in rows], input_ids, positions, group.cache, layout
            )
        except BaseException as exc:
            for row in rows:
                self._end(row.request, exc)
            self._running -= len(rows)
            group.rows = []
            group.cache = None
            return
        counters = self.counters
        counters.decode_passes += 1
        counters.peak_batch = max(counters.peak_batch, len(rows))
        group.width += 1
        done: list[int] = []
        for i, row in enumerate(rows):
            row.length += 1
            if row.request.abandoned or not self._deliver(row.request, row.picker, logits[i : i + 1]):
                done.append(i)
        self._remove(group, done)

    def _deliver(self, request: BatchRequest, picker: TokenPicker, logits: Any) -> bool:
        """Pick the request's next token and send what it produced; False when the request is over."""
        items = picker.advance(logits)
        self.counters.tokens += sum(1 for item in items if not isinstance(item, GenerationEnd))
        for item in items:
            if isinstance(item, GenerationEnd):
                self._end(request, item)
            else:
                request.events.put(item)
        return not picker.finished

    def _end(self, request: BatchRequest, item: StreamItem | BaseException) -> None:
        request.state = "done"
        request.events.put(item)

    def _remove(self, group: _Group, gone: list[int]) -> None:
        if not gone:
            return
        self._running -= len(gone)
        kept = [i for i in range(len(group.rows)) if i not in set(gone)]
        group.rows = [group.rows[i] for i in kept]
        if not group.rows:
            group.cache, group.width = None, 0
            return
        if group.alone:
            return
        longest = max(row.length for row in group.rows)
        keep_rows(self._torch, group.cache, kept, group.width - longest)
        group.width = longest


#: Token ids of the load-time check (:func:`rows_keep_their_bits`): rows of different lengths, two of equal length
#: (they share an attention call), all below any vocabulary's size.
CHECK_PROMPTS: tuple[tuple[int, ...], ...] = (
    (17, 42, 99, 5, 301),
    (64, 12, 900, 33, 7, 250, 18, 4),
    (8, 88, 808, 80, 18, 180, 1800, 9),
    (23, 46, 92),
    (500, 1, 2, 3, 400, 5, 6, 7, 300, 9, 10),
    (15, 30, 45, 60, 75, 90),
)


def rows_keep_their_bits(
    torch: Any,
    runner: BatchRunner,
    key: Hashable,
    prompts: tuple[tuple[int, ...], ...] = CHECK_PROMPTS,
    device: Any = "cpu",
    steps: int = 4,
) -> str | None:
    """Whether this machine's kernels give each row of batched decode steps the same logits, bit for bit, as the
    row decoding alone (None), or why not. The guarantee that a batched request answers exactly as it would alone
    rests on that, and it depends on the CPU: bf16 kernels kept a row's bits on an Intel Xeon with AMX and did not
    on an AMD EPYC (avx512_bf16). ``steps`` decode steps of every prompt alone, then of all of them together (fed
    the same tokens); costs about two prefills and ``steps + 1`` decode passes per prompt, once per model."""

    def prefilled(ids: tuple[int, ...]) -> tuple[int, Any]:
        logits, cache = runner.prefill(key, None, list(ids))
        return int(logits[0].argmax()), cache

    alone: list[list[tuple[int, Any]]] = []  # per prompt: (token fed, logits) per step
    for ids in prompts:
        token, cache = prefilled(ids)
        trail = []
        for step in range(steps):
            layout = RowLayout.build(torch, [0], device)
            logits, cache = runner.decode(
                key,
                [None],
                torch.tensor([[token]], device=device),
                torch.tensor([[len(ids) + step]], device=device),
                cache,
                layout,
            )
            trail.append((token, logits[0]))
            token = int(logits[0].argmax())
        alone.append(trail)
    joined: Any = None
    width = 0
    for ids in prompts:
        _token, cache = prefilled(ids)
        if joined is None:
            joined, width = cache, _width(cache)
        else:
            joined, width = join_rows(torch, joined, width, cache, len(ids))
    differ: set[int] = set()
    for step in range(steps):
        logits, joined = runner.decode(
            key,
            [None] * len(prompts),
            torch.tensor([[trail[step][0]] for trail in alone], device=device),
            torch.tensor([[len(ids) + step] for ids in prompts], device=device),
            joined,
            RowLayout.build(torch, [width - (len(ids) + step) for ids in prompts], device),
        )
        width += 1
        differ |= {i for i, trail in enumerate(alone) if not torch.equal(logits[i], trail[step][1])}
    if differ:
        return (
            f"this machine's kernels give {len(differ)} of {len(prompts)} rows of batched decode steps other bits "
            "than alone (checked at load), so each request decodes alone and answers exactly as alone"
        )
    return None


def _width(cache: Any) -> int:
    layers = getattr(cache, "layers", None)
    if not layers or getattr(layers[0], "keys", None) is None:
        return 0
    return int(layers[0].keys.shape[-2])
