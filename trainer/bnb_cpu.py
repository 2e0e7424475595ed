"""Keep bitsandbytes' in-place CPU inference layout off 4-bit models that train.

bitsandbytes 0.50 on CPUs with AVX512-BF16 (`Linear4bit.support_avx512bf16_for_cpu`, set
from `has_avx512bf16()` when each layer is built) converts a layer's 4-bit weight *in
place* to a packed inference layout the first time it runs in eval mode without grad
(`_convert_weight_packed_for_cpu`). On a model that trains, that is wrong twice over:

- the conversion asserts the layer's output size is a multiple of 32, so a base like the
  tiny one (MLP width 688) crashes in `trainer.evaluate()`, and so would any user's base
  with such a layer;
- the weight stays packed when training resumes, and `matmul_4bit` then takes the packed
  `gemv_4bit` path, which has no autograd: a no-grad forward before training (or an eval
  between steps) silently breaks QLoRA.

A training model never needs that layout (evaluation of the result runs on a fresh 16-bit
model, see evaluate.py), so every 4-bit layer of a model the trainer loads takes the plain
path on every CPU: the flag bitsandbytes reads in `forward` is cleared per layer. Machines
without AVX512-BF16 already take that path, so behaviour is the same on every x86 CPU.
"""

from __future__ import annotations


def use_plain_4bit_path(model) -> int:
    """Clear bitsandbytes' AVX512-BF16 inference switch on every 4-bit layer; returns how many."""
    from bitsandbytes.nn import Linear4bit

    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)
