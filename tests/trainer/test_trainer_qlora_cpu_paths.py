"""QLoRA works whichever bitsandbytes CPU path the machine would take.

bitsandbytes picks its CPU path per 4-bit layer from `has_avx512bf16()` when the layer is
built (see loramux/trainer/bnb_cpu.py). CI machines differ in CPU, so each test forces both
answers here: a regression on either path fails on any machine. The bases are small and
shaped on purpose: `odd` has an MLP width that is not a multiple of 32 (the packed layout
asserts on it), `even` has only multiples of 32 (the packed conversion succeeds, and then
silently breaks training: the "no-grad forward before training" trap).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from loramux.trainer.tiny_base import TinyBaseConfig, build_tiny

FAST = ["training.threads=1"]
SHAPES = {
    "odd": TinyBaseConfig(hidden_size=128, intermediate_size=344, num_hidden_layers=2),
    "even": TinyBaseConfig(hidden_size=128, intermediate_size=384, num_hidden_layers=2),
}


@pytest.fixture(scope="module")
def small_bases(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("small-bases")
    return {name: build_tiny(root / name, seed=0, cfg=cfg, steps=40) for name, cfg in SHAPES.items()}


@pytest.fixture(params=["avx512bf16", "plain"])
def cpu_path(request, monkeypatch) -> str:
    """Make bitsandbytes build its 4-bit layers as on a CPU with (or without) AVX512-BF16."""
    import bitsandbytes.nn.modules as bnb_modules

    has = request.param == "avx512bf16"
    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: has)
    assert bnb_modules.Linear4bit(8, 32).support_avx512bf16_for_cpu is has  # the switch took
    return request.param


@pytest.fixture
def no_grad_forward_before_training(monkeypatch):
    """Every QLoRA model the trainer loads first runs a no-grad eval forward, as a user's
    sanity check or a pre-training eval would; returns the packed-layout flags it left."""
    from loramux.trainer import methods

    seen: list[bool] = []
    qlora = methods.METHODS["qlora"]

    def load_and_run(cfg):
        loaded = qlora.load(cfg)
        loaded.model.eval()
        with torch.no_grad():
            loaded.model(input_ids=torch.tensor([[1, 2, 3, 4, 5]]))
        loaded.model.train()
        seen.extend(getattr(p.quant_state, "packing_format_for_cpu", False)
                    for p in loaded.model.parameters() if getattr(p, "quant_state", None) is not None)
        return loaded

    monkeypatch.setitem(methods.METHODS, "qlora", dataclasses.replace(qlora, load=load_and_run))
    return seen


@pytest.mark.parametrize("shape", SHAPES)
def test_qlora_trains_evaluates_publishes_and_merges(shape, cpu_path, small_bases, demo_data,
                                                    no_grad_forward_before_training, tmp_path):
    from loramux.adapters.registry import Resolver
    from loramux.adapters.store import open_store
    from loramux.trainer.config import load_config, recipe_path
    from loramux.trainer.merge import merge_into_base
    from loramux.trainer.tenant import add_tenant

    base = small_bases[shape]
    train, held = demo_data["robot"]
    cfg = load_config(recipe_path("qlora"), [f"base={base}", f"data.train={train}", f"data.eval={held}",
                                             f"output_dir={tmp_path / 'run'}", *FAST])
    result = add_tenant(cfg, tenant="acme", name=f"{shape}-{cpu_path}", store=str(tmp_path / "store"))

    assert no_grad_forward_before_training and not any(no_grad_forward_before_training)  # never packed
    m = result.metrics
    assert m["score"] >= 0.95 and m["base_score"] <= 0.05, m["eval"]["samples"]
    assert m["eval_loss"] == m["eval_loss"]  # trainer.evaluate() on the 4-bit model ran (not NaN)
    adapter = Resolver(open_store(str(tmp_path / "store"))).resolve(f"acme/{shape}-{cpu_path}").path
    merged = merge_into_base(adapter, base, tmp_path / "merged")
    assert (merged / "config.json").is_file()
