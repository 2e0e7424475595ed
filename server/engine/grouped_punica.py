"""vLLM's CPU punica wrapper with grouped LoRA ops (`grouped_lora.py`); imports vLLM.

Only `lora_ops.apply()` imports this module, inside vLLM's processes, after its probe has
checked that the installed `PunicaWrapperCPU` has the signatures overridden here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.library import Library
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
from vllm.utils.torch_utils import direct_register_custom_op

from . import grouped_lora as ops

# Each wrapper's current grouping, by its number: the custom op below reads it, so a graph
# traced once by torch.compile (vLLM's DYNAMO_TRACE_ONCE on CPU) still follows every step's
# batch instead of the one it was traced with.
_GROUPS: list[ops.RowGroups] = []
_lib = Library("loramux", "FRAGMENT")


def _lora_linear(y: torch.Tensor, x: torch.Tensor, lora_a: list[torch.Tensor], lora_b: list[torch.Tensor],
                 scale: float, slices: list[int], wrapper: int) -> None:
    ops.lora_linear(_GROUPS[wrapper], y, x, lora_a, lora_b, scale, slices)


def _lora_linear_fake(y, x, lora_a, lora_b, scale, slices, wrapper) -> None:
    return None


def _lora_embedding(y: torch.Tensor, x: torch.Tensor, lora_b: torch.Tensor, add: bool, wrapper: int) -> None:
    ops.expand(_GROUPS[wrapper], y, x, lora_b, 0, None, add)


def _lora_embedding_fake(y, x, lora_b, add, wrapper) -> None:
    return None


# Both run inside the compiled model (linear layers, the input embedding); the logits are not compiled.
direct_register_custom_op("lora_linear", _lora_linear, mutates_args=["y"], fake_impl=_lora_linear_fake,
                          target_lib=_lib)
direct_register_custom_op("lora_embedding", _lora_embedding, mutates_args=["y"], fake_impl=_lora_embedding_fake,
                          target_lib=_lib)


class GroupedPunicaWrapper(PunicaWrapperCPU):
    """Groups the step's rows by adapter in `update_metadata`; every LoRA call reuses that."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._number = len(_GROUPS)
        _GROUPS.append(ops.RowGroups((), None))
        self._tokens = ops.RowGroups((), None)  # rows of the hidden states (linear, embedding)
        self._samples = ops.RowGroups((), None)  # rows of the logits

    def update_metadata(self, mapping, lora_index_to_id, max_loras, vocab_size, **kwargs) -> None:
        super().update_metadata(mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
        self._tokens = _GROUPS[self._number] = ops.RowGroups.build(self.token_lora_indices)
        self._samples = ops.RowGroups.build(self.sampler_indices)

    def add_shrink(self, y, x: torch.Tensor, lora_a_stacked, scale: float, **kwargs: Any):
        x = x.view(-1, x.shape[-1])
        for i, a in enumerate(lora_a_stacked):
            ops.shrink(self._tokens, y[i].view(-1, y[i].shape[-1]), x, a, scale)

    def add_expand(self, y: torch.Tensor, x, lora_b_stacked, output_slices, offset_start: int = 0,
                   add_inputs: bool = True, **kwargs: Any) -> None:
        y2 = y.view(-1, y.shape[-1])
        offset = offset_start
        for i, (b, size) in enumerate(zip(lora_b_stacked, output_slices)):
            ops.expand(self._tokens, y2, x[i], b, offset, size, add_inputs)
            offset += size

    def add_lora_embedding(self, y: torch.Tensor, x: torch.Tensor, lora_b_stacked: torch.Tensor,
                           add_inputs: bool = True, **kwargs: Any) -> None:
        torch.ops.loramux.lora_embedding(y, x, lora_b_stacked, bool(add_inputs), self._number)

    def add_lora_linear(self, y: torch.Tensor, x: torch.Tensor, lora_a_stacked, lora_b_stacked,
                        scale: float, output_slices, *, buffer=None, **kwargs: Any) -> None:
        torch.ops.loramux.lora_linear(y.view(-1, y.shape[-1]), x.view(-1, x.shape[-1]), list(lora_a_stacked),
                                      list(lora_b_stacked), float(scale), list(output_slices), self._number)

    def add_lora_logits(self, y: torch.Tensor, x: torch.Tensor, lora_a_stacked: torch.Tensor,
                        lora_b_stacked: torch.Tensor, scale, *, buffer=None, **kwargs: Any) -> None:
        y2, x2 = y.view(-1, y.shape[-1]), x.view(-1, x.shape[-1])
        h = torch.zeros(x2.shape[0], lora_b_stacked.shape[-1], dtype=torch.float32, device=x2.device)
        ops.shrink(self._samples, h, x2, lora_a_stacked, scale)
        ops.expand(self._samples, y2, h, lora_b_stacked, 0, None, True)
