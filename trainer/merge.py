"""Merge an adapter into its base for deployment: a plain model folder vLLM and transformers load.

The merge always happens on the 16-bit (here fp32) base, loaded fresh from its folder, even
for a QLoRA adapter: merging into 4-bit weights would re-quantize the sum and lose the
adapter's small updates.

`--dtype auto` (the default) writes the base's own stored dtype. Unlike the server's and the
evaluation's `auto`, this machine's CPU does not enter: a merge runs no model, and its file is
served elsewhere, where the server's `auto` picks the compute dtype for that CPU: a bf16 file
written because this CPU has native bf16 would serve rounded weights, upcast, on one without.
"""

from __future__ import annotations

from pathlib import Path

from loramux.adapters.errors import InvalidRequest, NotFound
from loramux.adapters.hardware import checkpoint_dtype
from loramux.adapters.manifest import Manifest
from loramux.adapters.peft_format import CONFIG_FILE, recorded_base
from loramux.adapters.registry import Resolver
from loramux.adapters.settings import StoreSettings


def resolve_adapter(adapter: str, store: StoreSettings | str | None) -> tuple[Path, Manifest | None]:
    """A local adapter folder, or `TENANT/NAME[@VERSION|@ALIAS]` resolved in the registry."""
    local = Path(adapter)
    if (local / CONFIG_FILE).is_file():
        return local, None
    resolved = Resolver(StoreSettings.of(store).open()).resolve(adapter)
    return resolved.path, resolved.manifest


DTYPES = ("auto", "float32", "bfloat16", "float16")


def merge_into_base(adapter_dir: Path, base_dir: Path, out: Path, *, dtype: str = "auto") -> Path:
    """Write base + adapter merged (safetensors, config, tokenizer, generation config) to `out`,
    in `dtype` (`auto`: the base's stored dtype, float32 when its config does not say)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (Path(base_dir) / "config.json").is_file():
        raise NotFound(f"no base model (config.json) in {base_dir}", param="base")
    if dtype not in DTYPES:
        raise InvalidRequest(f"dtype {dtype!r}: use {', '.join(DTYPES)}", param="dtype")
    if dtype == "auto":
        stored = checkpoint_dtype(base_dir)
        dtype = stored if stored in DTYPES[1:] else "float32"
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, dtype))
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


def merge(adapter: str, out: Path, *, base: Path | None = None, store: StoreSettings | str | None = None,
          dtype: str = "auto") -> Path:
    """`trainer merge`: resolve the adapter, find its base (given, or from its config), merge."""
    adapter_dir, manifest = resolve_adapter(adapter, store)
    if base is None:
        recorded = recorded_base(adapter_dir)
        if not recorded or not (Path(recorded) / "config.json").is_file():
            raise InvalidRequest(f"pass --base: the adapter records base {recorded!r}, which is not a local model "
                                 "folder", param="base")
        base = Path(recorded)
    if manifest is not None:
        from loramux.adapters.base_spec import BaseSpec

        spec = BaseSpec.from_dir(base)
        found = spec.fingerprint
        if not spec.matches(manifest.base_fingerprint, manifest.chat_template):
            raise InvalidRequest(f"{adapter} was trained on base {manifest.base_model!r} (fingerprint "
                                 f"{manifest.base_fingerprint}); {base} has fingerprint {found}", param="base")
    return merge_into_base(adapter_dir, base, out, dtype=dtype)
