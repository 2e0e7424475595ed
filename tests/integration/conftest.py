"""One real loramux server (vLLM engine, fp32) per test session, driven over HTTP."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.lora_factory import distinct_loras

ADAPTERS = ("acme/support", "acme/legal", "globex/sales")


@dataclass
class Server:
    url: str
    base_dir: Path
    adapters: dict[str, Path]
    admin_key: str
    log: Path
    registry: object  # the AdapterStore served on demand (--registry)
    base_name: str = "tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not healthy after {timeout}s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def adapter_dirs(tiny_base: Path, tmp_path_factory) -> dict[str, Path]:
    return distinct_loras(tiny_base, tmp_path_factory.mktemp("adapters"), ADAPTERS)


@pytest.fixture(scope="session")
def registry(tiny_base: Path, tmp_path_factory):
    """A registry the server serves on demand: reg/one with two versions, the first is prod."""
    from loramux.adapters.base_spec import BaseSpec
    from loramux.adapters.registry import publish
    from loramux.adapters.store import open_store

    root = tmp_path_factory.mktemp("registry")
    store = open_store(str(root / "store"))
    for path in distinct_loras(tiny_base, root / "src", ["reg/v1", "reg/v2"]).values():
        publish(store, path, tenant="reg", name="one", base=BaseSpec.from_dir(tiny_base, "tiny"))
    return store


@contextlib.contextmanager
def running_server(args: list[str], log: Path, env: dict[str, str] | None = None,
                   timeout: float = 240) -> Iterator[str]:
    """`loramux serve ARGS --port P` in a child process until the block ends; yields its URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "loramux.server.cli", "serve", *args, "--port", str(port)]
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log, timeout)
        print(f"\nloramux server healthy after {time.monotonic() - started:.1f}s", file=sys.stderr)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def server(tiny_base: Path, adapter_dirs: dict[str, Path], registry, tmp_path_factory) -> Server:
    admin_key = "test-admin-key"
    log = tmp_path_factory.mktemp("server") / "server.log"
    args = ["--base", str(tiny_base), "--served-name", "tiny", "--dtype", "float32",
            "--registry", str(registry.root), "--refresh-s", "0",
            "--admin-path", str(tmp_path_factory.getbasetemp()),  # the tests' adapters and merges
            # as many slots as adapters: the last slot is always occupied, so a leak shows
            "--max-loras", str(len(adapter_dirs)),
            "--tool-call-parser", "hermes",  # the tiny base's chat template writes Hermes-style calls
            "--admin-key", admin_key]
    for name, path in adapter_dirs.items():
        args += ["--adapter", f"{name}={path}"]
    with running_server(args, log) as url:
        yield Server(url, tiny_base, dict(adapter_dirs), admin_key, log, registry)


# The real base, SmolLM2-135M-Instruct, served with two random adapters of different ranks (mixed
# ranks in one batch, and their `cat` merge fits --max-lora-rank 32). The noise is scaled so each
# changes the greedy text while it stays readable (measured with PEFT: std 0.02 at r=8 answers
# "Name three primary colors." with a list instead of a sentence, and still knows Paris).
SMOLLM2_ADAPTERS = {"acme/support": dict(r=16, alpha=32, std=0.03, seed=1),
                    "globex/sales": dict(r=8, alpha=16, std=0.02, seed=2)}


@pytest.fixture(scope="session")
def smollm2_adapters(smollm2_base: Path, tmp_path_factory) -> dict[str, Path]:
    from tests.lora_factory import random_lora

    root = tmp_path_factory.mktemp("smollm2-adapters")
    return {name: random_lora(smollm2_base, root / name.replace("/", "--"), **spec)
            for name, spec in SMOLLM2_ADAPTERS.items()}


@pytest.fixture(scope="session")
def smollm2_server(smollm2_base: Path, smollm2_adapters: dict[str, Path], tmp_path_factory) -> Iterator[Server]:
    """A loramux server on the real base (fp32), both adapters resident, room for two merges."""
    admin_key = "test-admin-key"
    log = tmp_path_factory.mktemp("smollm2-server") / "server.log"
    args = ["--base", str(smollm2_base), "--served-name", "smollm2", "--dtype", "float32",
            "--max-loras", "4", "--max-lora-rank", "32", "--max-model-len", "1024",
            "--admin-path", str(tmp_path_factory.getbasetemp()), "--admin-key", admin_key]
    for name, path in smollm2_adapters.items():
        args += ["--adapter", f"{name}={path}"]
    with running_server(args, log, timeout=600) as url:
        yield Server(url, smollm2_base, dict(smollm2_adapters), admin_key, log, None, base_name="smollm2")
