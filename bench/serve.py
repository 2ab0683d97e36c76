"""Serving benchmark (`make bench-serve`): the bundled model through the studio's own OpenAI endpoint and
directly on each raw engine, in the same run, at 1, 8 and 32 concurrent streams of 64 tokens.

Reports generated tokens/s (aggregate), p50/p95 time to first token, and the ratio studio/raw per engine and
concurrency. Results go to bench/results/serve.json and bench/results/serve.md. Not a test: timings on shared
machines are noisy, so only ratios taken in the same run mean much.

Routes (each an alias in a private STUDIO_HOME that shares the converted models of the real one):
- llamacpp: the Q4_1 GGUF on llama.cpp. Raw = llama_cpp.Llama in this process (it serves one stream at a
  time, so N streams queue up).
- vllm: vLLM's CPU build (or CUDA). Raw = a vLLM OpenAI server started with the same command the studio uses,
  called directly; studio = the studio's /v1 in front of its own vLLM process.
- transformers: the studio's own decode loop. Raw = the TransformersEngine in this process.

    python bench/serve.py [--engines llamacpp,vllm,transformers] [--concurrency 1,8,32] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.models.convert import prepare_model  # noqa: E402
from studio.models.registry import ModelRegistry, bundled_gguf  # noqa: E402
from studio.settings import BUNDLED_MODEL_ID, Settings  # noqa: E402

PROMPTS = [
    "Tell me a story about a lighthouse keeper.",
    "Explain how rain forms, step by step.",
    "Describe a walk through a busy market.",
    "Write a letter to a friend about a trip to the mountains.",
    "Explain what a computer does when you turn it on.",
    "Describe the life of a honeybee.",
    "Tell me about the history of bicycles.",
    "Describe your ideal library.",
]
DEFAULT_CONCURRENCY = {"llamacpp": [1, 8], "vllm": [1, 8, 32], "transformers": [1, 8]}


@dataclass
class Run:
    engine: str
    route: str  # "studio" | "raw"
    concurrency: int
    tokens: int
    seconds: float
    tokens_per_s: float
    ttft_p50_s: float
    ttft_p95_s: float


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(engine: str, route: str, n: int, ttfts: list[float], tokens: int, seconds: float) -> Run:
    return Run(
        engine, route, n, tokens, round(seconds, 3), round(tokens / seconds, 1), _pct(ttfts, 0.5), _pct(ttfts, 0.95)
    )


# -- OpenAI-compatible HTTP route (the studio's /v1, or a raw vLLM server) -----------------------------------
async def _one_stream(client: httpx.AsyncClient, url: str, model: str, prompt: str, tokens: int) -> tuple[float, int]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0.8,
        "seed": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft = None
    completion = 0
    async with client.stream("POST", url, json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if ttft is None and any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                ttft = time.perf_counter() - t0
            if chunk.get("usage"):
                completion = int(chunk["usage"]["completion_tokens"])
    return (ttft if ttft is not None else time.perf_counter() - t0), completion


async def _http_round(base_url: str, model: str, n: int, tokens: int) -> tuple[list[float], int, float]:
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(900), limits=limits) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *[
                _one_stream(client, f"{base_url}/chat/completions", model, PROMPTS[i % len(PROMPTS)], tokens)
                for i in range(n)
            ]
        )
        seconds = time.perf_counter() - t0
    return [r[0] for r in results], sum(r[1] for r in results), seconds


def http_run(engine: str, route: str, base_url: str, model: str, n: int, tokens: int) -> Run:
    ttfts, total, seconds = asyncio.run(_http_round(base_url, model, n, tokens))
    return _summary(engine, route, n, ttfts, total, seconds)


# -- in-process raw engines: N threads share one engine that serves one stream at a time ---------------------
def _timed(i: int, lock: threading.Lock, generate: Any, ttfts: list[float], counts: list[int], tokens: int) -> None:
    """One stream on an engine that serves one stream at a time: its TTFT includes the wait for its turn."""
    t0 = time.perf_counter()
    with lock:
        queued = time.perf_counter() - t0
        ttft, count = generate(PROMPTS[i % len(PROMPTS)], tokens)
    ttfts.append(queued + ttft)
    counts.append(count)


def llamacpp_generate(gguf: Path, threads: int | None) -> Any:
    import llama_cpp

    # the same thread count the studio gives llama.cpp (llama-cpp-python's default unless --threads)
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=2048, n_threads=threads, verbose=False)

    def generate(prompt: str, tokens: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        ttft = None
        count = 0
        for chunk in llm.create_chat_completion(
            [{"role": "user", "content": prompt}], max_tokens=tokens, temperature=0.8, seed=1, stream=True
        ):
            if chunk["choices"][0]["delta"].get("content"):
                count += 1
                ttft = ttft if ttft is not None else time.perf_counter() - t0
        return (ttft or time.perf_counter() - t0), count

    return generate, llm.close


def transformers_generate(path: Path, threads: int | None) -> Any:
    from studio.inference.base import ChatMessage, TokenEvent
    from studio.inference.params import make_sampling_params
    from studio.inference.torch_setup import import_torch
    from studio.inference.transformers_backend import TransformersEngine

    import_torch(threads)
    engine = TransformersEngine(BUNDLED_MODEL_ID, path, dtype="auto", threads=threads)

    def generate(prompt: str, tokens: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        ttft = None
        count = 0
        params = make_sampling_params(temperature=0.8, seed=1, max_tokens=tokens)
        for item in engine.stream_chat([ChatMessage("user", prompt)], params, threading.Event()):
            if isinstance(item, TokenEvent):
                count += 1
                ttft = ttft if ttft is not None else time.perf_counter() - t0
        return (ttft or time.perf_counter() - t0), count

    return generate, engine.unload


# -- the studio server ---------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_studio(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_START_WORKER": "0"}
    log = open(home / "studio.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio", "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the studio did not start; see {home / 'studio.log'}")


def studio_load(url: str, alias: str) -> dict[str, Any]:
    resp = httpx.post(f"{url}/api/inference/load", json={"model": alias}, timeout=900)
    resp.raise_for_status()
    return dict(resp.json()["loaded"])


def studio_unload(url: str) -> None:
    loaded = httpx.get(f"{url}/api/inference/models/loaded", timeout=30).json()
    for m in loaded.get("models", loaded if isinstance(loaded, list) else []):
        httpx.post(f"{url}/api/inference/models/{m['model']}/unload", timeout=120)


def write_aliases(home: Path, threads: int | None, max_n: int) -> None:
    gguf = bundled_gguf()
    folder = home / "aliases"
    folder.mkdir(parents=True, exist_ok=True)
    common = {"n_threads": threads} if threads else {}
    aliases = {
        "bench-llamacpp": {"filename": gguf.name if gguf else None, "context_params": {"engine": "llamacpp", **common}},
        "bench-vllm": {"context_params": {"engine": "vllm", "n_parallel": max_n, "n_ctx": 2048, **common}},
        "bench-transformers": {"context_params": {"engine": "transformers", **common}},
    }
    for name, body in aliases.items():
        data = {"alias": name, "repo": BUNDLED_MODEL_ID, **{k: v for k, v in body.items() if v is not None}}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")


def bench_engine(
    engine: str, url: str, concurrency: list[int], tokens: int, threads: int | None, model_dir: Path
) -> list[Run]:
    runs: list[Run] = []
    alias = f"bench-{engine}"
    print(f"[{engine}] loading in the studio…", flush=True)
    studio_load(url, alias)
    http_run(engine, "studio", f"{url}/v1", alias, 1, 8)  # warm-up
    for n in concurrency:
        runs.append(http_run(engine, "studio", f"{url}/v1", alias, n, tokens))
        print(f"  studio n={n}: {runs[-1].tokens_per_s} tok/s", flush=True)
    studio_unload(url)

    print(f"[{engine}] raw engine…", flush=True)
    if engine == "vllm":
        from studio.inference.vllm_backend import VllmServer, server_command, server_env

        port = _free_port()
        cmd = server_command(model_dir, "raw", port, max_model_len=2048, max_num_seqs=max(concurrency))
        server = VllmServer(cmd, server_env(threads), port, Path(tempfile.gettempdir()) / f"bench-vllm-{port}.log")
        try:
            server.wait_ready(900)
            http_run(engine, "raw", server.base_url, "raw", 1, 8)
            for n in concurrency:
                runs.append(http_run(engine, "raw", server.base_url, "raw", n, tokens))
                print(f"  raw n={n}: {runs[-1].tokens_per_s} tok/s", flush=True)
        finally:
            server.stop()
        return runs
    gguf = bundled_gguf()
    generate, close = (
        llamacpp_generate(gguf, threads) if engine == "llamacpp" and gguf else transformers_generate(model_dir, threads)
    )
    try:
        generate(PROMPTS[0], 8)  # warm-up
        for n in concurrency:
            runs.append(_threaded(engine, generate, n, tokens))
            print(f"  raw n={n}: {runs[-1].tokens_per_s} tok/s", flush=True)
    finally:
        close()
    return runs


def _threaded(engine: str, generate: Any, n: int, tokens: int) -> Run:
    lock = threading.Lock()
    ttfts: list[float] = []
    counts: list[int] = []
    threads = [threading.Thread(target=_timed, args=(i, lock, generate, ttfts, counts, tokens)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _summary(engine, "raw", n, ttfts, sum(counts), time.perf_counter() - t0)


def markdown(runs: list[Run], meta: dict[str, Any]) -> str:
    lines = [
        "# Serving benchmark (bundled SmolLM2-135M-Instruct)",
        "",
        f"{meta['when']} · {meta['machine']} · {meta['tokens']} tokens per stream · threads {meta['threads']}",
        "",
        "| engine | streams | studio tok/s | raw tok/s | studio/raw "
        "| studio TTFT p50 / p95 (s) | raw TTFT p50 / p95 (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    by = {(r.engine, r.route, r.concurrency): r for r in runs}
    for engine, _route, n in sorted({(r.engine, "", r.concurrency) for r in runs}):
        s, w = by.get((engine, "studio", n)), by.get((engine, "raw", n))
        ratio = f"{s.tokens_per_s / w.tokens_per_s:.2f}" if s and w and w.tokens_per_s else "-"
        fmt = lambda r: f"{r.ttft_p50_s:.2f} / {r.ttft_p95_s:.2f}" if r else "-"  # noqa: E731
        studio_tps = s.tokens_per_s if s else "-"
        raw_tps = w.tokens_per_s if w else "-"
        lines.append(f"| {engine} | {n} | {studio_tps} | {raw_tps} | {ratio} | {fmt(s)} | {fmt(w)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="llamacpp,vllm,transformers")
    ap.add_argument("--concurrency", default="", help="e.g. 1,8,32 for every engine (default: per engine)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    real = Settings()
    model_dir = prepare_model(ModelRegistry(real).resolve("default"), real.models_dir)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        home = Path(tmp)
        (home / "models").symlink_to(real.models_dir, target_is_directory=True)
        levels = {
            e: ([int(x) for x in args.concurrency.split(",")] if args.concurrency else DEFAULT_CONCURRENCY[e])
            for e in DEFAULT_CONCURRENCY
        }
        write_aliases(home, args.threads, max(max(v) for v in levels.values()))
        proc, url = start_studio(home)
        try:
            for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
                try:
                    runs += bench_engine(engine, url, levels[engine], args.tokens, args.threads, model_dir)
                except Exception as exc:  # one engine failing (e.g. not installed) must not lose the others
                    print(f"[{engine}] skipped: {exc}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "tokens": args.tokens,
        "threads": args.threads or "default",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.json").write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in runs]}, indent=2) + "\n")
    (args.out / "serve.md").write_text(markdown(runs, meta))
    print(markdown(runs, meta))


if __name__ == "__main__":
    main()
