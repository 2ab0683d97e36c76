"""The transformers engine's batched decoding against plain ``model.generate`` (not a test; rough on a shared CPU).

Same model, dtype, prompts, sampling (temperature 0.8, top_p 0.9, top_k 50) and 64 new tokens; ``generate`` gets a
left-padded batch of N with ``min_new_tokens`` = ``max_new_tokens``, the engine N concurrent streams (threads, as
the manager runs them). Prints aggregate generated tokens/s for each and their ratio (best of ``--repeat``
alternating runs); with ``--dtype`` both use it, with ``--greedy`` both decode greedily.

    python bench/batching.py [--model DIR] [--streams 1,8] [--tokens 64] [--dtype bfloat16] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = [
    "Write a long story about a dragon who learns to bake bread.",
    "Describe, in detail, how a steam engine works.",
    "Tell me everything you know about the history of Rome.",
    "Write a long letter to a friend about your summer holidays.",
    "Explain in detail how to grow tomatoes in a garden.",
    "Write a long poem about the sea and the wind.",
    "Describe a busy market day in a medieval town.",
    "Explain the water cycle to a curious ten-year-old, at length.",
]


def bundled_model_dir() -> Path:
    """The converted bundled model (converted once into $STUDIO_HOME/models on first use)."""
    from studio.models.convert import prepare_model
    from studio.models.registry import ModelRegistry
    from studio.settings import Settings

    settings = Settings()
    settings.ensure_dirs()
    return Path(prepare_model(ModelRegistry(settings).resolve("default"), settings.models_dir))


SAMPLING = {"temperature": 0.8, "top_p": 0.9, "top_k": 50}


def engine_run(engine: object, questions: list[str], tokens: int) -> tuple[int, float]:
    """N concurrent chats on ``engine`` (one thread each); (generated tokens, wall seconds)."""
    from studio.inference.base import ChatMessage, TokenEvent
    from studio.inference.params import make_sampling_params

    prompts = [[ChatMessage("user", q)] for q in questions]
    counts = [0] * len(prompts)
    start = threading.Barrier(len(prompts) + 1)

    def one(i: int) -> None:
        params = make_sampling_params(**SAMPLING, max_tokens=tokens, seed=i, stop=[])
        start.wait()
        for item in engine.stream_chat(prompts[i], params, threading.Event()):  # type: ignore[attr-defined]
            if isinstance(item, TokenEvent):
                counts[i] += 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - t0


def generate_run(model: object, tokenizer: object, prompts: list[list[int]], tokens: int) -> tuple[int, float]:
    """``model.generate`` on a left-padded batch of ``prompts``; (generated tokens, wall seconds)."""
    import torch

    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # type: ignore[attr-defined]
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(  # type: ignore[attr-defined]
            input_ids=ids,
            attention_mask=mask,
            **({"do_sample": False} if SAMPLING["temperature"] == 0 else {"do_sample": True, **SAMPLING}),
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            pad_token_id=pad,
        )
    elapsed = time.perf_counter() - t0
    return int(out[:, width:].numel()), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--streams", default="1,8")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, alternating; the best one counts")
    parser.add_argument("--greedy", action="store_true")
    args = parser.parse_args()
    if args.greedy:
        SAMPLING.update(temperature=0.0, top_p=1.0, top_k=0)

    from studio.inference.transformers_backend import TransformersEngine

    path = args.model or bundled_model_dir()
    streams = [int(s) for s in args.streams.split(",")]
    engine = TransformersEngine("bench", path, dtype=args.dtype, threads=args.threads, max_parallel=max(streams))
    from studio.inference.base import ChatMessage

    prompts = [engine.chat_token_ids([ChatMessage("user", q)]) for q in QUESTIONS]
    model, tokenizer = engine.model, engine.tokenizer
    print(f"model {path.name}, dtype {engine.info.dtype}, batching {engine.info.extra['batching']}")
    engine_run(engine, QUESTIONS[:1], 8)  # warm-up
    generate_run(model, tokenizer, prompts[:1], 8)
    for n in streams:
        batch = [prompts[i % len(prompts)] for i in range(n)]
        e_rate = g_rate = 0.0
        for _ in range(args.repeat):
            before = engine.batch_counters
            e_tok, e_s = engine_run(engine, [QUESTIONS[i % len(QUESTIONS)] for i in range(n)], args.tokens)
            passes = engine.batch_counters.decode_passes - before.decode_passes
            g_tok, g_s = generate_run(model, tokenizer, batch, args.tokens)
            e_rate, g_rate = max(e_rate, e_tok / e_s), max(g_rate, g_tok / g_s)
        print(
            f"{n:>3} streams: engine {e_rate:7.1f} tok/s ({e_tok} tokens, {passes} decode passes) | "
            f"generate {g_rate:7.1f} tok/s ({g_tok} tokens) | ratio {e_rate / g_rate:.2f}"
        )
    engine.unload()


if __name__ == "__main__":
    main()
