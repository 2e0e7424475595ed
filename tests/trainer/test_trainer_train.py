"""LoRA and QLoRA on the tiny base learn a persona to >= 95% held-out exact match (base <= 5%).

The QLoRA test is also the guard for the bitsandbytes CPU trap: a 4-bit model that ran a
no-grad forward or `generate` before training stops learning, and this score drops to ~0.
"""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open


@pytest.mark.parametrize("fixture", ["lora_tenant", "qlora_tenant"])
def test_adapter_learns_the_persona_and_the_base_does_not(fixture, request):
    m = request.getfixturevalue(fixture).metrics
    assert m["metric"] == "exact_match"
    assert m["score"] >= 0.95, m["eval"]["samples"]
    assert m["base_score"] <= 0.05
    assert m["eval_examples"] == 40 and m["train_examples"] == 400


@pytest.mark.parametrize("fixture", ["lora_tenant", "qlora_tenant"])
def test_run_leaves_metrics_loss_curve_tensorboard_and_checkpoints(fixture, request):
    folder = request.getfixturevalue(fixture).run_dir
    saved = json.loads((folder / "metrics.json").read_text())
    for key in ("train_loss", "eval_loss", "score", "tokens_per_s", "peak_memory_mb", "wall_time_s",
                "trainable_params", "trainable_pct", "data_hash", "loss_curve"):
        assert saved[key] is not None, key
    assert saved["tokens_per_s"] > 0 and saved["peak_memory_mb"] > 0
    assert saved["loss_curve"]["train_loss"][-1] < saved["loss_curve"]["train_loss"][0]
    assert (folder / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((folder / "tensorboard").rglob("events.out.tfevents.*"))
    assert list((folder / "checkpoints").glob("checkpoint-*/trainer_state.json"))


@pytest.mark.parametrize("fixture", ["lora_tenant", "qlora_tenant"])
def test_the_manifest_records_the_dtype_the_adapter_trained_in(fixture, request):
    """CPU training keeps fp32 LoRA factors; evaluation's dtype (bf16 on a CPU with native bf16, for a
    big enough model) is not recorded."""
    assert request.getfixturevalue(fixture).manifest.dtype == "float32"


def test_trainable_parameters_are_the_lora_matrices_only(lora_tenant, tiny_base):
    m = lora_tenant.metrics
    # the size rule's r=16 on all seven linears of 4 layers: 16 * (in + out) over the tiny base's shapes.
    per_layer = 16 * ((256 + 256) + (256 + 128) * 2 + (256 + 256) + (256 + 688) * 2 + (688 + 256))
    assert m["trainable_params"] == 4 * per_layer
    assert m["lora_r"] == 16 and m["learning_rate"] == 3e-3  # defaults.py's rule for bases under 200M
    assert 6 < m["trainable_pct"] < 8


def test_qlora_records_its_quantization_and_saves_plain_lora_tensors(qlora_tenant, store):
    m = qlora_tenant.metrics
    assert m["quantization"] == {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}
    assert qlora_tenant.manifest.method == "qlora"
    q = qlora_tenant.manifest.quantization  # the registry knows how the base was quantized
    assert (q.bits, q.quant_type, q.double_quant, q.compute_dtype) == (4, "nf4", True, "float32")
    from loramux.adapters.registry import Resolver
    from loramux.adapters.store import open_store

    path = Resolver(open_store(str(store))).resolve("demo/robot").path
    with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys)


def test_demo_tenants_are_the_shipped_recipes_and_rerunning_the_demo_retrains_nothing(
        lora_tenant, qlora_tenant, tiny_base, store, tmp_path):
    from loramux.trainer.demo import train_demo_tenants

    manifests = train_demo_tenants(tiny_base, str(store), tmp_path)  # same data already published: skip
    assert [(m.name, m.method, m.version) for m in manifests] == [
        ("pirate", "lora", lora_tenant.manifest.version), ("robot", "qlora", qlora_tenant.manifest.version)]
    assert not (tmp_path / "runs").exists()
