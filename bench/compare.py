"""Side-by-side benchmark (`make bench-compare`): two Compare sides on one transformers model.

The bundled SmolLM2-135M-Instruct answers one prompt twice, greedy, a fixed number of tokens (no stop), through
the studio's engine manager, in three ways, in the same process:

- ``sequential``: side A to its end, then side B (how two sides on one model ran before decode steps were
  interleaved);
- ``interleaved, same weights``: both sides on the base model at once — the cost of taking turns alone;
- ``interleaved, base vs adapter``: the base against base + a LoRA adapter (r=8 on q/v) at once — taking turns
  plus switching the adapter in before every step.

For each: wall time for both replies, time to the second side's first token (what the user waits before both
sides stream), tokens/s summed over both sides; ratios against ``sequential`` (wall time: the price of seeing
both at once; second TTFT: how much sooner the second side starts). Rounds alternate the three ways so a noisy
neighbour hits all of them. Results: bench/results/compare.json and bench/results/compare.md.

    python bench/compare.py [--tokens 64] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.compare.stream import ContenderSpec, start_sides  # noqa: E402
from studio.context import AppContext  # noqa: E402
from studio.inference.base import ChatMessage  # noqa: E402
from studio.inference.manager import GenerationHandle  # noqa: E402
from studio.inference.params import make_sampling_params  # noqa: E402
from studio.settings import BUNDLED_MODEL_ID, Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PROMPT = [ChatMessage("user", "Write a long story about a dragon who learns to bake bread.")]
WAYS = ("sequential", "interleaved, same weights", "interleaved, base vs adapter")


def make_adapter(base_dir: Path, out_dir: Path) -> None:
    """A LoRA adapter with random (non-zero) B matrices: it changes every reply, as a trained one would."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(out_dir))


def figures(handles: list[GenerationHandle], started: float) -> dict[str, float]:
    firsts = [h.result.tokens[0].time for h in handles]
    lasts = [h.result.tokens[-1].time for h in handles]
    tokens = sum(len(h.result.tokens) for h in handles)
    wall = max(lasts) - started
    return {"wall_s": wall, "second_ttft_s": max(firsts) - started, "tokens": tokens, "tok_s": tokens / wall}


def run_way(ctx: AppContext, way: str, tokens: int) -> dict[str, float]:
    params = make_sampling_params(temperature=0, max_tokens=tokens, stop=[])
    specs = [ContenderSpec("default"), ContenderSpec("default", "bench-lora" if way.endswith("adapter") else None)]
    started = time.perf_counter()
    if way == "sequential":
        handles = []
        for spec in specs:
            handle = ctx.engines.start_chat("default", PROMPT, params, adapter=spec.adapter or "base")
            handle.wait()
            handles.append(handle)
    else:
        started_handles = start_sides(ctx.engines, specs, [PROMPT] * 2, params)
        handles = [h for h in started_handles if isinstance(h, GenerationHandle)]
        assert len(handles) == 2, started_handles
        for h in handles:
            h.wait()
    assert all(len(h.result.tokens) == tokens for h in handles), [len(h.result.tokens) for h in handles]
    return figures(handles, started)


def markdown(rows: dict[str, dict[str, float]], meta: dict[str, Any]) -> str:
    base = rows["sequential"]
    lines = [
        "# Compare sides on one transformers model",
        "",
        f"{meta['machine']} · {meta['cpus']} CPUs · torch threads {meta['threads']} · {meta['tokens']} tokens per side "
        f"· median of {meta['rounds']} rounds · {meta['date']}",
        "",
        "| way | wall s (both) | vs sequential | 2nd side TTFT s | vs sequential | tok/s (both) |",
        "|---|---|---|---|---|---|",
    ]
    for way, r in rows.items():
        lines.append(
            f"| {way} | {r['wall_s']:.2f} | {r['wall_s'] / base['wall_s']:.2f} | {r['second_ttft_s']:.2f} | "
            f"{r['second_ttft_s'] / base['second_ttft_s']:.2f} | {r['tok_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    real = Settings()
    real.models_dir.mkdir(parents=True, exist_ok=True)  # the bundled model is converted there once, as `make run` does
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        home = Path(tmp)
        (home / "models").symlink_to(real.models_dir, target_is_directory=True)
        settings = Settings(home=home, hf_cache=real.hf_cache_dir, threads=args.threads)
        ctx = AppContext.create(settings)
        try:
            engine = ctx.engines.load("default")
            make_adapter(engine.info.path, home / "adapters" / "bench-lora")
            ctx.engines.load_adapter("default", "bench-lora")
            ctx.engines.swap_adapter("default", "base")
            run_way(ctx, WAYS[0], 8)  # warm-up
            samples: dict[str, list[dict[str, float]]] = {w: [] for w in WAYS}
            for r in range(args.rounds):
                for way in WAYS:
                    samples[way].append(run_way(ctx, way, args.tokens))
                    print(f"round {r + 1} {way}: {samples[way][-1]}", flush=True)
        finally:
            ctx.close()
    rows = {w: {k: statistics.median(s[k] for s in samples[w]) for k in samples[w][0]} for w in WAYS}
    import torch

    meta = {
        "model": BUNDLED_MODEL_ID,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "tokens": args.tokens,
        "rounds": args.rounds,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "loadavg": os.getloadavg(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compare.json").write_text(json.dumps({"meta": meta, "rows": rows, "samples": samples}, indent=2))
    text = markdown(rows, meta)
    (RESULTS / "compare.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
