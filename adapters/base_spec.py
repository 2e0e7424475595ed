"""What an adapter needs to know about its base: identity, fingerprint and layer shapes.

Read from the base's `config.json` alone (no weights, no torch), so the server can check
an adapter against its base before it asks the engine to load anything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from loramux.adapters.errors import InvalidRequest

# Keys that change with the library or the loading path, not with the model itself.
_VOLATILE = {"transformers_version", "_name_or_path", "torch_dtype", "dtype", "use_cache",
             "quantization_config", "_commit_hash"}
# The tiny base records its seed here: two tiny bases of one shape are still different bases.
_IDENTITY_FILE = "loramux_base.json"

Quantization = Literal["nf4", "fp4", "int8"]


def fingerprint(config: dict, identity: dict | None = None) -> str:
    """sha256 of the base's config (volatile keys dropped), canonical JSON; 16 hex chars."""
    stable = {k: v for k, v in config.items() if k not in _VOLATILE}
    blob = json.dumps({"config": stable, "identity": identity}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class BaseSpec(BaseModel):
    """A base model as the registry sees it."""

    model_config = ConfigDict(frozen=True)

    id: str
    fingerprint: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    quantization: Quantization | None = None

    @classmethod
    def from_dir(cls, path: str | Path, model_id: str | None = None) -> BaseSpec:
        """Describe the base in `path` (a Hugging Face model folder)."""
        path = Path(path)
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise InvalidRequest(f"cannot read base model config in {path}: {e}", param="base") from None
        identity_file = path / _IDENTITY_FILE
        identity = json.loads(identity_file.read_text()) if identity_file.is_file() else None
        return cls.from_config(config, model_id or path.name, identity)

    @classmethod
    def from_config(cls, config: dict, model_id: str, identity: dict | None = None) -> BaseSpec:
        """Describe a base from its parsed `config.json`."""
        heads = config["num_attention_heads"]
        quant = config.get("quantization_config") or {}
        if quant.get("load_in_4bit"):
            quantization = quant.get("bnb_4bit_quant_type", "nf4")
        else:
            quantization = "int8" if quant.get("load_in_8bit") else None
        return cls(
            id=model_id, fingerprint=fingerprint(config, identity),
            hidden_size=config["hidden_size"], intermediate_size=config["intermediate_size"],
            num_hidden_layers=config["num_hidden_layers"], num_attention_heads=heads,
            num_key_value_heads=config.get("num_key_value_heads", heads),
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            quantization=quantization)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of every LoRA-targetable linear in one decoder layer."""
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        h, i = self.hidden_size, self.intermediate_size
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
