"""loramux vs bare vLLM on the same base, adapters and load; prints a table of ratios.

    .venv/bin/python tests/bench/bench_overhead.py [--rounds 3] [--clients 8] [--requests 64] [--base smollm2|DIR]
    .venv/bin/python tests/bench/bench_overhead.py --dtypes auto,float32,bfloat16 [--base DIR]

Targets, all serving the same base (`--base`: `tiny`, built here; `smollm2`, the real base, cached
as the tests cache it; or a folder) + adapters with the same engine settings:
  loramux        our server with the mixed-batch fix (what users run)
  loramux-nofix  our server with LORAMUX_LORA_FIX=0: isolates HTTP/service overhead
  vllm           `python -m vllm.entrypoints.openai.api_server --enable-lora --lora-modules ...`
  base-only      our server with LoRA off, the same load sent to the base alone: the column
                 "vs base only" is what serving adapters costs against a base-only deployment
Runs alternate between targets (round robin), so drift on a noisy machine hits all alike.
Throughput = completion tokens / wall time; TTFT from streamed responses.

`--dtypes`: instead, our server alone, one per `--dtype` (`auto`: no flag, what a user gets),
the same load on each with `ignore_eos` (every request makes `--max-tokens`), rounds alternating
as above; prints output tok/s, the ratio to float32, what `auto` chose and why (from the start
line), and this machine's CPU flags: `auto` must never be the slow one (issue 24).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.bench_lora_throughput import resolve_base  # noqa: E402
from tests.integration.conftest import free_port, wait_healthy  # noqa: E402
from tests.lora_factory import random_lora  # noqa: E402

console = Console(stderr=True)
PROMPTS = ["The cat sees", "Q: Where is my order? A:", "my friend builds a small boat", "the robot"]


def launch(target: str, base: Path, adapters: dict[str, Path], engine_flags: list[str], logdir: Path,
           name: str | None = None, served: str = "tiny"):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LORAMUX_LORA_FIX"}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if target == "base-only":
        env["LORAMUX_ENABLE_LORA"], adapters = "0", {}
    if target == "vllm":
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(base),
               "--served-model-name", served, "--enable-lora", "--port", str(port), "--lora-modules",
               *[f"{n}={p}" for n, p in adapters.items()], *engine_flags]
    else:
        cmd = [sys.executable, "-m", "loramux.server.cli", "serve", "--base", str(base),
               "--served-name", served, "--port", str(port), *engine_flags,
               *[a for n, p in adapters.items() for a in ("--adapter", f"{n}={p}")]]
        if target == "loramux-nofix":
            env["LORAMUX_LORA_FIX"] = "0"
    log = logdir / f"{name or target}.log"
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, log, timeout=300)
    return proc, url


async def one(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int,
              ignore_eos: bool = False):
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": ignore_eos,
            "stream": True, "stream_options": {"include_usage": True}}
    start, ttft, tokens = time.perf_counter(), None, 0
    async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if ttft is None and '"text": ""' not in line and '"text":""' not in line:
                ttft = time.perf_counter() - start
            if '"usage": {' in line or '"usage":{' in line:
                tokens = httpx.Response(200, content=line[6:]).json()["usage"]["completion_tokens"]
    return ttft, tokens


async def load(url: str, models: list[str], clients: int, requests: int, max_tokens: int, seed: int,
               ignore_eos: bool = False):
    rng = random.Random(seed)
    jobs = [(rng.choice(models), rng.choice(PROMPTS)) for _ in range(requests)]
    queue: asyncio.Queue = asyncio.Queue()
    for j in jobs:
        queue.put_nowait(j)
    ttfts, tokens = [], 0

    async def worker(client):
        nonlocal tokens
        while not queue.empty():
            model, prompt = queue.get_nowait()
            t, n = await one(client, url, model, prompt, max_tokens, ignore_eos)
            ttfts.append(t)
            tokens += n

    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - start
    return tokens / wall, ttfts


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def cpu_line() -> str:
    """The CPU model and the flags that switch code paths (loramux's dtype, vLLM's kernels, bitsandbytes)."""
    from loramux.adapters.hardware import CPUINFO, ENV_FEATURES, FEATURES, cpu_features

    text = CPUINFO.read_text() if CPUINFO.is_file() else ""
    model = next((line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    have = cpu_features()
    forced = f" (forced by {ENV_FEATURES})" if os.environ.get(ENV_FEATURES) is not None else ""
    return f"CPU: {model}, {os.cpu_count()} cores; " + ", ".join(
        f"{f} {'yes' if f in have else 'no'}" for f in FEATURES) + forced


def compare_dtypes(args, adapters: dict[str, Path], tmp: Path) -> None:
    """`--dtypes`: one server per dtype, the same load on each, rounds alternating between them
    (each round in a rotated order) so a busy machine's drift hits every dtype alike; one table."""
    models, dtypes, servers = ["tiny", *adapters], args.dtypes.split(","), {}
    try:
        for dtype in dtypes:
            flags = ["--max-loras", "4", "--max-lora-rank", "16", *([] if dtype == "auto" else ["--dtype", dtype])]
            with console.status(f"starting a server with --dtype {dtype}"):
                servers[dtype] = launch("loramux", args.base, adapters, flags, tmp, name=f"dtype-{dtype}")
            asyncio.run(load(servers[dtype][1], models, 4, 8, 8, seed=0))  # warm-up: LoRA loads, compilations
        tps: dict[str, list[float]] = {d: [] for d in dtypes}
        for r in range(args.rounds):
            for dtype in dtypes[r % len(dtypes):] + dtypes[:r % len(dtypes)]:
                with console.status(f"round {r + 1}: --dtype {dtype}"):
                    tps[dtype].append(asyncio.run(load(servers[dtype][1], models, args.clients, args.requests,
                                                       args.max_tokens, seed=r, ignore_eos=True))[0])
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=60)
    rows = {}
    for dtype in dtypes:
        chosen = re.search(r"; dtype (\S+): ([^;]+);", (tmp / f"dtype-{dtype}.log").read_text())
        rows[dtype] = (statistics.median(tps[dtype]), *(chosen.groups() if chosen else ("?", "no start line")))
    ref = rows.get("float32", next(iter(rows.values())))[0]
    table = Table(title=f"--dtype on {args.base.name}: {args.rounds} rounds x {args.requests} requests, "
                        f"{args.clients} clients, {args.max_tokens} tokens (ignore_eos), base + {args.adapters} adapters",
                  caption=cpu_line())
    for col in ("--dtype", "computed in", "output tok/s (median)", "vs float32", "why (start line)"):
        table.add_column(col, justify="left" if col.startswith("why") else "right")
    for dtype, (tp, ran, why) in rows.items():
        table.add_row(dtype, ran, f"{tp:.1f}", f"{tp / ref:.2f}x", why)
    Console(width=200).print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="tiny", help="tiny (built here), smollm2 (the real base, cached) or a folder")
    ap.add_argument("--adapters", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--targets", default="loramux,loramux-nofix,vllm,base-only")
    ap.add_argument("--dtypes", help="compare these --dtype values on our server instead (e.g. auto,float32,bfloat16)")
    args = ap.parse_args()
    targets = args.targets.split(",")
    engine_flags = ["--dtype", "float32", "--max-loras", "4", "--max-lora-rank", "16"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with console.status(f"getting the {args.base} base"):
            args.base, args.served = resolve_base(args.base, tmp)
        adapters = {f"bench/a{i}": random_lora(args.base, tmp / f"a{i}", seed=i + 1) for i in range(args.adapters)}
        if args.dtypes:
            return compare_dtypes(args, adapters, tmp)
        models = {t: [args.served] if t == "base-only" else [args.served, *adapters] for t in targets}
        servers = {}
        try:
            for t in targets:
                with console.status(f"starting {t}"):
                    servers[t] = launch(t, args.base, adapters, engine_flags, tmp, served=args.served)
            for t, (_, url) in servers.items():  # warm-up: first LoRA loads, first compilations
                asyncio.run(load(url, models[t], 4, 8, 8, seed=0))
            results: dict[str, list] = {t: [] for t in targets}
            with Progress(console=console) as progress:
                task = progress.add_task("benchmark", total=args.rounds * len(targets))
                for r in range(args.rounds):
                    for t in targets:
                        results[t].append(asyncio.run(load(servers[t][1], models[t], args.clients,
                                                           args.requests, args.max_tokens, seed=r)))
                        progress.advance(task)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=60)
    summary = {}
    for t, runs in results.items():
        ttfts = [x for _, tt in runs for x in tt]
        summary[t] = (statistics.median(tp for tp, _ in runs), pct(ttfts, 50) * 1000, pct(ttfts, 99) * 1000)
    ref = summary.get("vllm") or next(iter(summary.values()))
    base_only = summary.get("base-only")
    table = Table(title=f"{args.served}: {args.rounds} rounds x {args.requests} requests, {args.clients} clients, "
                        f"{args.max_tokens} tokens, base + {args.adapters} adapters (base-only: the base alone)")
    for col in ("target", "tok/s (median)", "TTFT p50 ms", "TTFT p99 ms", "tput vs vllm", "p50 Δ ms",
                *(["vs base only"] if base_only else [])):
        table.add_column(col, justify="right")
    for t, (tp, p50, p99) in summary.items():
        table.add_row(t, f"{tp:.1f}", f"{p50:.1f}", f"{p99:.1f}", f"{tp / ref[0]:.3f}x", f"{p50 - ref[1]:+.1f}",
                      *([f"{tp / base_only[0]:.3f}x"] if base_only else []))
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
