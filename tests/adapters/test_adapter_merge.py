"""Merging adapters: `cat` is exact; `linear`, TIES and DARE are peft's own arithmetic."""

from __future__ import annotations

import pytest
import torch

from loramux.adapters.errors import InvalidRequest
from loramux.adapters.merge import MERGES, load_lora, merge_adapters, merged_name
from loramux.adapters.validation import validate_adapter

Q = "base_model.model.model.layers.1.self_attn.q_proj"
K = "base_model.model.model.layers.1.self_attn.k_proj"


def delta(lora, module):
    a, b = lora.modules[module]
    return b @ a


def test_the_registry_names_every_strategy():
    assert sorted(MERGES) == ["cat", "dare_linear", "dare_ties", "linear", "ties"]


def test_cat_is_exact_across_ranks_and_targets(make_adapter, tmp_path, base_spec):
    one = make_adapter(seed=1, r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    two = make_adapter(seed=2, r=4, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "k_proj"])
    out = merge_adapters([(one, 0.7), (two, 0.3)], tmp_path / "m", "cat")
    merged, a, b = load_lora(out), load_lora(one), load_lora(two)
    assert merged.ranks == {12} and merged.config["lora_alpha"] == 12
    torch.testing.assert_close(delta(merged, Q), 0.7 * delta(a, Q) + 0.3 * delta(b, Q))
    torch.testing.assert_close(delta(merged, K), 0.3 * delta(b, K))  # only `two` touches k_proj
    assert validate_adapter(out, base=base_spec, max_rank=16).problems == []


def test_peft_applies_a_merged_adapter_as_the_sum_of_deltas(make_adapter, tmp_path, tiny_base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    one, two = make_adapter(seed=1), make_adapter(seed=2)
    out = merge_adapters([(one, 1.0), (two, 1.0)], tmp_path / "m", "cat")
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    w0 = base.model.layers[1].self_attn.q_proj.weight.detach().clone()
    merged = PeftModel.from_pretrained(base, out).merge_and_unload()
    expected = w0 + delta(load_lora(one), Q) + delta(load_lora(two), Q)
    torch.testing.assert_close(merged.model.layers[1].self_attn.q_proj.weight, expected, atol=1e-5, rtol=1e-4)


def _peft_merged_deltas(tiny_base, parts, combination, **kw):
    """peft's add_weighted_adapter on the same adapters: module -> merged ΔW."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), parts[0][0], adapter_name="p0")
    for i, (path, _) in enumerate(parts[1:], 1):
        model.load_adapter(path, adapter_name=f"p{i}")
    model.add_weighted_adapter([f"p{i}" for i in range(len(parts))], [w for _, w in parts], "merged",
                               combination_type=combination, **kw)
    layer = model.base_model.model.model.layers[1].self_attn
    return {Q: layer.q_proj.get_delta_weight("merged"), K: layer.k_proj.get_delta_weight("merged")}


def test_linear_is_pefts_linear(make_adapter, tmp_path, tiny_base):
    one = make_adapter(seed=1, r=8, lora_alpha=16, target_modules=["q_proj", "k_proj"])
    two = make_adapter(seed=2, r=8, lora_alpha=32, target_modules=["q_proj", "k_proj"])
    parts = [(one, 0.7), (two, 0.3)]
    out = load_lora(merge_adapters(parts, tmp_path / "m", "linear"))
    assert out.ranks == {8}
    for module, expected in _peft_merged_deltas(tiny_base, parts, "linear").items():
        torch.testing.assert_close(delta(out, module), expected, atol=1e-6, rtol=1e-4)
    alone = load_lora(merge_adapters([(one, 0.5)], tmp_path / "half", "linear"))  # one adapter: w·ΔW exactly
    torch.testing.assert_close(delta(alone, Q), 0.5 * delta(load_lora(one), Q))
    with pytest.raises(InvalidRequest) as err:
        merge_adapters([(one, 1), (make_adapter(seed=2, r=4), 1)], tmp_path / "x", "linear")
    assert err.value.param == "merge"


def test_ties_is_pefts_ties_brought_to_rank(make_adapter, tmp_path, tiny_base):
    one = make_adapter(seed=1, r=8, target_modules=["q_proj", "k_proj"])
    two = make_adapter(seed=2, r=8, target_modules=["q_proj", "k_proj"])
    parts = [(one, 1.0), (two, 0.5)]
    out = load_lora(merge_adapters(parts, tmp_path / "m", "ties", density=0.5))
    expected = _peft_merged_deltas(tiny_base, parts, "ties_svd", density=0.5)
    for module in (Q, K):
        err = (delta(out, module) - expected[module]).norm() / expected[module].norm()
        assert err < 1e-3, (module, float(err))  # randomized vs full SVD to the same rank


def test_dare_is_seeded_and_full_density_is_the_plain_weighted_sum(make_adapter, tmp_path):
    one, two = make_adapter(seed=1, r=4), make_adapter(seed=2, r=4)
    parts = [(one, 0.6), (two, 0.4)]
    a = load_lora(merge_adapters(parts, tmp_path / "a", "dare_linear", density=0.3, seed=7))
    b = load_lora(merge_adapters(parts, tmp_path / "b", "dare_linear", density=0.3, seed=7))
    c = load_lora(merge_adapters(parts, tmp_path / "c", "dare_linear", density=0.3, seed=8))
    torch.testing.assert_close(delta(a, Q), delta(b, Q))
    assert not torch.allclose(delta(a, Q), delta(c, Q))
    full = load_lora(merge_adapters(parts, tmp_path / "f", "dare_linear", density=1.0, rank=8))
    exact = 0.6 * delta(load_lora(one), Q) + 0.4 * delta(load_lora(two), Q)
    torch.testing.assert_close(delta(full, Q), exact, atol=1e-5, rtol=1e-3)


def test_ties_of_one_adapter_at_full_density_is_that_adapter(adapter_dir, tmp_path):
    out = merge_adapters([(adapter_dir, 1.0)], tmp_path / "m", "ties", density=1.0)
    torch.testing.assert_close(delta(load_lora(out), Q), delta(load_lora(adapter_dir), Q), atol=1e-5, rtol=1e-4)
    assert load_lora(out).ranks == {8}


def test_unknown_strategy_is_a_400_on_merge(adapter_dir, tmp_path):
    with pytest.raises(InvalidRequest) as err:
        merge_adapters([(adapter_dir, 1.0)], tmp_path / "m", "average")
    assert (err.value.param, err.value.status_code) == ("merge", 400)


def test_merged_names_are_stable_and_tell_combinations_apart():
    assert merged_name(["a", "b"], [1, 1], "cat") == merged_name(["a", "b"], [1.0, 1.0], "cat")
    assert merged_name(["a", "b"], [1, 1], "cat") != merged_name(["a", "b"], [0.7, 0.3], "cat")
    assert merged_name(["a", "b"], [1, 1], "cat") != merged_name(["a", "b"], [1, 1], "ties", density=0.5)


def test_a_merge_keeps_the_inputs_dtype(adapter_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    half = tmp_path / "half"
    shutil.copytree(adapter_dir, half)
    weights = half / "adapter_model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(weights).items()}, weights)
    out = merge_adapters([(half, 1.0), (half, 1.0)], tmp_path / "m", "cat")
    assert {t.dtype for t in load_file(out / "adapter_model.safetensors").values()} == {torch.bfloat16}
    mixed = merge_adapters([(half, 1.0), (adapter_dir, 1.0)], tmp_path / "mixed", "cat")
    assert {t.dtype for t in load_file(mixed / "adapter_model.safetensors").values()} == {torch.float32}
