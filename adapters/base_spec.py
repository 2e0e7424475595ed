"""What an adapter needs to know about its base: identity, fingerprint and layer shapes.

Read from the base's `config.json`, identity file, tokenizer files and chat template (no
weights, no torch), so the server can check an adapter against its base before it asks the
engine to load anything. The fingerprint covers all of them: the same architecture with other
weights (the identity file names them: a seed, a source file's sha256), another vocabulary or
another chat template is another base.
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
# What the weights are: the tiny base's seed, an imported GGUF's sha256 and dtype. Two bases of
# one shape are still different bases. Its `provenance` (file name, package, license...) is for
# people and is not hashed: the same GGUF renamed, or fetched another way, is the same base.
IDENTITY_FILE = _IDENTITY_FILE = "loramux_base.json"
_UNHASHED_IDENTITY = {"provenance"}

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

    Also recorded on its own (manifests, the `chat_template` check): a template edit changes no
    weight, yet an adapter trained on one template answers prompts rendered with another badly
    and silently, and validation names that problem rather than a bare fingerprint mismatch.
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


def fingerprint(config: dict, identity: dict | None = None, tokenizer: str | None = None,
                chat_template: str | None = None) -> str:
    """sha256 of the base's config (volatile keys dropped), identity, tokenizer and chat-template
    hashes; 16 hex chars.

    A part that is None is left out, so older fingerprints stay what they were: without a chat
    template, what manifests recorded before it joined; without a tokenizer either, the
    config-only fingerprint of schema-1 manifests.
    """
    stable = {k: v for k, v in config.items() if k not in _VOLATILE}
    if isinstance(identity, dict):
        identity = {k: v for k, v in identity.items() if k not in _UNHASHED_IDENTITY}
    doc: dict = {"config": stable, "identity": identity}
    if tokenizer is not None:
        doc["tokenizer"] = tokenizer
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    files = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return files if chat_template is None else with_chat_template(files, chat_template)


def with_chat_template(files_fingerprint: str, chat_template: str) -> str:
    """The fingerprint of a base whose template-free fingerprint is `files_fingerprint` and whose
    chat template hashes to `chat_template`: computable from the two, so a base can tell that a
    recorded fingerprint differs from its own only in the template."""
    return hashlib.sha256(f"{files_fingerprint}+{chat_template}".encode()).hexdigest()[:16]


class BaseSpec(BaseModel):
    """A base model as the registry sees it."""

    model_config = ConfigDict(frozen=True)

    id: str
    fingerprint: str
    """Hash of config.json, identity, tokenizer files and chat template: what manifests record."""
    config_fingerprint: str | None = None
    """Hash of config.json alone (what schema-1 manifests recorded); None means same as `fingerprint`."""
    files_fingerprint: str | None = None
    """Hash without the chat template (what manifests recorded before it joined); None: no template."""
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
        identity_file = path / IDENTITY_FILE
        identity = json.loads(identity_file.read_text()) if identity_file.is_file() else None
        return cls.from_config(config, model_id or path.name, identity, tokenizer_hash(path),
                               chat_template_hash(path))

    @classmethod
    def from_config(cls, config: dict, model_id: str, identity: dict | None = None,
                    tokenizer: str | None = None, chat_template: str | None = None) -> BaseSpec:
        """Describe a base from its parsed `config.json` (and the hashes of its tokenizer files and
        chat template)."""
        quant = config.get("quantization_config") or {}
        if quant.get("load_in_4bit"):
            quantization = quant.get("bnb_4bit_quant_type", "nf4")
        else:
            quantization = "int8" if quant.get("load_in_8bit") else None
        return cls(
            id=model_id, fingerprint=fingerprint(config, identity, tokenizer, chat_template),
            config_fingerprint=fingerprint(config, identity) if tokenizer or chat_template else None,
            files_fingerprint=fingerprint(config, identity, tokenizer) if chat_template else None,
            shape=BaseShape.from_config(config), quantization=quantization, chat_template=chat_template)

    def matches(self, recorded: str, chat_template: str | None = None) -> bool:
        """Does a manifest's recorded fingerprint name this base's weights and tokenizer?

        Older manifests recorded less (no chat template; schema 1: config only). Given the
        manifest's own `chat_template` hash, a fingerprint that differs from this base's only in
        the template still matches: the `chat_template` check reports that, by name.
        """
        if recorded in (self.fingerprint, self.config_fingerprint, self.files_fingerprint):
            return True
        files = self.files_fingerprint or self.fingerprint
        return chat_template is not None and recorded == with_chat_template(files, chat_template)
