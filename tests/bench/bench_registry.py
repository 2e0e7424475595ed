"""How fast is the registry at scale? 1,000 adapters x 10 versions in each store (local, S3).

    .venv/bin/python tests/bench/bench_registry.py [--adapters 1000] [--versions 10] [--no-s3]
    .venv/bin/python tests/bench/bench_registry.py --ops      # per-operation costs by adapter size

Scale (default): publishes adapters x versions tiny synthetic adapters (~4 KB each) into
the local store and into S3 (SeaweedFS, started here), points `prod` at each adapter's
last version, then times `list`, `show` and resolve (median / p99) and counts the S3
calls each makes (botocore `before-send` events): a resolve of a cached version makes 0.

`--ops`: publish / resolve / validate / fetch / merge for the tiny base's shape and a
Llama-3.1-8B-shaped r=16 all-linear adapter (~84 MB fp16), so the numbers show what grows
with adapter size (hashing, copying, uploading) and what does not (resolving).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adapters"))  # s3_server helper

from loramux.adapters.base_spec import BaseSpec  # noqa: E402
from loramux.adapters.merge import merge_adapters  # noqa: E402
from loramux.adapters.registry import Resolver, publish  # noqa: E402
from loramux.adapters.store import LocalStore  # noqa: E402
from loramux.adapters.validation import validate_adapter  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHAPES = {  # name: (base config, rank, targets)
    "tiny r8 q,v": (dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2), 8, ["q_proj", "v_proj"]),
    "8B r16 all-linear": (dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                               num_attention_heads=32, num_key_value_heads=8), 16, TARGETS),
}


def synth_adapter(out: Path, base: BaseSpec, rank: int, targets: list[str], seed: int) -> Path:
    """A peft-layout LoRA adapter with random fp16 weights for `base`."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(base.num_hidden_layers):
        for module in targets:
            fan_in, fan_out = base.shape.linears()[module]
            group = "self_attn" if module.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            key = f"base_model.model.model.layers.{layer}.{group}.{module}"
            tensors[f"{key}.lora_A.weight"] = rng.standard_normal((rank, fan_in), dtype=np.float32).astype(np.float16)
            tensors[f"{key}.lora_B.weight"] = rng.standard_normal((fan_out, rank), dtype=np.float32).astype(np.float16)
    out.mkdir(parents=True)
    save_file(tensors, out / "adapter_model.safetensors")
    (out / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": targets,
         "use_dora": False, "modules_to_save": None, "base_model_name_or_path": base.id}))
    return out


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def row(table: Table, backend: str, op: str, shape: str, ms: list[float]) -> None:
    p95 = sorted(ms)[max(0, round(0.95 * len(ms)) - 1)]
    table.add_row(backend, op, shape, f"{statistics.median(ms):.3f}", f"{p95:.3f}", str(len(ms)))
    Console(stderr=True).print(f"  {backend:6} {op:34} {shape:18} {statistics.median(ms):9.3f} ms")


@contextlib.contextmanager
def stores(work: Path, with_s3: bool) -> Iterator[list[tuple[str, object, Callable[[], object]]]]:
    """(label, store, make_replica) for each backend."""
    out = [("local", LocalStore(work / "local"), lambda: LocalStore(work / "local"))]
    if not with_s3:
        yield out
        return
    from s3_server import client_kwargs, seaweedfs

    from loramux.adapters.store.s3 import S3Store

    (work / "weed").mkdir()
    with seaweedfs(work / "weed") as endpoint:
        kw = client_kwargs(endpoint)
        replicas = iter(range(10**6))
        out.append(("s3", S3Store("adapters", work / "s3cache", **kw),
                    lambda: S3Store("adapters", work / f"s3replica{next(replicas)}", **kw)))
        yield out


def bench_ops(work: Path, versions: int, repeat: int, with_s3: bool) -> Table:
    table = Table(title="loramux registry (ms per operation)")
    for col in ("backend", "operation", "adapter", "median ms", "p95 ms", "n"):
        table.add_column(col, justify="right" if "ms" in col or col == "n" else "left")
    with stores(work, with_s3) as backends:
        for shape, (config, rank, targets) in SHAPES.items():
            base = BaseSpec.from_config({**config, "model_type": "llama"}, "bench-base")
            big = shape.startswith("8B")
            n_pub = 3 if big else 20  # >= 2: the merge rows use two
            srcs = [synth_adapter(work / f"src-{shape}-{i}".replace(" ", "_").replace(",", ""), base, rank,
                                  targets, seed=i) for i in range(n_pub)]
            row(table, "-", "validate (headers)", shape, timed(lambda: validate_adapter(srcs[0], base=base), 5))
            for strategy in ("cat", "linear") if big else ("cat", "linear", "ties"):  # ties: one SVD per module
                row(table, "-", f"merge 2 adapters ({strategy})", shape, timed(
                    lambda: merge_adapters([(srcs[0], 0.5), (srcs[1], 0.5)], work / f"merged-{strategy}", strategy),
                    3))
            for label, store, replica in backends:
                it = iter(srcs)
                ms = timed(lambda: publish(store, next(it), tenant="bench", name=shape.split()[0].lower(),
                                           base=base, aliases=("prod",)), n_pub)
                row(table, label, "publish (validate+put+alias)", shape, ms)
                resolver = Resolver(store)
                model = f"bench/{shape.split()[0].lower()}"
                pinned = resolver.resolve(model).manifest
                row(table, label, "resolve alias", shape, timed(lambda: resolver.resolve(model), repeat))
                ttl = Resolver(store, ttl_s=2.0)
                row(table, label, "resolve alias (ttl_s=2 cache)", shape, timed(lambda: ttl.resolve(model), repeat))
                row(table, label, "resolve @12-char version", shape,
                    timed(lambda: resolver.resolve(pinned.served_name), repeat))
                path = resolver.resolve(model).path
                row(table, label, "validate before load (+hash)", shape,
                    timed(lambda: validate_adapter(path, base=base, manifest=pinned), 5 if big else 20))
                if label != "local":
                    row(table, label, "cold fetch (new replica cache)", shape,
                        timed(lambda: Resolver(replica()).resolve(model).path, 3 if big else 10))
        tiny_base = BaseSpec.from_config({**SHAPES["tiny r8 q,v"][0], "model_type": "llama"}, "bench-base")
        src = work / "list-src"
        synth_adapter(src, tiny_base, 8, ["q_proj"], seed=0)
        from loramux.adapters.manifest import Manifest

        for label, store, _ in backends:
            for i in range(versions):  # same bytes, many names: cheap to make, one version each
                store.put(src, Manifest.create(src, tenant=f"t{i % 20}", name=f"a{i}", base=tiny_base))
            total = len(store.list())
            row(table, label, f"list all ({total} versions)", "tiny", timed(store.list, 5))
            row(table, label, "list one tenant", "tiny", timed(lambda: store.list("t0"), 5))
    return table


def pct(ms: list[float], q: float) -> float:
    return sorted(ms)[min(len(ms) - 1, max(0, round(q * len(ms)) - 1))]


class CallCounter:
    """Counts every request an S3Store's client sends (botocore `before-send` event)."""

    def __init__(self, store: object) -> None:
        self.n = 0
        client = getattr(store, "client", None)
        if client is not None:
            client.meta.events.register("before-send.s3", self._count)

    def _count(self, **_: object) -> None:
        self.n += 1

    def during(self, fn: Callable[[], object]) -> Callable[[], int]:
        """`fn` wrapped to return the number of calls it made."""
        def run() -> int:
            before = self.n
            fn()
            return self.n - before
        return run


def tiny_synth(out: Path, base: BaseSpec, seed: int) -> Path:
    """A ~4 KB LoRA adapter (r=2 on q_proj of 2 layers, fp16), unique per seed."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(2):
        key = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
        tensors[f"{key}.lora_A.weight"] = rng.standard_normal((2, base.hidden_size)).astype(np.float16)
        tensors[f"{key}.lora_B.weight"] = rng.standard_normal((base.hidden_size, 2)).astype(np.float16)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "adapter_model.safetensors")
    (out / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "bias": "none"}))
    return out


def fill(label: str, store: object, work: Path, base: BaseSpec, adapters: int, versions: int,
         workers: int) -> float:
    """Publish adapters x versions, then `prod` -> each adapter's last version; returns seconds."""
    import shutil

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    from loramux.adapters.manifest import Manifest

    def one(job: tuple[int, int]) -> None:
        i, v = job
        src = tiny_synth(work / f"src-{label}" / f"{i}-{v}", base, seed=i * versions + v)
        stored = store.put(src, Manifest.create(src, tenant=f"t{i % 100:03d}", name=f"a{i:04d}", base=base,
                                                eval_scores={"exact_match": v / versions}))
        shutil.rmtree(src)
        if v == versions - 1:
            store.set_alias(stored.ref, "prod")

    jobs = [(i, v) for v in range(versions) for i in range(adapters)]
    started = time.perf_counter()
    with Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True)) as progress:
        task = progress.add_task(f"{label}: publish {adapters}x{versions}", total=len(jobs))

        def run(job: tuple[int, int]) -> None:
            one(job)
            progress.advance(task)

        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(run, jobs):
                pass
    return time.perf_counter() - started


def bench_scale(work: Path, adapters: int, versions: int, repeat: int, with_s3: bool, workers: int) -> Table:
    import random

    from loramux.adapters.cli import _show_doc

    table = Table(title=f"loramux registry at scale: {adapters} adapters x {versions} versions per store")
    for col in ("store", "operation", "median ms", "p99 ms", "n", "S3 calls / op"):
        table.add_column(col, justify="left" if col in ("store", "operation") else "right")
    base = BaseSpec.from_config({**SHAPES["tiny r8 q,v"][0], "model_type": "llama"}, "bench-base")
    rng = random.Random(0)
    with stores(work, with_s3) as backends:
        for label, store, replica in backends:
            seconds = fill(label, store, work, base, adapters, versions, workers if label != "local" else 4)
            total = adapters * versions
            table.add_row(label, f"publish {total} versions ({workers if label != 'local' else 4} threads)",
                          f"{seconds * 1000 / total:.2f}", "", str(total), "", end_section=False)
            calls = CallCounter(store)

            def measure(op: str, fn: Callable[[], object], n: int, counter: CallCounter = calls) -> None:
                counted, ms = counter.during(fn), []
                ncalls = []
                for _ in range(n):
                    t = time.perf_counter()
                    ncalls.append(counted())
                    ms.append((time.perf_counter() - t) * 1000)
                table.add_row(label, op, f"{statistics.median(ms):.3f}", f"{pct(ms, 0.99):.3f}", str(n),
                              f"{statistics.mean(ncalls):g}" if label != "local" else "-")
                Console(stderr=True).print(f"  {label:6} {op:44} {statistics.median(ms):9.3f} ms")

            names = [f"t{i % 100:03d}/a{i:04d}" for i in range(adapters)]
            pick = lambda: rng.choice(names)  # noqa: E731
            measure(f"list all ({len(store.list())} versions)", store.list, max(3, repeat // 100))
            measure("list one tenant", lambda: store.list(f"t{rng.randrange(100):03d}"), max(5, repeat // 20))
            measure("show T/N (prod: manifest + aliases + path)", lambda: _show_doc(store, pick()), repeat)
            resolver, ttl = Resolver(store), Resolver(store, ttl_s=60)
            measure("resolve T/N (alias read afresh)", lambda: resolver.resolve(pick()), repeat)
            for n in names:
                ttl.resolve(n)
            measure("resolve T/N (ttl_s=60, warm)", lambda: ttl.resolve(pick()), repeat)
            pinned = [resolver.resolve(n).manifest for n in names]
            measure("resolve T/N@version (cached)", lambda: resolver.resolve(str(rng.choice(pinned).ref)), repeat)
            measure("resolve T/N@12-char prefix (cached)",
                    lambda: resolver.resolve(rng.choice(pinned).served_name), repeat)
            if label != "local":
                fresh = replica()
                cold, todo = Resolver(fresh), list(pinned)
                measure("resolve @version, new replica (1st: downloads)",
                        lambda: cold.resolve(str(todo.pop().ref)), min(repeat, 100, len(todo)), CallCounter(fresh))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=1000, help="adapters per store (scale run)")
    parser.add_argument("--versions", type=int, default=10, help="versions per adapter (scale run)")
    parser.add_argument("--repeat", type=int, default=500, help="repeats of each show/resolve row")
    parser.add_argument("--workers", type=int, default=16, help="publishing threads for S3")
    parser.add_argument("--no-s3", action="store_true", help="local store only (no SeaweedFS)")
    parser.add_argument("--ops", action="store_true", help="per-operation costs by adapter size instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loramux-bench-") as tmp:
        if args.ops:
            table = bench_ops(Path(tmp), 200, args.repeat, not args.no_s3)
        else:
            table = bench_scale(Path(tmp), args.adapters, args.versions, args.repeat, not args.no_s3, args.workers)
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
