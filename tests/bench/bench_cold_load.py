"""Cold-load latency: store -> first token, minus warm TTFT, split fetch / validate / engine.

    .venv/bin/python tests/bench/bench_cold_load.py [--stores local,s3] [--counts 1,100,1000]
                                                    [--samples 40] [--out cold.json]
    .venv/bin/python tests/bench/bench_cold_load.py --stores local --counts 1,10 --samples 5   # ~1 min

Goal (issue 10): from the local store, cold-load p50 <= 50 ms and p99 <= 200 ms, flat in the
number of published adapters.

Method. Per store, ONE `loramux serve --registry` (tiny base, fp32, --max-loras 4, --idle-s 1)
while the registry grows 1 -> 100 -> 1,000 adapters (rank-8 fp32 LoRAs on q_proj and v_proj,
~115 KB each: random noise added to one PEFT-made adapter, published in a thread pool). A sample is
a streamed completion (PROBE prompt, max_tokens 1, greedy) for an adapter version that is not
loaded -> client-side TTFT ("cold"); then at once the same request -> "warm". Cold load =
cold - warm. The server-side split is the admin listing's `load_s` row for the version that
answered (`x-loramux-adapter-version`); "rest" = cold load - (fetch + validate + engine): the
request's alias read plus what the engine does the first time it runs the adapter (moving it
into a batch slot) — time no phase reports.

- Which versions: at each count, versions this server never used (random order) while there
  are enough; beyond that (count 1, or count < samples) a used one again, after the residency
  policy unloaded it (--idle-s). Before every sample the benchmark waits until no adapter is
  loaded, so each cold load starts from the same state and no eviction runs inside it.
- S3 (SeaweedFS, started here): the server has its own download cache, so a never-used
  version is also a never-fetched one; a reused one has its cache folder removed after it
  was unloaded. Either way "fetch" is a real download (and its hash check).
- One discarded warm-up sample first (the first LoRA request of a process pays one-time costs).
- p99 of ~40 samples is close to the maximum; the machine is shared, so expect noise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "adapters"))  # s3_server helper
from tests.integration.conftest import running_server  # noqa: E402
from tests.lora_factory import PROBE, random_lora  # noqa: E402

console = Console(stderr=True)
PHASES = ("fetch", "validate", "engine")
ADMIN_KEY = "bench-admin-key"
GOAL_P50_MS, GOAL_P99_MS = 50.0, 200.0


@dataclass
class Sample:
    store: str
    adapters: int
    model: str
    version: str
    reused: bool
    cold_s: float
    warm_s: float
    load_s: dict[str, float] = field(default_factory=dict)

    @property
    def cold_load_s(self) -> float:
        return self.cold_s - self.warm_s

    @property
    def rest_s(self) -> float:
        return self.cold_load_s - sum(self.load_s.get(p, 0.0) for p in PHASES)


def adapter_name(i: int) -> str:
    return f"t{i % 100:03d}/a{i:04d}"


class Publisher:
    """Grows a registry with distinct small adapters: one PEFT-made LoRA plus per-index noise."""

    def __init__(self, store, base: Path, work: Path, workers: int) -> None:
        from safetensors.numpy import load_file

        from loramux.adapters.base_spec import BaseSpec

        self.store, self.work, self.workers = store, work, workers
        self.spec = BaseSpec.from_dir(base, "tiny")
        # q,v only: 1,000 of them fit the test SeaweedFS (8 volumes of 64 MB)
        self.template = random_lora(base, work / "template", seed=1, r=8, targets=("q_proj", "v_proj"))
        self.tensors = load_file(self.template / "adapter_model.safetensors")
        self.versions: dict[int, str] = {}  # index -> full version

    def _one(self, i: int) -> None:
        import numpy as np
        from safetensors.numpy import save_file

        from loramux.adapters.registry import publish

        rng = np.random.default_rng(i)
        src = self.work / f"src-{i}"
        src.mkdir()
        shutil.copyfile(self.template / "adapter_config.json", src / "adapter_config.json")
        save_file({k: v + rng.standard_normal(v.shape).astype(v.dtype) * 1e-3 for k, v in self.tensors.items()},
                  src / "adapter_model.safetensors")
        tenant, name = adapter_name(i).split("/")
        try:
            self.versions[i] = publish(self.store, src, tenant=tenant, name=name, base=self.spec).manifest.version
        finally:
            shutil.rmtree(src)

    def grow(self, label: str, count: int) -> float:
        """Publish adapters up to `count`; returns seconds."""
        todo = [i for i in range(count) if i not in self.versions]
        started = time.perf_counter()
        with Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=console, transient=True) as progress:
            task = progress.add_task(f"{label}: publish {len(self.versions)} -> {count}", total=len(todo))

            def run(i: int) -> None:
                self._one(i)
                progress.advance(task)

            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(run, todo))
        return time.perf_counter() - started


@contextlib.contextmanager
def registry(label: str, work: Path) -> Iterator[tuple[object, str, dict[str, str], Path | None]]:
    """(publisher's store, --registry URL, server env, server's download cache or None)."""
    if label == "local":
        from loramux.adapters.store import open_store

        root = work / "registry"
        yield open_store(str(root)), str(root), {}, None
        return
    from s3_server import KEY, REGION, SECRET, client_kwargs, seaweedfs

    from loramux.adapters.store.s3 import S3Store

    (work / "weed").mkdir()
    with seaweedfs(work / "weed") as endpoint:
        cache = work / "server-cache"
        env = {"LORAMUX_S3_ENDPOINT_URL": endpoint, "LORAMUX_STORE_CACHE": str(cache),
               "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": REGION}
        yield S3Store("adapters", work / "publisher-cache", prefix="bench", **client_kwargs(endpoint)), \
            "s3://adapters/bench", env, cache


def server(base: Path, registry_url: str, env: dict[str, str], args: argparse.Namespace, log: Path):
    return running_server(["--base", str(base), "--served-name", "tiny", "--dtype", "float32",
                           "--registry", registry_url, "--admin-key", ADMIN_KEY, "--idle-s", str(args.idle_s),
                           "--max-loras", str(args.max_loras)], log, env, timeout=300)


class Client:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=120)
        self.admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def ttft(self, model: str) -> tuple[float, str]:
        """Seconds to the first streamed token, and the version that answered."""
        body = {"model": model, "prompt": PROBE, "max_tokens": 1, "temperature": 0, "stream": True}
        started, first = time.perf_counter(), None
        with self.http.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"{model}: {r.status_code} {r.read().decode()}")
            version = r.headers.get("x-loramux-adapter-version", "")
            for line in r.iter_lines():  # read to the end: the request finishes normally
                if first is None and line.startswith("data: {"):
                    if any(c.get("text") for c in json.loads(line[6:]).get("choices", [])):
                        first = time.perf_counter() - started
        if first is None:
            raise RuntimeError(f"{model}: the stream carried no token")
        return first, version

    def rows(self) -> list[dict]:
        r = self.http.get("/v1/admin/adapters", headers=self.admin)
        r.raise_for_status()
        return r.json()["data"]

    def loaded(self) -> list[dict]:
        return [row for row in self.rows() if row.get("load_s") is not None]

    def wait_unloaded(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.loaded():
            if time.monotonic() > deadline:
                raise RuntimeError(f"adapters still loaded after {timeout}s: {self.loaded()}")
            time.sleep(0.1)


def sample(client: Client, store: str, count: int, i: int, version: str, reused: bool,
           cache: Path | None) -> Sample:
    """One cold + warm pair on adapter `i`, from an engine holding no adapter."""
    model = adapter_name(i)
    client.wait_unloaded()
    if cache is not None:  # S3: the cold load downloads the version again
        shutil.rmtree(cache / model / "versions" / version, ignore_errors=True)
    cold, answered = client.ttft(model)
    warm, _ = client.ttft(model)
    row = next((r for r in client.loaded() if r["name"] == model and r["version"] == answered), None)
    if answered != version[:12] or row is None:
        raise RuntimeError(f"{model}: answered by {answered!r}, published {version[:12]}; listing row {row}")
    return Sample(store, count, model, answered, reused, cold, warm, dict(row["load_s"]))


def run_store(label: str, base: Path, work: Path, args: argparse.Namespace, samples: list[Sample]) -> None:
    """Appends to `samples` as it goes (and rewrites --out after each count)."""
    rng = random.Random(0)
    with registry(label, work) as (store, url, env, cache):
        publisher = Publisher(store, base, work, workers=8 if label == "s3" else 4)
        publisher.grow(label, args.counts[0])
        console.print(f"{label}: starting the server")
        with server(base, url, env, args, work / f"server-{label}.log") as server_url:
            client = Client(server_url)
            used: set[int] = set()
            warmup = sample(client, label, args.counts[0], 0, publisher.versions[0], False, cache)
            used.add(0)
            console.print(f"{label}: warm-up cold load {warmup.cold_load_s * 1000:.1f} ms (not counted)")
            for count in args.counts:
                seconds = publisher.grow(label, count)
                console.print(f"{label}: {count} adapters published (+{seconds:.1f}s)")
                fresh = [i for i in range(count) if i not in used]
                rng.shuffle(fresh)
                plan = [(i, False) for i in fresh[:args.samples]]
                old = sorted(used)
                plan += [(old[k % len(old)], True) for k in range(args.samples - len(plan))]
                with Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                              console=console, transient=True) as progress:
                    task = progress.add_task(f"{label}: {count} adapters, cold samples", total=len(plan))
                    for i, reused in plan:
                        samples.append(sample(client, label, count, i, publisher.versions[i], reused, cache))
                        used.add(i)
                        progress.advance(task)
                started = time.perf_counter()
                client.rows()
                listing = time.perf_counter() - started
                got = [s for s in samples if s.adapters == count and s.store == label]
                console.print(f"{label}: {count} adapters: cold load p50 "
                              f"{pct([s.cold_load_s for s in got], 50) * 1000:.1f} ms "
                              f"(admin listing took {listing * 1000:.0f} ms)")
                write(args, samples)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def summarize(samples: list[Sample]) -> list[dict]:
    rows = []
    for key in dict.fromkeys((s.store, s.adapters) for s in samples):
        got = [s for s in samples if (s.store, s.adapters) == key]
        row = {"store": key[0], "adapters": key[1], "samples": len(got)}
        series = {"cold_load": [s.cold_load_s for s in got], "rest": [s.rest_s for s in got],
                  "warm_ttft": [s.warm_s for s in got],
                  **{p: [s.load_s.get(p, float("nan")) for s in got] for p in PHASES}}
        for name, values in series.items():
            row[f"{name}_p50_ms"] = pct(values, 50) * 1000
            row[f"{name}_p99_ms"] = pct(values, 99) * 1000
        if key[0] == "local":
            row["goal_met"] = row["cold_load_p50_ms"] <= GOAL_P50_MS and row["cold_load_p99_ms"] <= GOAL_P99_MS
        rows.append(row)
    return rows


def write(args: argparse.Namespace, samples: list[Sample]) -> None:
    """--out: the settings, the summary rows and every sample, as JSON."""
    if args.out is None:
        return
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"config": config, "summary": summarize(samples), "samples": [
        {**asdict(s), "cold_load_s": s.cold_load_s, "rest_s": s.rest_s} for s in samples]}, indent=1))


def table(rows: list[dict]) -> Table:
    t = Table(title="loramux cold load (ms): store -> first token, minus warm TTFT",
              caption=f"goal, local store: p50 <= {GOAL_P50_MS:g} ms, p99 <= {GOAL_P99_MS:g} ms, flat in adapters. "
                      "rest = cold load - (fetch + validate + engine)")
    for col in ("store", "adapters", "n", "cold p50", "cold p99", "fetch p50/p99", "validate p50/p99",
                "engine p50/p99", "rest p50/p99", "warm TTFT p50", "goal"):
        t.add_column(col, justify="left" if col == "store" else "right")
    for r in rows:
        def pair(name: str) -> str:
            return f"{r[f'{name}_p50_ms']:.1f} / {r[f'{name}_p99_ms']:.1f}"
        goal = "-" if "goal_met" not in r else "[green]pass" if r["goal_met"] else "[red]FAIL"
        t.add_row(r["store"], str(r["adapters"]), str(r["samples"]), f"{r['cold_load_p50_ms']:.1f}",
                  f"{r['cold_load_p99_ms']:.1f}", pair("fetch"), pair("validate"), pair("engine"), pair("rest"),
                  f"{r['warm_ttft_p50_ms']:.1f}", goal)
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stores", default="local,s3", help="comma-separated: local, s3")
    ap.add_argument("--counts", default="1,100,1000", help="registry sizes, ascending (the registry grows)")
    ap.add_argument("--samples", type=int, default=40, help="cold samples per store and count")
    ap.add_argument("--idle-s", type=float, default=1.0, help="server --idle-s: how soon a used version unloads")
    ap.add_argument("--max-loras", type=int, default=4, help="server --max-loras")
    ap.add_argument("--base", type=Path, help="base model dir (default: build the tiny base)")
    ap.add_argument("--out", type=Path, help="write config, every sample and the summary as JSON")
    args = ap.parse_args()
    args.counts = sorted(int(c) for c in args.counts.split(","))
    stores = args.stores.split(",")
    if unknown := set(stores) - {"local", "s3"}:
        ap.error(f"unknown store(s): {', '.join(sorted(unknown))}")
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="loramux-cold-") as tmp:
        work = Path(tmp)
        if args.base is None:
            from loramux.trainer.tiny_base import build_tiny

            with console.status("building the tiny base"):
                args.base = build_tiny(work / "base", seed=0)
        for label in stores:
            (work / label).mkdir()
            run_store(label, args.base, work / label, args, samples)
    Console(width=160).print(table(summarize(samples)))


if __name__ == "__main__":
    main()
