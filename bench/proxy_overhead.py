"""What the studio's OpenAI proxy path costs per streamed chunk, in CPU time (issue 18, point 3).

The vLLM route is the studio's /v1 in front of a vLLM OpenAI server: every token vLLM streams is read by the
studio (SSE over HTTP), turned into a token event, handed from the generation's worker thread to the event loop,
re-encoded as an OpenAI chunk and written to the client. On a small machine that CPU is taken from vLLM's own
threads, so it shows up as lost throughput. Measuring it against a real vLLM mixes it with vLLM's noise; here a
stand-in upstream (a tiny Starlette app in its own process) streams vLLM-shaped chunks at a steady pace, the
studio proxies them, and the studio process's CPU time beyond what it burns idle is divided by the chunks it
relayed -- split into its event-loop thread and the rest (the generations' worker threads). ``--engine vllm``
serves the bundled model's alias on the studio's real vLLM engine, whose server command runs this stand-in
(``STUDIO_VLLM_PYTHON`` points at a wrapper); ``--engine remote`` goes through a ``remote`` alias (the generic
OpenAI client the vLLM engine builds on).

    python bench/proxy_overhead.py [--engine vllm|remote] [--streams 32] [--chunks 64] [--interval-ms 50]

Not a test (timings); prints one line per repeat and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
IDLE_S = 5.0
WORDS = [" the", " light", "house", " keeper", " walked", " to", " the", " top", ",", " and", " looked", " out"]


# -- the stand-in upstream (run as: python bench/proxy_overhead.py --upstream PORT --interval-ms N) ------------
def upstream_app(interval_s: float, served: str = "m") -> object:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def models(_request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": served, "object": "model"}]})

    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        n = int(body.get("max_tokens") or 16)
        created = int(time.time())

        def chunk(delta: dict[str, object], finish: str | None = None) -> str:
            payload = {
                "id": "chatcmpl-upstream",
                "object": "chat.completion.chunk",
                "created": created,
                "model": "m",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            return f"data: {json.dumps(payload)}\n\n"

        async def events():  # type: ignore[no-untyped-def]
            yield chunk({"role": "assistant", "content": ""})
            for i in range(n):
                await asyncio.sleep(interval_s)
                yield chunk({"content": WORDS[i % len(WORDS)]})
            yield chunk({}, "length")
            usage = {"prompt_tokens": 20, "completion_tokens": n, "total_tokens": 20 + n}
            yield "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [], "usage": usage})
            yield "\n\ndata: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit(f"{what} did not start")


async def _one(client: httpx.AsyncClient, url: str, chunks: int) -> int:
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": chunks,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    got = 0
    async with client.stream("POST", url, json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if line.startswith("data:") and '"content"' in line:
                got += 1
    return got


async def _round(url: str, streams: int, chunks: int) -> int:
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(300), limits=limits) as client:
        counts = await asyncio.gather(*[_one(client, url, chunks) for _ in range(streams)])
    return sum(counts)


def _cpu(proc: psutil.Process) -> tuple[float, float]:
    """(whole process, main thread) CPU seconds; the event loop runs in uvicorn's main thread."""
    total = proc.cpu_times()
    main = next((t for t in proc.threads() if t.id == proc.pid), None)
    return total.user + total.system, (main.user_time + main.system_time) if main else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--chunks", type=int, default=64)
    ap.add_argument("--interval-ms", type=float, default=50.0, help="upstream pause between a stream's chunks")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--engine", choices=("vllm", "remote"), default="vllm")
    ap.add_argument("--upstream", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--fake-vllm", action="store_true", help=argparse.SUPPRESS)  # run by the vLLM engine
    args, rest = ap.parse_known_args()
    if args.upstream or args.fake_vllm:
        import uvicorn

        vllm_args = argparse.ArgumentParser()  # the flags of vLLM's server that matter here (see server_command)
        vllm_args.add_argument("--port", type=int, default=args.upstream)
        vllm_args.add_argument("--served-model-name", default="m")
        known, _ignored = vllm_args.parse_known_args(rest)
        interval = float(os.environ.get("PROXY_BENCH_INTERVAL_MS", args.interval_ms)) / 1000
        app = upstream_app(interval, known.served_model_name)
        uvicorn.run(app, host="127.0.0.1", port=known.port, log_level="warning")  # type: ignore[arg-type]
        return
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")

    up_port, studio_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="proxy-overhead-") as tmp:
        home = Path(tmp)
        (home / "aliases").mkdir()
        env = {
            **os.environ,
            "STUDIO_HOME": str(home),
            "STUDIO_START_WORKER": "0",
            "STUDIO_MAX_RUNNING_PER_MODEL": str(max(8, args.streams)),
            "PROXY_BENCH_INTERVAL_MS": str(args.interval_ms),
        }
        if args.engine == "remote":
            alias = {
                "alias": "fake",
                "repo": "m",
                "context_params": {"engine": "remote", "base_url": f"http://127.0.0.1:{up_port}/v1"},
            }
            upstream = subprocess.Popen(
                [sys.executable, __file__, "--upstream", str(up_port), "--interval-ms", str(args.interval_ms)]
            )
            upstream_url = f"http://127.0.0.1:{up_port}/v1/models"
        else:  # the studio's vLLM engine, its server command answered by this script's stand-in
            sys.path.insert(0, str(ROOT))
            from studio.settings import BUNDLED_MODEL_ID, Settings

            (home / "models").symlink_to(Settings().models_dir, target_is_directory=True)
            wrapper = home / "fake-vllm-python"
            wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" --fake-vllm "$@"\n')
            wrapper.chmod(0o755)
            env["STUDIO_VLLM_PYTHON"] = str(wrapper)
            alias = {"alias": "fake", "repo": BUNDLED_MODEL_ID, "context_params": {"engine": "vllm"}}
            upstream = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1e6)"])  # nothing to start
            upstream_url = ""
        (home / "aliases" / "fake.yaml").write_text(yaml.safe_dump(alias), encoding="utf-8")
        log = open(home / "studio.log", "wb")  # noqa: SIM115
        studio = subprocess.Popen(
            [sys.executable, "-m", "studio", "serve", "--port", str(studio_port), "--no-preload"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            if upstream_url:
                _wait(upstream_url, upstream, "the upstream")
            _wait(f"http://127.0.0.1:{studio_port}/v1/models", studio, "the studio")
            url = f"http://127.0.0.1:{studio_port}/v1/chat/completions"
            ps = psutil.Process(studio.pid)
            asyncio.run(_round(url, min(args.streams, 4), 8))  # warm-up: loads the engine
            # what the idle studio burns anyway (its UI's queue polls), taken off each run's figure
            idle0, idle_main0 = _cpu(ps)
            time.sleep(IDLE_S)
            idle1, idle_main1 = _cpu(ps)
            idle, idle_main = (idle1 - idle0) / IDLE_S, (idle_main1 - idle_main0) / IDLE_S
            print(f"idle studio: {idle * 1e3:.1f} ms of CPU per second (event loop {idle_main * 1e3:.1f})")
            per_chunk, loop_share = [], []
            for _ in range(args.repeat):
                cpu0, main0 = _cpu(ps)
                t0 = time.perf_counter()
                got = asyncio.run(_round(url, args.streams, args.chunks))
                wall = time.perf_counter() - t0
                cpu1, main1 = _cpu(ps)
                us = (cpu1 - cpu0 - idle * wall) / got * 1e6
                per_chunk.append(us)
                loop_share.append((main1 - main0 - idle_main * wall) / got * 1e6)
                print(
                    f"{got} chunks in {wall:.2f} s: studio CPU {cpu1 - cpu0:.3f} s, beyond idle {us:.0f} µs/chunk "
                    f"(event loop {loop_share[-1]:.0f} µs, worker threads {us - loop_share[-1]:.0f} µs)",
                    flush=True,
                )
            print(
                f"median: {statistics.median(per_chunk):.0f} µs/chunk beyond idle "
                f"(event loop {statistics.median(loop_share):.0f} µs) at {args.streams} streams, {args.engine} engine"
            )
        finally:
            studio.terminate()
            upstream.terminate()
            studio.wait(timeout=60)
            upstream.wait(timeout=30)


if __name__ == "__main__":
    main()
