"""Serving benchmark (`make bench-serve`): the bundled model through the studio's own OpenAI endpoint, directly on
each raw engine, and as plain transformers ``model.generate`` on a batch of the same size, all in the same run, at
1, 8 and 32 concurrent streams of 64 tokens.

Reports generated tokens/s (aggregate), p50/p95 time to first token, and the ratios studio/raw and
studio/generate per route and concurrency, plus the best engine on this machine for each concurrency. Results go
to <out>/serve.json (``runs``: one object per route and concurrency) and <out>/serve.md (default out:
bench/results). Not a test: timings on shared machines are noisy, so only ratios taken in the same run mean much.

Routes (each an alias in a private STUDIO_HOME that shares the converted models of the real one):
- default: the studio's default engine for the bundled model, transformers. Raw = the TransformersEngine in this
  process (N threads on one engine).
- llamacpp: the Q4_1 GGUF on llama.cpp. Raw = llama_cpp.Llama in this process (it serves one stream at a
  time, so N streams queue up).
- vllm: vLLM's CPU build (or CUDA). Raw = a vLLM OpenAI server started with the same command the studio uses,
  called directly; studio = the studio's /v1 in front of its own vLLM process.
- generate (a column, not a route): ``AutoModelForCausalLM.generate`` on a left-padded batch of N of the same chat
  prompts, the dtype the studio's engine picks, the same sampling (temperature 0.8, top_p 0.9, top_k 50), and
  ``min_new_tokens`` = ``max_new_tokens`` so every sequence generates all its tokens. What transformers alone does
  with N prompts at once: the bar for the default route.

Each studio alias sets ``n_parallel`` to the highest concurrency, and the studio runs with
``STUDIO_MAX_RUNNING_PER_MODEL`` at least that, so N streams really run at once (the raw engines get the same).

    python bench/serve.py [--engines llamacpp,vllm,transformers] [--concurrency 1,8,32] [--tokens 64] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
DEFAULT_CONCURRENCY = {"llamacpp": [1, 8], "vllm": [1, 8, 32], "transformers": [1, 8, 32]}
ROUTE_OF_ENGINE = {"transformers": "default", "vllm": "vllm", "llamacpp": "llamacpp"}
TEMPERATURE, TOP_P, TOP_K, SEED = 0.8, 0.9, 50, 1  # top_p/top_k: the studio's defaults (configs/defaults.yaml)


@dataclass
class Run:
    """One measurement: N streams of one engine through one side (the studio, the raw engine, or plain generate)."""

    engine: str
    route: str  # "studio" | "raw" | "generate" (the side measured; the serving route is ROUTE_OF_ENGINE[engine])
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
        "temperature": TEMPERATURE,
        "top_p": TOP_P,
        "top_k": TOP_K,
        "seed": SEED,
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


# -- in-process raw engines: N threads share one engine ------------------------------------------------------
def _timed(
    i: int, lock: threading.Lock | None, generate: Any, ttfts: list[float], counts: list[int], tokens: int
) -> None:
    """One stream; with ``lock`` (an engine that serves one stream at a time) its TTFT includes the wait for its
    turn, without it the engine serves the N streams together as it does in the studio."""
    t0 = time.perf_counter()
    with lock if lock is not None else contextlib.nullcontext():
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
            [{"role": "user", "content": prompt}],
            max_tokens=tokens,
            temperature=TEMPERATURE,
            top_p=TOP_P,
            top_k=TOP_K,
            seed=SEED,
            stream=True,
        ):
            if chunk["choices"][0]["delta"].get("content"):
                count += 1
                ttft = ttft if ttft is not None else time.perf_counter() - t0
        return (ttft or time.perf_counter() - t0), count

    return generate, llm.close


def transformers_generate(path: Path, threads: int | None, max_parallel: int) -> Any:
    from studio.inference.base import ChatMessage, TokenEvent
    from studio.inference.params import make_sampling_params
    from studio.inference.torch_setup import import_torch
    from studio.inference.transformers_backend import TransformersEngine

    import_torch(threads)
    engine = TransformersEngine(BUNDLED_MODEL_ID, path, dtype="auto", threads=threads, max_parallel=max_parallel)

    def generate(prompt: str, tokens: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        ttft = None
        count = 0
        params = make_sampling_params(temperature=TEMPERATURE, top_p=TOP_P, top_k=TOP_K, seed=SEED, max_tokens=tokens)
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


def start_studio(home: Path, max_n: int) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "STUDIO_HOME": str(home),
        "STUDIO_START_WORKER": "0",
        # N streams run at once, as on the raw engines (the studio's default admits 8 running per model)
        "STUDIO_MAX_RUNNING_PER_MODEL": str(max(max_n, 8)),
    }
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
        "bench-transformers": {"context_params": {"engine": "transformers", "n_parallel": max_n, **common}},
    }
    for name, body in aliases.items():
        data = {"alias": name, "repo": BUNDLED_MODEL_ID, **{k: v for k, v in body.items() if v is not None}}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")


def bench_engine(
    engine: str, url: str, concurrency: list[int], tokens: int, threads: int | None, model_dir: Path, max_n: int
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
        llamacpp_generate(gguf, threads)
        if engine == "llamacpp" and gguf
        else transformers_generate(model_dir, threads, max_n)
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
    lock = threading.Lock() if engine == "llamacpp" else None  # the transformers engine serves streams together
    ttfts: list[float] = []
    counts: list[int] = []
    threads = [threading.Thread(target=_timed, args=(i, lock, generate, ttfts, counts, tokens)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _summary(engine, "raw", n, ttfts, sum(counts), time.perf_counter() - t0)


# -- the plain transformers generate baseline ---------------------------------------------------------------
def generate_baseline(model_dir: Path, levels: list[int], tokens: int, threads: int | None) -> list[Run]:
    """Plain ``model.generate`` on a batch of N chat prompts for each N in ``levels``: the same prompts, dtype
    (the one the studio's engine picks for this device), sampling and number of new tokens as the streams."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.inference.torch_setup import import_torch, resolve_dtype

    torch = import_torch(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    tok.padding_side = "left"  # decoder-only: pad on the left so every row's new tokens follow its prompt
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=resolve_dtype("auto", device), local_files_only=True
    )
    model = model.to(device).eval()
    texts = [
        str(tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True))
        for p in PROMPTS
    ]

    def run(n: int, new_tokens: int) -> tuple[int, float]:
        batch = tok([texts[i % len(texts)] for i in range(n)], return_tensors="pt", padding=True).to(device)
        torch.manual_seed(SEED)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **batch,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,  # no early EOS: every row generates all its tokens, as the streams do
                do_sample=True,
                temperature=TEMPERATURE,
                top_p=TOP_P,
                top_k=TOP_K,
                pad_token_id=tok.pad_token_id,
            )
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        return n * (int(out.shape[1]) - int(batch["input_ids"].shape[1])), seconds

    run(1, 4)  # warm-up
    runs = []
    for n in levels:
        generated, seconds = run(n, tokens)
        runs.append(_summary("transformers", "generate", n, [], generated, seconds))
        print(f"  generate batch {n}: {runs[-1].tokens_per_s} tok/s", flush=True)
    return runs


# -- one row per route and concurrency ---------------------------------------------------------------------
def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def route_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """The ``runs`` of serve.json: per route and concurrency, studio / raw / generate tok/s, TTFTs, ratios and
    the best engine measured at that concurrency (by the tok/s a studio user gets, raw when the studio's is
    missing)."""
    by = {(r.engine, r.route, r.concurrency): r for r in runs}
    generate = {r.concurrency: r for r in runs if r.route == "generate"}
    keys = sorted({(r.engine, r.concurrency) for r in runs if r.route in ("studio", "raw")}, key=lambda k: (k[1], k[0]))
    best: dict[int, tuple[str, float]] = {}
    for engine, n in keys:
        side = by.get((engine, "studio", n)) or by.get((engine, "raw", n))
        if side and side.tokens_per_s > best.get(n, ("", -1.0))[1]:
            best[n] = (engine, side.tokens_per_s)
    rows = []
    for engine, n in keys:
        s, w, g = by.get((engine, "studio", n)), by.get((engine, "raw", n)), generate.get(n)
        studio_tps = s.tokens_per_s if s else None
        raw_tps = w.tokens_per_s if w else None
        gen_tps = g.tokens_per_s if g else None
        rows.append(
            {
                "route": ROUTE_OF_ENGINE.get(engine, engine),
                "engine": engine,
                "streams": n,
                "studio_tok_s": studio_tps,
                "raw_tok_s": raw_tps,
                "generate_tok_s": gen_tps,
                "studio_ttft_p50_s": round(s.ttft_p50_s, 3) if s else None,
                "studio_ttft_p95_s": round(s.ttft_p95_s, 3) if s else None,
                "raw_ttft_p50_s": round(w.ttft_p50_s, 3) if w else None,
                "raw_ttft_p95_s": round(w.ttft_p95_s, 3) if w else None,
                "studio_over_raw": _ratio(studio_tps, raw_tps),
                "studio_over_generate": _ratio(studio_tps, gen_tps),
                "raw_over_generate": _ratio(raw_tps, gen_tps),
                "best_engine": best[n][0] if n in best else None,
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    def pair(row: dict[str, Any], side: str) -> str:
        p50, p95 = row[f"{side}_ttft_p50_s"], row[f"{side}_ttft_p95_s"]
        return "-" if p50 is None else f"{p50:.2f} / {p95:.2f}"

    lines = [
        "# Serving benchmark (bundled SmolLM2-135M-Instruct)",
        "",
        f"{meta['when']} · {meta['machine']} · {meta['device']} · {meta['tokens']} tokens per stream · "
        f"threads {meta['threads']} · generate = plain transformers `model.generate` on a batch of N ({meta['dtype']})",
        "",
        "| route | streams | studio tok/s | raw tok/s | generate tok/s (batch N) | best engine at N "
        "| studio TTFT p50 / p95 (s) | raw TTFT p50 / p95 (s) | studio/raw | studio/generate | raw/generate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["route"], r["streams"])):
        lines.append(
            f"| {r['route']} ({r['engine']}) | {r['streams']} | {cell(r['studio_tok_s'])} | {cell(r['raw_tok_s'])} "
            f"| {cell(r['generate_tok_s'])} | {cell(r['best_engine'])} | {pair(r, 'studio')} | {pair(r, 'raw')} "
            f"| {cell(r['studio_over_raw'])} | {cell(r['studio_over_generate'])} | {cell(r['raw_over_generate'])} |"
        )
    return "\n".join(lines) + "\n"


def device_meta() -> tuple[str, str]:
    """(device, dtype) the studio's transformers engine uses here: what the generate baseline runs on too."""
    from studio.inference.torch_setup import import_torch, resolve_dtype

    torch = import_torch(None)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = f"cuda ({torch.cuda.get_device_name(0)} x{torch.cuda.device_count()})" if device == "cuda" else "cpu"
    return name, str(resolve_dtype("auto", device)).removeprefix("torch.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="llamacpp,vllm,transformers")
    ap.add_argument("--concurrency", default="", help="e.g. 1,8,32 for every engine (default: per engine)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for serve.json/serve.md")
    ap.add_argument("--no-generate", action="store_true", help="skip the plain transformers generate baseline")
    args = ap.parse_args()

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in DEFAULT_CONCURRENCY]
    if unknown:
        ap.error(f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(DEFAULT_CONCURRENCY)}")
    levels = {
        e: ([int(x) for x in args.concurrency.split(",")] if args.concurrency else DEFAULT_CONCURRENCY[e])
        for e in engines
    }
    max_n = max(max(v) for v in levels.values())
    real = Settings()
    model_dir = prepare_model(ModelRegistry(real).resolve("default"), real.models_dir)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        home = Path(tmp)
        (home / "models").symlink_to(real.models_dir, target_is_directory=True)
        write_aliases(home, args.threads, max_n)
        proc, url = start_studio(home, max_n)
        try:
            for engine in engines:
                try:
                    runs += bench_engine(engine, url, levels[engine], args.tokens, args.threads, model_dir, max_n)
                except Exception as exc:  # one engine failing (e.g. not installed) must not lose the others
                    print(f"[{engine}] skipped: {exc}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    if not args.no_generate:  # after the studio has stopped: nothing else runs on the machine meanwhile
        print("[generate] plain transformers generate, batched…", flush=True)
        runs += generate_baseline(model_dir, sorted({n for v in levels.values() for n in v}), args.tokens, args.threads)
    device, dtype = device_meta()
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "device": device,
        "dtype": dtype,
        "tokens": args.tokens,
        "threads": args.threads or "default",
        "max_running_per_model": max(max_n, 8),
    }
    rows = route_rows(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "runs": rows, "measurements": [asdict(r) for r in runs]}
    (args.out / "serve.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "serve.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
