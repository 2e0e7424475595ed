"""Combine several LoRA adapters into one the engine can load: `cat`, `linear`, `ties`, DARE.

Per-request merges (`"model": "acme/support+acme/legal"`) and `trainer merge` both end
here. Each strategy is a function in MERGES; the arithmetic is peft's own
(`peft.utils.merge_utils`, what `add_weighted_adapter` uses), so a loramux merge equals
peft's. The result is an ordinary peft adapter folder whose scaling is folded into the
weights (lora_alpha == r, so alpha/r == 1):

- `cat`    exact: ΔW = Σ wᵢ·ΔWᵢ. Ranks add up (A stacked on rank, B side by side).
- `linear` peft's `linear`: A and B factors summed separately, each weighted by √(wᵢ·scalingᵢ);
           same rank required; keeps the rank, approximate for several adapters (cross terms),
           exactly wᵢ·ΔWᵢ for one.
- `ties`, `dare_ties`, `dare_linear`: peft's TIES (Yadav et al. 2023) and DARE (Yu et al.
           2023) over the full ΔWᵢ (peft's `*_svd` variants): trim (by magnitude for TIES, at
           random with rescaling for DARE, seeded by `seed`) to `density`, elect signs (the
           `*ties`), combine; then a randomized SVD back to rank `rank` (default: the largest
           input rank). About 1 s per 8B-sized module on CPU: fine for `trainer merge`, slow
           for a live request.

torch and safetensors are imported inside the functions: `import loramux.adapters` stays light.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loramux.adapters.errors import InvalidRequest
from loramux.adapters.peft_format import CONFIG_FILE, WEIGHTS_FILE, LoraKey, factor_key, read_config


@dataclass
class Lora:
    """One input adapter: per module, its A and B factors, each with √(alpha/r) folded in."""

    config: dict
    modules: dict[str, tuple[object, object]]  # module key -> (A [r, in], B [out, r]) as torch tensors
    dtype: object  # the dtype the adapter was saved in; the merge is written back in it

    @property
    def ranks(self) -> set[int]:
        return {a.shape[0] for a, _ in self.modules.values()}


def _scaling(config: dict, module: str, rank: int) -> float:
    """alpha / r (alpha / sqrt(r) with rsLoRA), honouring peft's per-module alpha_pattern."""
    alpha = config.get("lora_alpha", config.get("r", rank))
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){pattern}$", module):
            alpha = value
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def load_lora(path: str | Path) -> Lora:
    """Read a peft LoRA adapter folder; factors come back in float32 with the scaling folded in."""
    import torch
    from safetensors.torch import load_file

    config = read_config(path)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    dtypes = set()
    for key, tensor in load_file(Path(path) / WEIGHTS_FILE).items():
        if lk := LoraKey.parse(key):
            dtypes.add(tensor.dtype)
            pairs.setdefault(lk.module, {})[lk.kind] = tensor.to(torch.float32)
    modules = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise InvalidRequest(f"{path}: {module} lacks lora_{'B' if 'A' in ab else 'A'}", param="adapters")
        scaling = _scaling(config, module, ab["A"].shape[0])
        root = math.sqrt(abs(scaling))  # split over both factors, as peft's `linear` weighs them
        modules[module] = (ab["A"] * math.copysign(root, scaling), ab["B"] * root)
    if not modules:
        raise InvalidRequest(f"{path}: no LoRA A/B tensors to merge", param="adapters")
    return Lora(config=config, modules=modules, dtype=dtypes.pop() if len(dtypes) == 1 else torch.float32)


MergeFn = Callable[..., tuple[object, object]]


def _factors(loras: Sequence[Lora], module: str):
    """Each input's (A, B) for `module`, zeros where an adapter does not touch it."""
    import torch

    a_ref, b_ref = next(lora.modules[module] for lora in loras if module in lora.modules)
    out = []
    for lora in loras:
        if module in lora.modules:
            out.append(lora.modules[module])
        else:
            r = next(iter(lora.ranks))
            out.append((torch.zeros(r, a_ref.shape[1]), torch.zeros(b_ref.shape[0], r)))
    return out


def merge_cat(loras: Sequence[Lora], weights: Sequence[float], module: str, **_: object):
    import torch

    factors = _factors(loras, module)
    return (torch.cat([w * a for (a, _), w in zip(factors, weights, strict=True)], dim=0),
            torch.cat([b for _, b in factors], dim=1))


def merge_linear(loras: Sequence[Lora], weights: Sequence[float], module: str, **_: object):
    import torch
    from peft.utils.merge_utils import task_arithmetic

    factors = _factors(loras, module)
    if len({a.shape[0] for a, _ in factors}) > 1:
        raise InvalidRequest("merge `linear` needs adapters of one rank; use `cat` or `ties`", param="merge")
    root = [math.sqrt(abs(w)) for w in weights]
    signed = torch.tensor([math.copysign(r, w) for r, w in zip(root, weights, strict=True)])
    return (task_arithmetic([a for a, _ in factors], signed),
            task_arithmetic([b for _, b in factors], torch.tensor(root)))


def _full_delta(peft_combiner: str) -> MergeFn:
    """A strategy over full ΔWᵢ with one of peft's combiners, brought back to low rank."""

    def merge(loras: Sequence[Lora], weights: Sequence[float], module: str, *, density: float = 0.5,
              rank: int | None = None, **_: object):
        import torch
        from peft.utils import merge_utils

        deltas = [b @ a for a, b in _factors(loras, module)]
        merged = getattr(merge_utils, peft_combiner)(deltas, torch.tensor(list(weights)), density)
        r = min(rank or max(r for lora in loras for r in lora.ranks), *merged.shape)
        # Randomized SVD: on an 8B-sized 14336x4096 delta, 1.2 s instead of 89 s for the full SVD,
        # 1e-5 relative error against the exact rank-r truncation.
        u, s, v = torch.svd_lowrank(merged, q=min(r + 8, *merged.shape), niter=4)
        return v[:, :r].T.contiguous(), (u[:, :r] * s[:r]).contiguous()
    return merge


MERGES: dict[str, MergeFn] = {"cat": merge_cat, "linear": merge_linear, "ties": _full_delta("ties"),
                              "dare_ties": _full_delta("dare_ties"), "dare_linear": _full_delta("dare_linear")}


def merged_name(versions: Sequence[str], weights: Sequence[float], strategy: str, **options: object) -> str:
    """A stable id for one combination, so the server can reuse a merge it already made."""
    blob = json.dumps([list(versions), [float(w) for w in weights], strategy, options], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def merge_adapters(sources: Sequence[tuple[str | Path, float]], out: str | Path, strategy: str = "cat",
                   **options: object) -> Path:
    """Merge `(adapter_dir, weight)` pairs with `strategy` into a new adapter folder `out`.

    Computes in float32; writes in the inputs' dtype when they share one (else float32).
    """
    import torch
    from safetensors.torch import save_file

    if strategy not in MERGES:
        raise InvalidRequest(f"unknown merge {strategy!r}; known: {', '.join(MERGES)}", param="merge")
    if len(sources) < 1:
        raise InvalidRequest("merge needs at least one adapter", param="adapters")
    loras = [load_lora(path) for path, _ in sources]
    weights = [float(w) for _, w in sources]
    modules = sorted({m for lora in loras for m in lora.modules})
    dtype = loras[0].dtype if len({lora.dtype for lora in loras}) == 1 else torch.float32
    tensors, ranks = {}, set()
    with torch.random.fork_rng(devices=[]):  # DARE drops at random: the same merge, the same bytes
        torch.manual_seed(int(options.pop("seed", 0)))
        factors = {m: MERGES[strategy](loras, weights, m, **options) for m in modules}
    for module, (a, b) in factors.items():
        ranks.add(a.shape[0])
        tensors[factor_key(module, "A")] = a.to(dtype).contiguous()
        tensors[factor_key(module, "B")] = b.to(dtype).contiguous()
    r = max(ranks)
    if len(ranks) > 1:  # an adapter missing from some modules under `cat` would give uneven ranks
        raise InvalidRequest(f"merged ranks differ across modules ({sorted(ranks)})", param="adapters")
    targets = sorted({t for lora in loras for t in (lora.config.get("target_modules") or [])
                      if isinstance(lora.config.get("target_modules"), list)})
    config = {**loras[0].config, "r": r, "lora_alpha": r, "use_rslora": False, "rank_pattern": {},
              "alpha_pattern": {}, "target_modules": targets or loras[0].config.get("target_modules")}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / WEIGHTS_FILE, metadata={"format": "pt"})
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out
