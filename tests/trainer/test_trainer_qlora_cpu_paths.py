"""QLoRA works whichever bitsandbytes CPU path the machine would take.

bitsandbytes picks its CPU path per 4-bit layer from `has_avx512bf16()` when the layer is
built (see loramux/trainer/bnb_cpu.py). CI machines differ in CPU, so each test forces both
answers here (in `pool` processes, the four runs side by side): a regression on either path
fails on any machine. The bases are small and shaped on purpose: `odd` has an MLP width that
is not a multiple of 32 (the packed layout asserts on it), `even` has only multiples of 32 (the
packed conversion succeeds, and then silently breaks training: the "no-grad forward before
training" trap).
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


PATHS = ["avx512bf16", "plain"]


def force_path(mp: pytest.MonkeyPatch, path: str) -> None:
    """Make bitsandbytes build its 4-bit layers, and loramux read the CPU (its `auto` dtype for evaluation:
    bf16 or fp32, see loramux.adapters.hardware), as on a CPU with (or without) AVX512-BF16."""
    import bitsandbytes.nn.modules as bnb_modules

    from loramux.adapters.hardware import ENV_FEATURES

    has = path == "avx512bf16"
    mp.setattr(bnb_modules, "has_avx512bf16", lambda: has)
    mp.setenv(ENV_FEATURES, "avx2,avx512f,avx512_bf16" if has else "avx2")
    assert bnb_modules.Linear4bit(8, 32).support_avx512bf16_for_cpu is has  # the switch took


def no_grad_forward_before_training(mp: pytest.MonkeyPatch) -> list[bool]:
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

    mp.setitem(methods.METHODS, "qlora", dataclasses.replace(qlora, load=load_and_run))
    return seen


def add_tenant_on_path(path: str, cfg, name: str, store: str):
    """In a pool process: add_tenant with `path` forced and the no-grad forward before training;
    returns (result, packed-layout flags). The patches end with the call (the process is reused)."""
    from loramux.trainer.tenant import add_tenant

    with pytest.MonkeyPatch.context() as mp:
        force_path(mp, path)
        seen = no_grad_forward_before_training(mp)
        return add_tenant(cfg, tenant="acme", name=name, store=store), seen


@pytest.fixture(scope="module")
def runs(pool, small_bases, demo_data, tmp_path_factory) -> dict:
    """(shape, path) -> (its folder, future of add_tenant_on_path); all four start together."""
    from loramux.trainer.config import load_config, recipe_path

    train, held = demo_data["robot"]
    out = {}
    for shape in SHAPES:
        for path in PATHS:
            root = tmp_path_factory.mktemp(f"{shape}-{path}")
            cfg = load_config(recipe_path("qlora"), [f"base={small_bases[shape]}", f"data.train={train}",
                                                     f"data.eval={held}", f"output_dir={root / 'run'}", *FAST])
            out[shape, path] = root, pool.submit(add_tenant_on_path, path, cfg, f"{shape}-{path}",
                                                 str(root / "store"))
    return out


@pytest.mark.parametrize("cpu_path", [pytest.param(p, marks=pytest.mark.cpu_path(f"bitsandbytes 4-bit: {p}")) for p in PATHS])
@pytest.mark.parametrize("shape", SHAPES)
def test_qlora_trains_evaluates_publishes_and_merges(shape, cpu_path, small_bases, runs, tmp_path):
    from loramux.adapters.registry import Resolver
    from loramux.adapters.store import open_store
    from loramux.trainer.merge import merge_into_base

    root, run = runs[shape, cpu_path]
    result, packed = run.result()
    assert packed and not any(packed)  # the no-grad forward ran on every 4-bit layer and never packed one
    m = result.metrics
    assert m["score"] >= 0.95 and m["base_score"] <= 0.05, m["eval"]["samples"]
    assert m["eval_loss"] == m["eval_loss"]  # trainer.evaluate() on the 4-bit model ran (not NaN)
    adapter = Resolver(open_store(str(root / "store"))).resolve(f"acme/{shape}-{cpu_path}").path
    merged = merge_into_base(adapter, small_bases[shape], tmp_path / "merged")
    assert (merged / "config.json").is_file()
