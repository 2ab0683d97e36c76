"""Attention maps of a reply: one forward pass over prompt + reply with eager attention, then a plotly heat
map for a chosen layer and head (or the average over heads).

Only the transformers backend can do this: the model must be a local ``PreTrainedModel``. SDPA and flash
kernels never materialise the attention matrix, so the pass switches the model to the ``eager``
implementation and switches it back afterwards. That mutates the shared model: callers must hold the
engine's generation lock while :func:`compute_attention` runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from studio.errors import GenerationError, ValidationError
from studio.playground.token_view import visible_whitespace

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)

# All layers' [heads, seq, seq] matrices are held at once; past this the user should shorten the chat.
DEFAULT_MEMORY_LIMIT = 2 * 1024**3


@dataclass
class AttentionMaps:
    """Attention weights of one sequence.

    ``weights[layer, head, query, key]`` is how much the token at position ``query`` attends to the one at
    ``key`` (rows sum to 1 over all keys the model saw; when ``truncated`` > 0 the first ``truncated``
    positions were cut from the view, so rows of the kept window may sum to less). ``prompt_len`` counts the
    prompt tokens inside the kept window; the rest is the reply.
    """

    tokens: list[str]
    prompt_len: int
    weights: npt.NDArray[np.float32]
    truncated: int = 0
    token_ids: list[int] = field(default_factory=list)

    @property
    def layers(self) -> int:
        return int(self.weights.shape[0])

    @property
    def heads(self) -> int:
        return int(self.weights.shape[1])

    @property
    def seq_len(self) -> int:
        return int(self.weights.shape[2])


def _token_labels(tokenizer: Any, token_ids: Sequence[int]) -> list[str]:
    """Readable text of each token: decoded on its own (so byte-level 'Ġ' becomes a visible ␣ marker),
    falling back to the vocabulary entry when the token is only part of a UTF-8 character."""
    raw = tokenizer.convert_ids_to_tokens(list(token_ids))
    labels: list[str] = []
    for tid, piece in zip(token_ids, raw, strict=True):
        text = str(tokenizer.decode([int(tid)]))
        if "\ufffd" in text and piece is not None:
            text = str(piece)
        labels.append(visible_whitespace(text))
    return labels


def _attn_implementation(model: Any) -> Any:
    return getattr(model.config, "_attn_implementation", None)


def _set_attn_implementation(model: Any, implementation: Any) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(implementation)
    else:  # transformers < 4.48 read the config attribute at call time
        model.config._attn_implementation = implementation


def compute_attention(
    model: Any,
    tokenizer: Any,
    token_ids: Sequence[int],
    *,
    prompt_len: int = 0,
    max_tokens: int = 256,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
) -> AttentionMaps:
    """Attention weights of every layer and head for ``token_ids`` (prompt followed by reply), from one
    forward pass of ``model`` (a transformers causal LM) with eager attention.

    The model's attention implementation is switched to ``eager`` for the pass and restored afterwards,
    even on error; the caller must hold the engine's lock. The whole sequence goes through the model (so
    attention is what the model really computed), but only the last ``max_tokens`` positions are kept;
    ``AttentionMaps.truncated`` says how many were cut. ``prompt_len`` is how many of ``token_ids`` are
    the prompt. Raises :class:`ValidationError` for an empty sequence, a bad ``max_tokens`` or a sequence
    whose maps would exceed ``memory_limit`` bytes, and :class:`GenerationError` when the model returns
    no attention weights.
    """
    from studio.inference.torch_setup import import_torch

    ids = [int(i) for i in token_ids]
    if not ids:
        raise ValidationError("no tokens to compute attention for; generate a reply first", param="token_ids")
    if max_tokens < 1:
        raise ValidationError(f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
    if not 0 <= prompt_len <= len(ids):
        raise ValidationError(f"prompt_len must be between 0 and {len(ids)}, got {prompt_len}", param="prompt_len")
    n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    n_heads = int(getattr(model.config, "num_attention_heads", 0) or 0)
    param = next(model.parameters())
    needed = n_layers * n_heads * len(ids) ** 2 * param.element_size()
    if needed > memory_limit:
        raise ValidationError(
            f"attention maps for {len(ids)} tokens need {needed / 1024**3:.1f} GiB "
            f"(limit {memory_limit / 1024**3:.1f} GiB); start a shorter conversation",
            param="token_ids",
        )

    torch = import_torch()
    previous = _attn_implementation(model)
    try:
        if previous != "eager":
            _set_attn_implementation(model, "eager")
        if _attn_implementation(model) != "eager":
            raise GenerationError(f"{type(model).__name__} cannot switch to eager attention; no maps available")
        with torch.inference_mode():
            input_ids = torch.tensor([ids], device=param.device)
            out = model(input_ids=input_ids, output_attentions=True, use_cache=False)
        attentions = out.attentions
        if not attentions or any(a is None for a in attentions):
            raise GenerationError(f"{type(model).__name__} returned no attention weights")
        start = max(0, len(ids) - max_tokens)
        # Slice and convert layer by layer so only one full-size float32 copy exists at a time.
        layers = [a[0, :, start:, start:].float().cpu().numpy() for a in attentions]
        del out, attentions
    finally:
        if previous is not None and _attn_implementation(model) != previous:
            _set_attn_implementation(model, previous)
    weights = np.ascontiguousarray(np.stack(layers), dtype=np.float32)
    kept = ids[start:]
    return AttentionMaps(
        tokens=_token_labels(tokenizer, kept),
        prompt_len=max(0, prompt_len - start),
        weights=weights,
        truncated=start,
        token_ids=kept,
    )


def attention_summary(maps: AttentionMaps) -> dict[str, int]:
    """Sizes for a UI to set its sliders: layers, heads, seq_len, prompt_len, truncated."""
    return {
        "layers": maps.layers,
        "heads": maps.heads,
        "seq_len": maps.seq_len,
        "prompt_len": maps.prompt_len,
        "truncated": maps.truncated,
    }


def attention_matrix(maps: AttentionMaps, layer: int, head: int | None) -> npt.NDArray[np.float32]:
    """The [query, key] matrix for ``layer`` and ``head`` (``None`` = mean over heads). Raises
    :class:`ValidationError` naming ``layer`` or ``head`` and the allowed range when out of range."""
    if not 0 <= layer < maps.layers:
        raise ValidationError(f"layer must be between 0 and {maps.layers - 1}, got {layer}", param="layer")
    if head is None:
        mean: npt.NDArray[np.float32] = maps.weights[layer].mean(axis=0, dtype=np.float32)
        return mean
    if not 0 <= head < maps.heads:
        raise ValidationError(f"head must be between 0 and {maps.heads - 1} (or the average), got {head}", param="head")
    single: npt.NDArray[np.float32] = maps.weights[layer, head]
    return single


#: The weakest attention weight the colour scale tells apart: a query spreads its weight over every earlier token,
#: so most weights are a few hundredths while one or two tokens (often the first) take most of it. On a linear
#: 0..1 scale everything but those few was the darkest colour; on a log scale from here to 1 the spread shows.
COLOUR_FLOOR = 1e-3
#: Tick labels stay at a readable size; with too many tokens for the room plotly leaves some out (hover names all).
TICK_FONT = 11
ROW_PX = 16  # height per query row while every row keeps its label


def default_layer(maps: AttentionMaps) -> int:
    """The layer shown first: the middle one. The first layer mostly mixes neighbouring positions evenly, the last
    ones send most weight to a few tokens; the middle layers are where the pattern between words shows."""
    return maps.layers // 2


def attention_figure(maps: AttentionMaps, layer: int, head: int | None) -> go.Figure:
    """A plotly heat map of attention for ``layer`` and ``head`` (``None`` = average over heads): keys
    (attended-to tokens) on x, queries on y, lines where the prompt ends and the reply begins.

    Colours follow log10 of the weight from :data:`COLOUR_FLOOR` to 1 (``z``; the colour bar is labelled in
    weights), so small weights differ as much as large ones; ``customdata`` holds the weights themselves, which the
    hover shows. Axis labels are ``"<position> <token>"`` so repeated tokens stay apart."""
    import plotly.graph_objects as go

    weights = attention_matrix(maps, layer, head)
    shade = np.log10(np.clip(weights, COLOUR_FLOOR, 1.0))
    labels = [f"{i + maps.truncated} {tok}" for i, tok in enumerate(maps.tokens)]
    which = "average of all heads" if head is None else f"head {head}"
    title = f"Attention · layer {layer} of {maps.layers - 1} · {which}"
    if maps.truncated:
        title += f" · last {maps.seq_len} tokens ({maps.truncated} earlier not shown)"
    n = maps.seq_len
    if 0 < maps.prompt_len < n:
        title += "<br><sub>dashed lines: end of prompt / start of reply</sub>"
    low = int(np.log10(COLOUR_FLOOR))
    fig = go.Figure(
        go.Heatmap(
            z=shade,
            customdata=weights,
            x=labels,
            y=labels,
            zmin=float(low),
            zmax=0.0,
            colorscale="Viridis",
            colorbar={
                "title": {"text": "weight"},
                "tickvals": list(range(low, 1)),
                "ticktext": [f"{10.0**e:g}" for e in range(low, 1)],
            },
            hovertemplate="query %{y}<br>key %{x}<br>weight %{customdata:.4f}<extra></extra>",
        )
    )
    # Every query row keeps its label while the figure can grow; the key axis has the page's width only, so plotly
    # picks how many key labels fit. The font never shrinks below TICK_FONT.
    every_row: dict[str, Any] = {"tickmode": "linear", "dtick": 1} if n <= 96 else {}
    size = max(480, min(1800, ROW_PX * n + 220))
    fig.update_layout(
        title={"text": title},
        height=size,
        margin={"l": 140, "r": 40, "t": 60, "b": 140},
        xaxis={
            "title": {"text": "key (attended to)"},
            "type": "category",
            "tickangle": -90,  # upright boxes: plotly spaces the labels by their height, none overlaps
            "tickfont": {"size": TICK_FONT},
        },
        yaxis={
            "title": {"text": "query"},
            "type": "category",
            "autorange": "reversed",
            "tickfont": {"size": TICK_FONT},
            **every_row,
        },
    )
    if 0 < maps.prompt_len < n:
        edge = maps.prompt_len - 0.5
        line = {"color": "white", "width": 2, "dash": "dash"}
        fig.add_shape(type="line", x0=edge, x1=edge, y0=-0.5, y1=n - 0.5, line=line)
        fig.add_shape(type="line", x0=-0.5, x1=n - 0.5, y0=edge, y1=edge, line=line)
    return fig
