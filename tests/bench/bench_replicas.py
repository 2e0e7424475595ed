"""One process vs 1 and 2 Ray Serve replicas on the same base, adapters and load; prints a table.

    .venv/bin/python tests/bench/bench_replicas.py [--adapters 8] [--clients 8] [--requests 96]

Each target serves a registry of `--adapters` adapters (one tenant) with `--max-loras 4`; the
load is `--clients` concurrent clients sending `--requests` completions (PROMPT, 32 tokens, no
early stop), a quarter to the base and the rest spread over the adapters. Reported: requests/s,
completion tokens/s, latency p50/p99, and the affinity hit rate (requests for an adapter
answered by the replica that answered its first request). On a 2-core machine two replicas
share the same two cores: the 2-replica row shows the cost of the cluster, not its gain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.integration.conftest import free_port, wait_healthy  # noqa: E402
from tests.lora_factory import PROBE, random_lora  # noqa: E402

console = Console(stderr=True)
TARGETS = {"one process": [], "1 replica (Ray)": ["--replicas", "1"], "2 replicas (Ray)": ["--replicas", "2"]}


def _launch(flags: list[str], base: Path, registry: Path, log: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "loramux.server.cli", "serve", "--base", str(base), "--served-name", "tiny",
           "--registry", str(registry), "--max-loras", "4", "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, log, timeout=900)
    replicas = int(flags[1]) if flags else 1
    deadline = time.monotonic() + 900
    while len({httpx.get(f"{url}/health").headers.get("x-loramux-replica") for _ in range(8)}) < replicas:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{replicas} replicas never answered; see {log}")
        time.sleep(2)
    return proc, url


async def _load(url: str, models: list[str], clients: int) -> tuple[float, list[float], int, list[tuple[str, str]]]:
    queue = list(models)
    latencies, tokens, landed = [], 0, []

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal tokens
        while queue:
            model = queue.pop()
            started = time.perf_counter()
            r = await c.post(f"{url}/v1/completions", json={"model": model, "prompt": PROBE, "max_tokens": 32,
                                                            "temperature": 0, "ignore_eos": True})
            r.raise_for_status()
            latencies.append(time.perf_counter() - started)
            tokens += r.json()["usage"]["completion_tokens"]
            landed.append((model, r.headers.get("x-loramux-replica", "-")))

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as c:
        await asyncio.gather(*[client(c) for _ in range(clients)])
    return time.perf_counter() - started, latencies, tokens, landed


def _hit_rate(landed: list[tuple[str, str]]) -> float:
    first, hits, total = {}, 0, 0
    for model, replica in landed:
        if model == "tiny":
            continue
        if model in first:
            total += 1
            hits += replica == first[model]
        else:
            first[model] = replica
    return hits / total if total else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapters", type=int, default=8)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=96)
    args = ap.parse_args()
    from loramux.adapters.base_spec import BaseSpec
    from loramux.adapters.registry import publish
    from loramux.adapters.store import open_store
    from loramux.trainer.tiny_base import build_tiny

    work = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    base = build_tiny(work / "base", seed=0)
    store = open_store(str(work / "store"))
    names = [f"acme/a{i}" for i in range(args.adapters)]
    for i, name in enumerate(names):
        publish(store, random_lora(base, work / "src" / name, seed=100 + i), tenant="acme",
                name=name.split("/")[1], base=BaseSpec.from_dir(base, "tiny"))
    rng = random.Random(0)
    models = [("tiny" if i % 4 == 0 else rng.choice(names)) for i in range(args.requests)]
    rows = {}
    for label, flags in TARGETS.items():
        console.print(f"==> {label}: starting")
        proc, url = _launch(flags, base, store.root, work / f"{label.split()[0]}.log")
        try:
            asyncio.run(_load(url, names + ["tiny"], 2))  # every adapter loaded once, engine warm
            console.print(f"==> {label}: {args.requests} requests, {args.clients} clients")
            rows[label] = asyncio.run(_load(url, list(models), args.clients))
        finally:
            proc.terminate()
            proc.wait(timeout=120)
    table = Table(title=f"{args.requests} completions x 32 tokens, {args.clients} clients, {args.adapters} adapters "
                        f"+ base, {os.cpu_count()} cores")
    for col in ("target", "req/s", "tokens/s", "p50 s", "p99 s", "vs one process", "affinity hits", "replicas used"):
        table.add_column(col, justify="right")
    ref = rows["one process"][2] / rows["one process"][0]
    for label, (wall, lat, tokens, landed) in rows.items():
        q = statistics.quantiles(lat, n=100)
        table.add_row(label, f"{len(lat) / wall:.2f}", f"{tokens / wall:.1f}", f"{q[49]:.2f}", f"{q[98]:.2f}",
                      f"{tokens / wall / ref:.2f}x", f"{_hit_rate(landed):.0%}" if "Ray" in label else "-",
                      str(len(Counter(r for _, r in landed))))
    Console(width=140).print(table)
    two, one = rows["2 replicas (Ray)"], rows["1 replica (Ray)"]
    Console().print(f"2 replicas / 1 replica throughput: {(two[2] / two[0]) / (one[2] / one[0]):.2f}x")


if __name__ == "__main__":
    main()
