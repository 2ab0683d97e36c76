"""Safety-layer benchmark (`python bench/safety.py`): time the safety layer adds to one short generation.

One generation = ``check_input`` on a typical prompt, then the streaming ``OutputGuard`` fed a typical 64-token
reply token by token, ``flush()`` and ``finish()``. Compared with the same loop with filtering switched off
(``enabled=False``, what a generation pays when the user turns the filter off) and with no guard at all. The target
(issue 9) is at most 20 ms added on the CPU.

Variants: the default policy (configs/safety/default.yaml: PII mask on prompt and reply, word list mask, toxicity
flag, length cutoffs) with ``streaming.release_chars`` 32 / 64 / 128 (finer streaming costs more analyser calls),
and PII action ``flag`` (the analyser runs once per text, not per chunk). The reply contains one e-mail address so
masking really happens. Results: bench/results/safety.json. Timings on shared machines are noisy: the median of
many repeats is reported, with p90.

    python bench/safety.py [--repeats 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.safety import SafetyFilter, SafetyPolicyConfig, load_policy  # noqa: E402

PROMPT = "Can you draft a short, friendly note to my colleague saying the quarterly report is ready for review?"
REPLY = (
    "Of course! Here is a short note you can send:\n\n"
    "Hi Sam, I wanted to let you know that the quarterly report is now ready for your review. "
    "It covers sales, costs and the outlook for next year. If you have questions, write to "
    "reports@example.com and I will get back to you quickly. Thanks a lot, and have a great week!"
)
TOKENS = 64


def split_tokens(text: str, n: int) -> list[str]:
    """``text`` cut into exactly ``n`` token-like pieces (leading space kept, as BPE tokens do)."""
    words = re.findall(r"\s*\S+", text)
    pieces: list[str] = []
    for w in words:
        pieces.extend([w[i : i + 6] for i in range(0, len(w), 6)])
    while len(pieces) > n:  # merge neighbours until there are n pieces
        i = min(range(len(pieces) - 1), key=lambda k: len(pieces[k]) + len(pieces[k + 1]))
        pieces[i : i + 2] = [pieces[i] + pieces[i + 1]]
    return pieces


def one_generation(safety: SafetyFilter | None, tokens: list[str], enabled: bool) -> tuple[float, float, str]:
    """Wall and CPU milliseconds for one prompt check + streamed reply; the text shown."""
    t0, c0 = time.perf_counter(), time.process_time()
    if safety is None:
        shown = "".join(t for t in tokens)
        return (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000, shown
    safety.check_input(PROMPT, enabled=enabled)
    guard = safety.output_guard(enabled=enabled)
    out = []
    for tok in tokens:
        decision = guard.feed(tok)
        out.append(decision.emit)
        if decision.stop:
            break
    out.append(guard.flush().emit)
    guard.finish()
    return (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000, "".join(out)


def measure(safety: SafetyFilter | None, tokens: list[str], enabled: bool, repeats: int) -> dict[str, Any]:
    one_generation(safety, tokens, enabled)  # warm
    times, cpu = [], []
    shown = ""
    for _ in range(repeats):
        ms, cpu_ms, shown = one_generation(safety, tokens, enabled)
        times.append(ms)
        cpu.append(cpu_ms)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 3),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 3),
        "min_ms": round(times[0], 3),
        "cpu_median_ms": round(statistics.median(cpu), 3),
        "shown": shown,
    }


def variant(policy: SafetyPolicyConfig, **sections: dict[str, Any]) -> SafetyPolicyConfig:
    update = {name: getattr(policy, name).model_copy(update=values) for name, values in sections.items()}
    return policy.model_copy(update=update)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()

    base = load_policy()
    tokens = split_tokens(REPLY, TOKENS)
    assert len(tokens) == TOKENS, len(tokens)
    variants = {
        "default (release_chars=128)": base,
        "release_chars=64": variant(base, streaming={"release_chars": 64}),
        "release_chars=32": variant(base, streaming={"release_chars": 32}),
        "pii action flag": variant(base, pii={"action": "flag"}),
        "pii mask prompt only": variant(base, pii={"apply_to": ["input"]}),
    }
    t0 = time.perf_counter()
    SafetyFilter(base).warm_up()
    warm_s = time.perf_counter() - t0

    none = measure(None, tokens, True, args.repeats)
    rows: dict[str, Any] = {"no guard": none}
    rows["filter off (enabled=False)"] = measure(SafetyFilter(base), tokens, False, args.repeats)
    for name, policy in variants.items():
        safety = SafetyFilter(policy)
        safety.warm_up()
        rows[name] = measure(safety, tokens, True, args.repeats)
    for row in rows.values():
        row["added_ms"] = round(row["median_ms"] - none["median_ms"], 3)
        row["added_cpu_ms"] = round(row["cpu_median_ms"] - none["cpu_median_ms"], 3)
        row["within_20ms"] = row["added_ms"] <= 20.0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    print(f"safety layer over one generation: prompt {len(PROMPT)} chars, reply {TOKENS} tokens / {len(REPLY)} chars")
    print(f"first warm-up (analyzer + scorer load): {warm_s:.1f} s")
    print(f"load average (1 min): {load} on {os.cpu_count()} CPUs (wall times grow with it; CPU times less)")
    print(f"{'variant':32} {'wall ms':>8} {'p90 ms':>8} {'min ms':>8} {'cpu ms':>8}  added wall ≤ 20 ms?")
    for name, row in rows.items():
        mark = "ok" if row["within_20ms"] else "OVER"
        print(
            f"{name:32} {row['median_ms']:>8.2f} {row['p90_ms']:>8.2f} {row['min_ms']:>8.2f} "
            f"{row['cpu_median_ms']:>8.2f}  {mark}"
        )
    print("shown (default):", json.dumps(rows["default (release_chars=128)"]["shown"])[:200])

    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "bench": "safety",
        "prompt_chars": len(PROMPT),
        "reply_tokens": TOKENS,
        "reply_chars": len(REPLY),
        "repeats": args.repeats,
        "warm_up_s": round(warm_s, 2),
        "load_average_1min": load,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": {name: {k: v for k, v in row.items() if k != "shown"} for name, row in rows.items()},
        "target_added_ms": 20.0,
    }
    (out_dir / "safety.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out_dir / 'safety.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
