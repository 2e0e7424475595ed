"""The PEFT adapter format, stated once: file names, LoRA tensor keys, config and header readers.

The registry (hashing, validation, merging), the trainer and the server all read adapters
through here. Only headers are read: no tensor data, no torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loramux.adapters.errors import InvalidRequest

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
PICKLED_WEIGHTS = "adapter_model.bin"  # refused: pickles run code on load

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<kind>[AB])\.weight$")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")

# safetensors dtype codes -> torch-style names
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn",
           "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8"}


@dataclass(frozen=True)
class LoraKey:
    """`base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`, taken apart."""

    module: str  # the full module path (what a merge keys on)
    name: str  # the linear's own name: q_proj
    layer: int | None  # decoder layer index, when the path has one
    kind: Literal["A", "B"]

    @classmethod
    def parse(cls, key: str) -> LoraKey | None:
        """None for tensors that are not LoRA factors (modules_to_save, DoRA magnitudes...)."""
        if (m := _LORA_KEY.match(key)) is None:
            return None
        layer = _LAYER.search(m["module"] + ".")
        return cls(m["module"], m["module"].rsplit(".", 1)[-1], int(layer[1]) if layer else None, m["kind"])

    def key(self) -> str:
        return factor_key(self.module, self.kind)


def factor_key(module: str, kind: Literal["A", "B"]) -> str:
    """The tensor name peft saves a LoRA factor of `module` under."""
    return f"{module}.lora_{kind}.weight"


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


def read_config(adapter_dir: str | Path) -> dict:
    """The adapter's peft config; InvalidRequest when missing or not a JSON object."""
    path = Path(adapter_dir) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InvalidRequest(f"cannot read {CONFIG_FILE}: {e}", param="adapter") from None
    if not isinstance(config, dict):
        raise InvalidRequest(f"{CONFIG_FILE} is not a JSON object", param="adapter")
    return config


def read_header(adapter_dir: str | Path) -> dict[str, TensorInfo]:
    """Every tensor's dtype and shape from the safetensors header; InvalidRequest when unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(Path(adapter_dir) / WEIGHTS_FILE, framework="numpy") as f:
            infos = {}
            for k in f.keys():
                s = f.get_slice(k)
                infos[k] = TensorInfo(_DTYPES.get(s.get_dtype(), s.get_dtype().lower()), tuple(s.get_shape()))
            return infos
    except Exception as e:  # safetensors raises several types for a missing or corrupt file
        raise InvalidRequest(f"{WEIGHTS_FILE} is unreadable or corrupt: {e}", param="adapter") from None


def weights_dtype(adapter_dir: str | Path) -> str | None:
    """The dtype of the adapter's tensors ("mixed" if several; None if unreadable)."""
    try:
        dtypes = {t.dtype for t in read_header(adapter_dir).values()}
    except InvalidRequest:
        return None
    return (dtypes.pop() if len(dtypes) == 1 else "mixed") if dtypes else None


def recorded_base(adapter_dir: str | Path) -> str | None:
    """The base folder or hub id peft wrote when the adapter was saved."""
    return read_config(adapter_dir).get("base_model_name_or_path")
