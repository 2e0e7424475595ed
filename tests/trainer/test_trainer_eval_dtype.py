"""Evaluation computes in the dtype the server's `auto` picks on this CPU (so its scores are the
server's), forced both ways; the adapter stays as trained, so its manifest records that dtype."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.hardware import ENV_FEATURES
from loramux.adapters.manifest import Manifest, content_hash
from loramux.trainer.evaluate import load_model
from tests.lora_factory import random_lora


# min_hidden 0 evaluates the tiny base as a model big enough for bf16 (hardware.BF16_MIN_HIDDEN)
@pytest.mark.parametrize("features, min_hidden, dtype", [
    pytest.param(f, h, d, marks=pytest.mark.cpu_path(f"dtype auto: {f}"), id=f"{f}-{h}") for f, h, d in [
        ("avx2", 512, torch.float32), ("avx2,avx512f", 512, torch.float32),
        ("avx2,avx512f,avx512_bf16", 512, torch.float32),  # hidden 256: too small for bf16 to pay
        ("avx2,avx512f,avx512_bf16", 0, torch.bfloat16), ("avx2,avx512f,amx_bf16", 0, torch.bfloat16)]])
def test_evaluation_uses_auto_and_leaves_the_adapter_as_trained(features, min_hidden, dtype, monkeypatch,
                                                                tiny_base: Path, tmp_path: Path):
    from loramux.adapters import hardware

    adapter = random_lora(tiny_base, tmp_path / "a", seed=3)  # saved in fp32, as CPU training saves it
    before = content_hash(adapter)
    monkeypatch.setattr(hardware, "BF16_MIN_HIDDEN", min_hidden)
    monkeypatch.setenv(ENV_FEATURES, features)
    model = load_model(tiny_base, adapter=adapter)
    assert model.get_base_model().model.embed_tokens.weight.dtype == dtype
    assert load_model(tiny_base, dtype="float32").model.embed_tokens.weight.dtype == torch.float32  # asked: kept
    assert content_hash(adapter) == before
    manifest = Manifest.create(adapter, tenant="acme", name="a", base=BaseSpec.from_dir(tiny_base))
    assert manifest.dtype == "float32"
