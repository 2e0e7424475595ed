"""kill -9 publishes at random moments, and check after each that the store shows the whole
version or nothing. Run by test_adapter_crash.py; prints one JSON summary line.

    python crash_publisher.py STORE_URL KILLS SEED [--endpoint URL]

This process is a clean fork server (no torch, no pytest threads): for each kill it forks
a child that publishes one new small adapter (validate, stage, copy, fsync, rename or
upload, then move `prod` to it), sleeps a random delay drawn over the measured length of
a publish, and SIGKILLs the child wherever it is. Then, as an independent reader on its
own store object (for S3: its own cache, so it really downloads), it checks:

- every listed version resolves, and its files hash to its version (nothing partial);
- the new version is either fully resolvable or absent (NotFound), never half there;
- `prod` resolves to a whole version (the old one or the new one, never broken);
- publishing the same files again succeeds and resolves.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.errors import NotFound
from loramux.adapters.manifest import MANIFEST_FILE, content_hash
from loramux.adapters.registry import Resolver, publish
from loramux.adapters.store import open_store

BASE = BaseSpec.from_config({"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
                             "num_attention_heads": 4, "num_key_value_heads": 2, "model_type": "llama"}, "tiny")


def make_adapter(out: Path, seed: int) -> Path:
    """~130 KB LoRA adapter (r=8 on q_proj, v_proj of 4 layers, fp32), unique per seed."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(4):
        for module, fan_out in (("q_proj", 256), ("v_proj", 128)):
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{key}.lora_A.weight"] = rng.standard_normal((8, 256), dtype=np.float32)
            tensors[f"{key}.lora_B.weight"] = rng.standard_normal((fan_out, 8), dtype=np.float32)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "adapter_model.safetensors")
    (out / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "bias": "none"}))
    return out


def open_at(url: str, cache: Path, endpoint: str | None):
    return open_store(url, cache_dir=cache, endpoint_url=endpoint)


def child(url: str, cache: Path, endpoint: str | None, src: Path) -> None:
    """The publisher: everything a real publish does. Exits 0 only if the kill came late."""
    try:
        store = open_at(url, cache, endpoint)
        publish(store, src, tenant="crash", name="adapter", base=BASE, aliases=("prod",))
        os._exit(0)
    except BaseException:
        os._exit(3)


def run_child(url: str, cache: Path, endpoint: str | None, src: Path, delay: float | None) -> tuple[int, float]:
    """Fork a publisher; SIGKILL it after `delay` s (None: let it finish). (status, seconds)."""
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        child(url, cache, endpoint, src)
    if delay is not None:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return status, time.perf_counter() - started


def check(reader, resolver: Resolver, version: str, url: str) -> tuple[bool, list[str]]:
    """(is the new version visible, problems found)."""
    problems = []
    for m in reader.list("crash"):
        path = reader.fetch(m)
        if content_hash(path) != m.version or not (path / MANIFEST_FILE).is_file():
            problems.append(f"listed version {m.version[:12]} is not whole")
    try:
        path = resolver.resolve(f"crash/adapter@{version}").path
        visible = True
        if content_hash(path) != version:
            problems.append(f"new version {version[:12]} resolves to partial files")
    except NotFound:
        visible = False
    try:
        prod = resolver.resolve("crash/adapter")
        if content_hash(prod.path) != prod.version:
            problems.append("prod resolves to a partial version")
    except NotFound:
        pass  # before the first publish that got as far as the alias
    if visible != (version in {m.version for m in reader.list("crash")}):
        problems.append(f"version {version[:12]} resolvable and listed disagree")
    if url.startswith("/"):  # local: no folder under versions/ may be incomplete
        for d in (Path(url) / "crash" / "adapter" / "versions").glob("*"):
            if not (d / MANIFEST_FILE).is_file() or content_hash(d) != d.name:
                problems.append(f"partial version folder {d.name[:12]}")
    return visible, problems


def main() -> None:
    url, kills, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    endpoint = sys.argv[5] if len(sys.argv) > 5 and sys.argv[4] == "--endpoint" else None
    work = Path(os.environ.get("CRASH_WORK", "/tmp")) / f"crash-{os.getpid()}"
    rng = random.Random(seed)
    reader = open_at(url, work / "reader-cache", endpoint)
    resolver = Resolver(reader)
    # How long does a publish take here? Time a few unkilled ones (fork included).
    durations = []
    for i in range(5):
        status, seconds = run_child(url, work / "writer-cache", endpoint, make_adapter(work / f"warm{i}", 10**9 + i), None)
        assert status == 0, f"an unkilled publish failed (status {status})"
        durations.append(seconds)
    span = sorted(durations)[len(durations) // 2] * 1.3
    summary = {"kills": 0, "visible": 0, "absent": 0, "problems": [], "republished": 0, "span_ms": span * 1000}
    for k in range(kills):
        src = make_adapter(work / f"a{k}", seed * 100_000 + k)
        version = content_hash(src)
        status, _ = run_child(url, work / "writer-cache", endpoint, src, rng.uniform(0.0, span))
        summary["kills"] += 1
        visible, problems = check(reader, resolver, version, url)
        summary["visible" if visible else "absent"] += 1
        summary["problems"] += [f"kill {k}: {p}" for p in problems]
        # A later publish of the same files succeeds (from a fresh process's point of view).
        again = publish(open_at(url, work / "writer-cache", endpoint), src, tenant="crash", name="adapter",
                        base=BASE, aliases=("prod",))
        if again.manifest.version == version and resolver.resolve(f"crash/adapter@{version}").version == version:
            summary["republished"] += 1
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
