"""The manifest of one published adapter version, and the content hash that names it.

A version is exactly the adapter files vLLM and peft load (`adapter_config.json`,
`adapter_model.safetensors`); its name is a sha256 over them, so two publishes of the same
bytes are the same version and a flipped bit anywhere is detectable before load.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.errors import InvalidRequest
from loramux.adapters.names import SHORT_VERSION, AdapterRef, Segment
from loramux.adapters.peft_format import ADAPTER_FILES, read_config, weights_dtype

MANIFEST_FILE = "manifest.json"

Method = Literal["lora", "qlora"]

def loramux_version() -> str:
    """The installed loramux distribution's version ("unknown" when run from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loramux")
    except PackageNotFoundError:
        return "unknown"


class Quantization(BaseModel):
    """How the base was quantized while a QLoRA adapter trained on it (bitsandbytes settings)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    bits: Literal[4, 8] = 4
    quant_type: str = Field("nf4", description="nf4 | fp4 (4-bit) or int8")
    double_quant: bool | None = None
    compute_dtype: str | None = None


def file_sha256(path: Path) -> str:
    """Streaming sha256 of one file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def content_hash(adapter_dir: str | Path) -> str:
    """The version of the adapter in `adapter_dir`: sha256 over the names and hashes of its files."""
    outer = hashlib.sha256()
    for name in ADAPTER_FILES:
        outer.update(f"{name}\0{file_sha256(Path(adapter_dir) / name)}\n".encode())
    return outer.hexdigest()


class Manifest(BaseModel):
    """Everything the platform records about one immutable adapter version."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1, 2] = Field(2, description="1: no dtype/quantization/loramux_version, "
                                          "fingerprint over config.json only")
    tenant: Segment
    name: Segment
    version: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 content hash of the adapter files")
    base_model: str = Field(description="served id of the base the adapter was trained on")
    base_fingerprint: str = Field(description="hash of the base's config.json and tokenizer files")
    chat_template: str | None = Field(None, description="hash of the chat template it was trained with")
    method: Method = "lora"
    quantization: Quantization | None = Field(None, description="4-bit settings of the base (qlora only)")
    rank: int = Field(gt=0)
    alpha: float
    target_modules: list[str]
    dtype: str | None = Field(None, description="dtype of the adapter tensors (float32, bfloat16...)")
    data_hash: str | None = Field(None, description="hash of the training data")
    eval_scores: dict[str, float] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    loramux_version: str | None = Field(None, description="loramux release that published it")

    @classmethod
    def create(cls, adapter_dir: str | Path, *, tenant: str, name: str, base: BaseSpec,
               method: Method = "lora", data_hash: str | None = None,
               eval_scores: dict[str, float] | None = None,
               quantization: Quantization | dict | None = None) -> Manifest:
        """Describe the adapter in `adapter_dir`: rank, alpha and targets come from its config.

        `quantization` (qlora): the bitsandbytes settings it trained under; when omitted for a
        qlora adapter, the base's own quantization if it has one, else 4-bit NF4.
        """
        config = read_config(adapter_dir)
        targets = config.get("target_modules") or []
        if method == "qlora" and quantization is None:
            quantization = Quantization(bits=8 if base.quantization == "int8" else 4,
                                        quant_type=base.quantization or "nf4")
        elif method != "qlora" and quantization is not None:
            raise InvalidRequest("quantization settings only apply to method 'qlora'", param="quantization")
        return cls(tenant=tenant, name=name, version=content_hash(adapter_dir), base_model=base.id,
                   base_fingerprint=base.fingerprint, chat_template=base.chat_template, method=method,
                   quantization=Quantization.model_validate(quantization) if quantization is not None else None,
                   rank=config.get("r", 0), alpha=config.get("lora_alpha", config.get("r", 0)),
                   target_modules=sorted([targets] if isinstance(targets, str) else targets),
                   dtype=weights_dtype(adapter_dir), data_hash=data_hash, eval_scores=eval_scores or {},
                   loramux_version=loramux_version())

    @property
    def ref(self) -> AdapterRef:
        """The exact, immutable reference to this version."""
        return AdapterRef(tenant=self.tenant, name=self.name, selector=self.version)

    @property
    def short_version(self) -> str:
        return self.version[:SHORT_VERSION]

    @property
    def served_name(self) -> str:
        """`tenant/name@shortversion`, what /v1/models lists for a pinned version."""
        return f"{self.tenant}/{self.name}@{self.short_version}"

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"
