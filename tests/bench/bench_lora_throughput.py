"""Multi-LoRA throughput and latency vs the base, with loramux's grouped ops and vLLM's own.

    .venv/bin/python tests/bench/bench_lora_throughput.py [--quick] [--rounds 3] [--png PATH] [--base smollm2|DIR]

An S-LoRA-style trace (fixed seeds): adapters drawn by power-law popularity (Zipf, alpha 1),
~64 prompt tokens, `--max-tokens` out, sent closed-loop (`--concurrency` in flight) and as
Poisson arrivals (`--rate` a second) to real loramux servers on one base (`--base`: `tiny`, the
default, built here; `smollm2`, the real SmolLM2-135M-Instruct, imported once and cached as the
tests cache it; or a folder):

  base only          a server with LoRA off (LORAMUX_ENABLE_LORA=0): the reference
  LoRA on, unused    base requests to a LoRA server
  1 / 4 / 16 res.    requests over that many adapters, all resident (max-loras 16)
  64 over 8 slots    64 adapters, 8 batch slots (all 64 in host memory): churn

once per op set (LORAMUX_LORA_OPS=grouped, then vllm: a server each). Every row is measured
in every round, rounds alternate the order, and ratios are to the base of the same run, so a
noisy machine's drift hits all rows alike. `--quick`: one round, fewer and shorter requests,
grouped ops only, 4 slots (rows 1, 4 resident and 16 over 4). Prints a table per arrival
pattern; writes a PNG of the ratios when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
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
WORDS = ("the cat sees the robot and a dog near the sea every morning my friend builds the red box "
         "while the teacher asks how much it costs").split()
PATTERNS = ("closed", "poisson")


@dataclass(frozen=True)
class Row:
    name: str
    server: str  # "base", "resident" or "churn": which of an op set's servers it runs on
    adapters: int  # 0: base requests


@dataclass
class Sample:
    ttft: list[float] = field(default_factory=list)
    tpot: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0

    def add(self, other: Sample) -> None:
        self.ttft += other.ttft
        self.tpot += other.tpot
        self.tokens += other.tokens
        self.seconds += other.seconds

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def rows(args) -> list[Row]:
    out = [Row("LoRA on, unused", "resident", 0)]
    out += [Row(f"{n} resident", "resident", n) for n in args.resident]
    return out + [Row(f"{args.churn_adapters} over {args.churn_slots} slots", "churn", args.churn_adapters)]


def trace(n: int, adapters: int, seed: int) -> list[tuple[int | None, str]]:
    """(adapter index or None, prompt) per request: Zipf popularity over `adapters`."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(adapters)]
    out = []
    for _ in range(n):
        adapter = rng.choices(range(adapters), weights)[0] if adapters else None
        out.append((adapter, " ".join(rng.choice(WORDS) for _ in range(60))))
    return out


async def one(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int, into: Sample) -> None:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 1.0, "seed": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    started, first, tokens = time.perf_counter(), None, 0
    async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{model}: {r.status_code} {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                if first is None and '"text"' in line:
                    first = time.perf_counter() - started
                if '"completion_tokens"' in line:
                    tokens = json.loads(line[6:])["usage"]["completion_tokens"]
    done = time.perf_counter() - started
    into.ttft.append(first if first is not None else done)
    if tokens > 1:
        into.tpot.append((done - into.ttft[-1]) / (tokens - 1))
    into.tokens += tokens


async def phase(url: str, names: list[str], reqs, pattern: str, args, seed: int) -> Sample:
    """One pass of the trace against one server; wall time from the first send to the last token."""
    out = Sample()
    model = [args.served if a is None else names[a] for a, _ in reqs]
    async with httpx.AsyncClient(timeout=httpx.Timeout(600),
                                 limits=httpx.Limits(max_connections=len(reqs) + 4)) as client:
        started = time.perf_counter()
        if pattern == "closed":
            todo = iter(range(len(reqs)))

            async def worker():
                for i in todo:
                    await one(client, url, model[i], reqs[i][1], args.max_tokens, out)
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        else:
            rng, tasks, t = random.Random(seed), [], 0.0
            for i in range(len(reqs)):
                t += rng.expovariate(args.rate)
                await asyncio.sleep(max(0.0, started + t - time.perf_counter()))
                tasks.append(asyncio.create_task(one(client, url, model[i], reqs[i][1], args.max_tokens, out)))
            await asyncio.gather(*tasks)
        out.seconds = time.perf_counter() - started
    return out


async def warm(url: str, names: list[str], adapters: int, args) -> None:
    """Load every adapter a row uses once, so rounds measure serving, not cold loads."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(600)) as client:
        for a in range(adapters):
            await one(client, url, names[a], "the cat", 2, Sample())
        await one(client, url, args.served, "the cat", 2, Sample())


async def measure(urls: dict[tuple[str, str], str], names: list[str], args) -> dict:
    """results[pattern][(ops, row name)] -> Sample; the base row's ops is "base"."""
    plan = [("base", Row("base only", "base", 0))] + [(ops, r) for ops in args.ops for r in rows(args)]
    for ops, r in plan:
        await warm(urls[ops, r.server], names, r.adapters, args)
    results = {p: {(ops, r.name): Sample() for ops, r in plan} for p in PATTERNS}
    for rnd in range(args.rounds):
        for i, (ops, r) in enumerate(plan if rnd % 2 == 0 else plan[::-1]):
            for pattern in PATTERNS:
                reqs = trace(args.requests, r.adapters, seed=1000 * rnd + i)
                s = await phase(urls[ops, r.server], names, reqs, pattern, args, seed=rnd)
                results[pattern][ops, r.name].add(s)
            console.print(f"round {rnd + 1} {ops:7} {r.name:18} closed {results['closed'][ops, r.name].tok_s:6.0f} "
                          f"tok/s (cumulative)", highlight=False)
    return results


def pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else (xs or [0.0])[0]


def table(pattern: str, res: dict, args) -> Table:
    what = (f"closed loop, {args.concurrency} in flight" if pattern == "closed" else f"Poisson, {args.rate:g} req/s")
    t = Table(title=f"{args.served} base, {what}; {args.requests} requests x {args.rounds} rounds, {args.max_tokens} tokens out; "
                    "x = ratio to base only, same run")
    t.add_column("row")
    for ops in args.ops:
        for col in ("tok/s", "x", "TTFT p50", "x", "TTFT p99", "TPOT p50"):
            t.add_column(f"{ops} {col}" if col == "tok/s" else col, justify="right")
    base = res[pattern]["base", "base only"]
    b_tps, b_ttft = base.tok_s, pct(base.ttft, 50)

    def cells(s: Sample) -> list[str]:
        return [f"{s.tok_s:.0f}", f"{s.tok_s / b_tps:.2f}", f"{pct(s.ttft, 50) * 1000:.0f} ms",
                f"{pct(s.ttft, 50) / b_ttft:.2f}", f"{pct(s.ttft, 99) * 1000:.0f} ms", f"{pct(s.tpot, 50) * 1000:.1f} ms"]
    t.add_row("base only", *cells(base) * len(args.ops))
    for r in rows(args):
        t.add_row(r.name, *[c for ops in args.ops for c in cells(res[pattern][ops, r.name])])
    return t


def plot(res: dict, args, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        console.print("matplotlib is not installed: no PNG")
        return None
    names = [r.name for r in rows(args)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    base = res["closed"]["base", "base only"]
    for ax, (label, f) in zip(axes, [("output tok/s / base", lambda s: s.tok_s / base.tok_s),
                                     ("TTFT p50 / base", lambda s: pct(s.ttft, 50) / pct(base.ttft, 50))]):
        width = 0.8 / len(args.ops)
        for k, ops in enumerate(args.ops):
            ax.bar([i + k * width for i in range(len(names))], [f(res["closed"][ops, n]) for n in names],
                   width, label=f"{ops} ops")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xticks([i + width * (len(args.ops) - 1) / 2 for i in range(len(names))], names, rotation=20)
        ax.set_title(label)
        ax.legend()
    fig.suptitle(f"loramux on CPU, {args.served} base, closed loop ({args.concurrency} in flight), {args.rounds} rounds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def resolve_base(value: str | Path, tmp: Path) -> tuple[Path, str]:
    """`tiny`: built into `tmp`; `smollm2`: the real base from the tests' cache (`loramux base get
    smollm2` on first use); else a base folder. Returns the folder and the name it is served as."""
    if str(value) == "tiny":
        from loramux.trainer.tiny_base import build_tiny

        return build_tiny(tmp / "base", seed=0), "tiny"
    if str(value) == "smollm2":
        from tests.real_base import smollm2_folder

        return smollm2_folder(), "smollm2"
    return Path(value), Path(value).name


def make_adapters(base: Path, root: Path, n: int) -> list[Path]:
    from tests.lora_factory import random_lora

    return [random_lora(base, root / f"a{i:02d}", seed=i + 1) for i in range(n)]


def servers(stack: contextlib.ExitStack, base: Path, adapters: list[Path], names: list[str], tmp: Path, args) -> dict:
    common = ["--base", str(base), "--served-name", args.served, "--dtype", "float32", "--idle-s", "0"]
    if args.max_num_seqs:
        common += ["--max-num-seqs", str(args.max_num_seqs)]
    urls = {}
    if args.base_server:
        console.print("starting the base-only server (LoRA off: vLLM compiles the model)", highlight=False)
        urls["base", "base"] = stack.enter_context(running_server(common, tmp / "base.log",
                                                                  {"LORAMUX_ENABLE_LORA": "0"}, timeout=600))
    slots = {"resident": max(args.resident), "churn": args.churn_slots}
    need = {"resident": max(args.resident), "churn": args.churn_adapters}
    for ops in args.ops:
        started = {}
        for kind in ("resident", "churn"):  # one server when both kinds have the same slots (--quick)
            if slots[kind] in started:
                urls[ops, kind] = started[slots[kind]]
                continue
            count = max(n for k, n in need.items() if slots[k] == slots[kind])
            flags = [*common, "--max-loras", str(slots[kind]), "--max-cpu-loras", str(count)]
            for name, path in zip(names[:count], adapters):
                flags += ["--adapter", f"{name}={path}"]
            console.print(f"starting {ops} ops: {count} adapters over {slots[kind]} slots", highlight=False)
            urls[ops, kind] = started[slots[kind]] = stack.enter_context(
                running_server(flags, tmp / f"{ops}-{kind}.log", {"LORAMUX_LORA_OPS": ops}, timeout=600))
    urls.setdefault(("base", "base"), urls[args.ops[0], "resident"])  # --no-base-server: base requests, LoRA on
    return urls


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="tiny", help="tiny (built here), smollm2 (the real base, cached) or a folder")
    p.add_argument("--quick", action="store_true", help="one short round, grouped ops only, 4 slots (CI)")
    p.add_argument("--rounds", type=int)
    p.add_argument("--requests", type=int, help="requests per row, pattern and round")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rate", type=float, default=16.0, help="Poisson arrivals per second")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--ops", default=None, help="comma-separated op sets (default: grouped,vllm)")
    p.add_argument("--no-base-server", dest="base_server", action="store_false",
                   help="skip the LoRA-off server (its compile is the slowest start); base = LoRA on, unused")
    p.add_argument("--png", type=Path, default=Path("docs/bench/lora_throughput.png"))
    args = p.parse_args(argv)
    quick = dict(rounds=1, requests=16, max_tokens=16, ops="grouped", resident=(1, 4), churn_slots=4, churn_adapters=16)
    full = dict(rounds=3, requests=64, max_tokens=64, ops="grouped,vllm", resident=(1, 4, 16), churn_slots=8,
                churn_adapters=64)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    args.ops = args.ops.split(",")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base, args.served = resolve_base(args.base, tmp)
        count = max(args.churn_adapters, max(args.resident))
        adapters = make_adapters(base, tmp / "adapters", count)
        names = [f"t{i % 8}/a{i:02d}" for i in range(count)]
        with contextlib.ExitStack() as stack:
            urls = servers(stack, base, adapters, names, tmp, args)
            results = asyncio.run(measure(urls, names, args))
    out = Console(width=220)
    for pattern in PATTERNS:
        out.print(table(pattern, results, args))
    if (png := plot(results, args, args.png)) is not None:
        out.print(f"plot: {png}")
    return results


if __name__ == "__main__":
    main()
