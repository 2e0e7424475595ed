"""Fair share: tenant B's time to first token alone and while tenant A floods the server.

    .venv/bin/python tests/bench/bench_fair_share.py [--rounds 3] [--b-requests 12] [--max-num-seqs 4] [--lora]

Two real servers over one tiny base and one keys file (tenants `flood` and `light`): one with
fair share on (the default), one with `--no-fair-share` (vLLM's first come, first served).
B keeps `--b-clients` requests going; A keeps ten times as many. Each round measures, per
server, B alone and B under A's flood; servers and phases alternate, so drift on a noisy
machine hits all alike. TTFT is the first streamed token.

Without `--lora` both ask for the base and A's flood is more than the engine's batch
(`--max-num-seqs`), so a queue forms and its order decides B's wait. With `--lora` each asks
for its own registry adapters (A: 8, B: 2) on a server with 4 LoRA batch slots and no batch
cap: what B waits for then is a slot that A's adapters hold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.integration.conftest import running_server  # noqa: E402

console = Console(stderr=True)
BODY = {"prompt": "The cat sees the robot and", "temperature": 1.0, "stream": True}
LORA_SLOTS, LORA_CPU = 4, 10  # --lora: batch slots, and host copies (all adapters: no reloads)
LORAS = {"flood": 8, "light": 2}  # --lora: adapters per tenant


@dataclass
class Phase:
    b_ttft: list[float] = field(default_factory=list)
    b_queue: list[float] = field(default_factory=list)  # of B's TTFT, the engine's wait for a batch slot
    a_ttft: list[float] = field(default_factory=list)
    a_tokens: int = 0  # A's streamed tokens while B's requests ran
    seconds: float = 0.0  # how long B's requests took, all together
    a_done: int = 0  # A's requests that finished while B's ran


async def streamed(client: httpx.AsyncClient, url: str, key: str, max_tokens: int,
                   on_token=lambda: None, model: str = "tiny") -> tuple[float, float]:
    """One streamed completion: its time to first token and the part of it spent in the engine's
    queue (from the `Server-Timing` header), in seconds."""
    started, ttft = time.perf_counter(), None
    headers = {"Authorization": f"Bearer {key}"}
    async with client.stream("POST", f"{url}/v1/completions", headers=headers,
                             json={**BODY, "model": model, "max_tokens": max_tokens, "seed": int(started * 1e6) % 2**31}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {(await r.aread())[:300]!r}")
        timing = dict(p.split(";dur=") for p in r.headers.get("server-timing", "").split(", ") if ";dur=" in p)
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                ttft = ttft if ttft is not None else time.perf_counter() - started
                on_token()
    assert ttft is not None, "no token streamed"
    return ttft, float(timing.get("queue", "nan")) / 1000


async def light(client: httpx.AsyncClient, url: str, key: str, requests: int, clients: int,
                max_tokens: int, models: list[str]) -> list[tuple[float, float]]:
    """B: `requests` completions, `clients` at a time, over `models` in turn; their TTFTs and queue times."""
    todo, out = iter(range(requests)), []

    async def worker():
        for i in todo:
            out.append(await streamed(client, url, key, max_tokens, model=models[i % len(models)]))
    await asyncio.gather(*(worker() for _ in range(clients)))
    return out


async def phase(url: str, keys: dict[str, str], *, flood: bool, b_requests: int, b_clients: int,
                a_clients: int, max_tokens: int, warmup_s: float, models: dict[str, list[str]] | None = None) -> Phase:
    """B's requests, alone or while A keeps `a_clients` requests in flight (closed loop); each
    tenant asks for its `models` in turn (default: the base)."""
    models = models or {"flood": ["tiny"], "light": ["tiny"]}
    result, window, turn = Phase(), {"open": False}, iter(range(10**9))
    limits = httpx.Limits(max_connections=a_clients + b_clients + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600), limits=limits) as client:
        async def flood_worker():
            def token():
                result.a_tokens += window["open"]
            while True:
                model = models["flood"][next(turn) % len(models["flood"])]
                ttft, _ = await streamed(client, url, keys["flood"], max_tokens, token, model)
                if window["open"]:
                    result.a_ttft.append(ttft)
                    result.a_done += 1

        flooders = [asyncio.create_task(flood_worker()) for _ in range(a_clients if flood else 0)]
        try:
            if flood:
                await asyncio.sleep(warmup_s)  # the queue fills
            window["open"], started = True, time.perf_counter()
            b = await light(client, url, keys["light"], b_requests, b_clients, max_tokens, models["light"])
            result.b_ttft, result.b_queue = [t for t, _ in b], [q for _, q in b]
            result.seconds, window["open"] = time.perf_counter() - started, False
            for t in flooders:
                if t.done():
                    t.result()  # a flood that died is a failed benchmark, not a quiet one
        finally:
            for t in flooders:
                t.cancel()
            await asyncio.gather(*flooders, return_exceptions=True)
    await asyncio.sleep(0.5)  # cancelled streams abort in the engine before the next phase
    return result


def make_keys(path: Path) -> dict[str, str]:
    from loramux.server.keys import create_key

    return {tenant: create_key(path, tenant)[0] for tenant in ("flood", "light")}


def publish_loras(base: Path, root: Path) -> tuple[Path, dict[str, list[str]]]:
    """A registry with each tenant's random adapters (`LORAS`); its folder and tenant -> names."""
    from loramux.adapters.base_spec import BaseSpec
    from loramux.adapters.registry import publish
    from loramux.adapters.store import open_store
    from tests.lora_factory import random_lora

    store, spec, models = open_store(str(root / "registry")), BaseSpec.from_dir(base, "tiny"), {}
    for tenant, n in LORAS.items():
        for i in range(n):
            publish(store, random_lora(base, root / f"{tenant}-{i}", seed=100 + 10 * i + len(models), r=4),
                    tenant=tenant, name=f"a{i}", base=spec)
        models[tenant] = [f"{tenant}/a{i}" for i in range(n)]
    return root / "registry", models


def lora_flags(registry: Path) -> list[str]:
    return ["--registry", str(registry), "--max-loras", str(LORA_SLOTS), "--max-cpu-loras", str(LORA_CPU)]


def serving(base: Path, keys_file: Path, extra: list[str], log: Path):
    return running_server(["--base", str(base), "--served-name", "tiny", "--dtype", "float32",
                           "--keys", str(keys_file), *extra], log, timeout=300)


def pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def table(results: dict[str, Phase], args) -> Table:
    contention = (f"own adapters ({LORAS['light']} vs {LORAS['flood']}) over {LORA_SLOTS} LoRA slots" if args.lora
                  else f"the base, engine batch {args.max_num_seqs}")
    t = Table(title=f"Tenant B ({args.b_clients} at a time) vs tenant A's flood ({args.a_clients} at a time, "
                    f"{args.a_clients // args.b_clients}×) — {contention}, {args.rounds} rounds, "
                    f"{args.max_tokens} tokens a request")
    for col in ("scenario", "B reqs", "B TTFT p50", "B TTFT p99", "p50 vs alone", "B queued p50", "A TTFT p50",
                "A tok/s", "B tok/s"):
        t.add_column(col, justify="left" if col == "scenario" else "right")
    alone = statistics.median(results["B alone (fair share on)"].b_ttft)
    for name, r in results.items():
        b_tps = len(r.b_ttft) * args.max_tokens / r.seconds
        t.add_row(name, str(len(r.b_ttft)), f"{pct(r.b_ttft, 50) * 1000:.0f} ms", f"{pct(r.b_ttft, 99) * 1000:.0f} ms",
                  f"{statistics.median(r.b_ttft) / alone:.1f}×", f"{statistics.median(r.b_queue) * 1000:.0f} ms",
                  f"{pct(r.a_ttft, 50) * 1000:.0f} ms" if r.a_ttft else "–",
                  f"{r.a_tokens / r.seconds:.0f}" if r.a_tokens else "–", f"{b_tps:.0f}")
    return t


async def run(urls: dict[str, str], keys: dict[str, str], args,
              models: dict[str, list[str]] | None = None) -> dict[str, Phase]:
    names = {("on", False): "B alone (fair share on)", ("off", False): "B alone (fair share off)",
             ("on", True): "B + A's flood (fair share on)", ("off", True): "B + A's flood (off: FCFS)"}
    results = {n: Phase() for n in names.values()}
    for rnd in range(args.rounds):
        order = ["on", "off"] if rnd % 2 == 0 else ["off", "on"]
        for server in order:
            for flood in (False, True):
                r = await phase(urls[server], keys, flood=flood, b_requests=args.b_requests,
                                b_clients=args.b_clients, a_clients=args.a_clients, max_tokens=args.max_tokens,
                                warmup_s=args.warmup_s, models=models)
                agg = results[names[server, flood]]
                agg.b_ttft += r.b_ttft
                agg.b_queue += r.b_queue
                agg.a_ttft += r.a_ttft
                agg.a_tokens += r.a_tokens
                agg.a_done += r.a_done
                agg.seconds += r.seconds
                console.print(f"round {rnd + 1} {names[server, flood]}: B p50 "
                              f"{statistics.median(r.b_ttft) * 1000:.0f} ms over {r.seconds:.1f}s", highlight=False)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, help="base model folder (default: build the tiny base)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--b-requests", type=int, default=12, help="B's requests per phase")
    p.add_argument("--b-clients", type=int, default=2, help="B's requests in flight; A keeps 10× this")
    p.add_argument("--max-num-seqs", type=int, default=4, help="the engine's batch: A's flood is 5× this")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--warmup-s", type=float, default=2.0, help="A's head start in a flood phase")
    p.add_argument("--lora", action="store_true", help="each tenant asks for its own adapters; 4 LoRA slots")
    args = p.parse_args()
    args.a_clients = 10 * args.b_clients
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = args.base
        if base is None:
            from loramux.trainer.tiny_base import build_tiny

            base = build_tiny(tmp / "base", seed=0)
        keys = make_keys(tmp / "keys.json")
        flags, models = ["--max-num-seqs", str(args.max_num_seqs)], None
        if args.lora:
            registry, models = publish_loras(base, tmp)
            flags = lora_flags(registry)
        with contextlib.ExitStack() as stack:
            console.print("starting two servers: fair share on, and off", highlight=False)
            urls = {"on": stack.enter_context(serving(base, tmp / "keys.json", flags, tmp / "on.log")),
                    "off": stack.enter_context(serving(base, tmp / "keys.json", [*flags, "--no-fair-share"],
                                                       tmp / "off.log"))}
            results = asyncio.run(run(urls, keys, args, models))
    Console(width=200).print(table(results, args))


if __name__ == "__main__":
    main()
