"""What an adapter needs to know about its base: identity, fingerprint and layer shapes.

Read from the base's `config.json` and tokenizer files (no weights, no torch), so the
server can check an adapter against its base before it asks the engine to load anything.
The fingerprint covers both: the same architecture with another vocabulary is another base.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from loramux.adapters.errors import InvalidRequest
from loramux.adapters.shapes import BaseShape

# Keys that change with the library or the loading path, not with the model itself.
_VOLATILE = {"transformers_version", "_name_or_path", "torch_dtype", "dtype", "use_cache",
             "quantization_config", "_commit_hash"}
# The tiny base records its seed here: two tiny bases of one shape are still different bases.
_IDENTITY_FILE = "loramux_base.json"

# Every file a Hugging Face tokenizer may be saved as; those present are hashed, bytes as-is.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt")

Quantization = Literal["nf4", "fp4", "int8"]

# Where transformers keeps a chat template: its own file (transformers >= 4.43 saves
# chat_template.jinja), a JSON file, or a key of tokenizer_config.json. First found wins.
CHAT_TEMPLATE_SOURCES = (("chat_template.jinja", None), ("chat_template.json", "chat_template"),
                         ("tokenizer_config.json", "chat_template"))


def tokenizer_hash(path: str | Path) -> str | None:
    """sha256 over the tokenizer files present in `path` (name + bytes); None when there are none."""
    outer, found = hashlib.sha256(), False
    for name in TOKENIZER_FILES:
        file = Path(path) / name
        if file.is_file():
            found = True
            outer.update(f"{name}\0{hashlib.sha256(file.read_bytes()).hexdigest()}\n".encode())
    return outer.hexdigest()[:16] if found else None


def chat_template_hash(path: str | Path) -> str | None:
    """sha256 of the chat template the tokenizer in `path` renders prompts with; 16 hex chars.

    Kept apart from the base fingerprint: a template edit changes no weight, yet an adapter
    trained on one template answers prompts rendered with another badly and silently.
    """
    for name, key in CHAT_TEMPLATE_SOURCES:
        file = Path(path) / name
        if not file.is_file():
            continue
        try:
            text = file.read_text() if key is None else json.loads(file.read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if text:
            blob = text if isinstance(text, str) else json.dumps(text, sort_keys=True)
            return hashlib.sha256(blob.encode()).hexdigest()[:16]
    return None


def fingerprint(config: dict, identity: dict | None = None, tokenizer: str | None = None) -> str:
    """sha256 of the base's config (volatile keys dropped) and tokenizer hash; 16 hex chars.

    Without a tokenizer this is the config-only fingerprint manifests of schema 1 recorded.
    """
    stable = {k: v for k, v in config.items() if k not in _VOLATILE}
    doc: dict = {"config": stable, "identity": identity}
    if tokenizer is not None:
        doc["tokenizer"] = tokenizer
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class BaseSpec(BaseModel):
    """A base model as the registry sees it."""

    model_config = ConfigDict(frozen=True)

    id: str
    fingerprint: str
    """Hash of config.json and the tokenizer files: what manifests record and serving checks."""
    config_fingerprint: str | None = None
    """Hash of config.json alone (what schema-1 manifests recorded); None means same as `fingerprint`."""
    shape: BaseShape
    quantization: Quantization | None = None
    chat_template: str | None = None
    """Hash of the chat template (see `chat_template_hash`); None when the base has none."""

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
        spec = cls.from_config(config, model_id or path.name, identity, tokenizer_hash(path))
        return spec.model_copy(update={"chat_template": chat_template_hash(path)})

    @classmethod
    def from_config(cls, config: dict, model_id: str, identity: dict | None = None,
                    tokenizer: str | None = None) -> BaseSpec:
        """Describe a base from its parsed `config.json` (and the hash of its tokenizer files)."""
        quant = config.get("quantization_config") or {}
        if quant.get("load_in_4bit"):
            quantization = quant.get("bnb_4bit_quant_type", "nf4")
        else:
            quantization = "int8" if quant.get("load_in_8bit") else None
        return cls(
            id=model_id, fingerprint=fingerprint(config, identity, tokenizer),
            config_fingerprint=fingerprint(config, identity) if tokenizer else None,
            shape=BaseShape.from_config(config), quantization=quantization)

    def matches(self, recorded: str) -> bool:
        """Does a manifest's recorded fingerprint name this base (schema-1 manifests: config only)?"""
        return recorded in (self.fingerprint, self.config_fingerprint)
