"""The load-time check of batched decoding (studio.inference.batching.rows_keep_their_bits): with a runner whose
rows do not depend on their batch it passes; with one whose kernels change a row's bits in a batch (as an AMD EPYC's
bf16 kernels did) it says so, and the engine then decodes each request alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from studio.inference.batching import CHECK_PROMPTS, rows_keep_their_bits


@dataclass
class _Layer:
    keys: Any
    values: Any


@dataclass
class _Cache:
    layers: list[_Layer] = field(default_factory=list)


class _Runner:
    """Logits of a row from its token, position and own cached keys only; ``drift`` adds what a batch of more than
    one row changes (the unstable kernel)."""

    def __init__(self, drift: float = 0.0) -> None:
        self.drift = drift

    def prefill(self, key: Any, adapter: Any, prompt_ids: list[int]) -> tuple[Any, Any]:
        keys = torch.tensor(prompt_ids, dtype=torch.float32).view(1, 1, -1, 1)
        return self._logits(keys, 1), _Cache([_Layer(keys, keys.clone())])

    def decode(self, key: Any, adapters: Any, input_ids: Any, position_ids: Any, cache: Any, layout: Any) -> Any:
        layer = cache.layers[0]
        grown = torch.cat([layer.keys, input_ids.float().view(-1, 1, 1, 1)], dim=2)
        layer.keys, layer.values = grown, grown.clone()
        rows = []
        for i, (start, _rows) in enumerate(self._starts(layout, input_ids.shape[0])):
            own = grown[i : i + 1, :, start:]
            rows.append(self._logits(own, input_ids.shape[0])[0] + position_ids[i, 0].float())
        return torch.stack(rows), cache

    @staticmethod
    def _starts(layout: Any, n: int) -> list[tuple[int, int]]:
        starts = [0] * n
        for start, rows in layout.parts:
            index = range(n)[rows] if isinstance(rows, slice) else rows.tolist()
            for r in index:
                starts[r] = start
        return [(s, 1) for s in starts]

    def _logits(self, own: Any, batch: int) -> Any:
        base = torch.stack([(own.sum() * (k + 1) + own.shape[2]) % 97 for k in range(16)]).view(1, 16)
        return base + (self.drift if batch > 1 else 0.0)


def test_rows_that_keep_their_bits_pass_and_drifting_ones_are_named() -> None:
    assert rows_keep_their_bits(torch, _Runner(), ("group",), CHECK_PROMPTS) is None
    why = rows_keep_their_bits(torch, _Runner(drift=1e-3), ("group",), CHECK_PROMPTS)
    assert why is not None and f"of {len(CHECK_PROMPTS)} rows" in why and "decodes alone" in why
