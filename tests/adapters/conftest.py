"""Fixtures for the registry: real peft adapters on the tiny base, and both store backends."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.manifest import Manifest
from loramux.adapters.peft_format import CONFIG_FILE, WEIGHTS_FILE
from loramux.adapters.store.local import LocalStore
from s3_server import client_kwargs  # tests/adapters/s3_server.py


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


@pytest.fixture
def s3_store(s3_endpoint: str, tmp_path: Path):
    """An S3Store on a fresh prefix of the shared bucket, with its own cache folder."""
    from loramux.adapters.store.s3 import S3Store

    return S3Store("adapters", tmp_path / "cache", prefix=f"t-{uuid.uuid4().hex[:8]}",
                   **client_kwargs(s3_endpoint))


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """Each store contract test runs on both backends."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return request.getfixturevalue("s3_store")
