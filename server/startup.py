"""Checks that run before anything reaches the engine: refuse bad adapters up front."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.errors import InvalidRequest
from loramux.adapters.manifest import MANIFEST_FILE, Manifest
from loramux.adapters.names import AdapterRef
from loramux.adapters.validation import validate_adapter

from .settings import ServerSettings

log = logging.getLogger("loramux.server")


@functools.lru_cache(maxsize=4)
def _base_spec(base: Path) -> BaseSpec:
    """Read once per server: it hashes the base's config and tokenizer files."""
    return BaseSpec.from_dir(base)


def _manifest(path: Path) -> Manifest | None:
    """The registry's record of a fetched version (base fingerprint, chat template, hash); None elsewhere."""
    try:
        return Manifest.model_validate_json((path / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise InvalidRequest(f"{path / MANIFEST_FILE} is not a loramux manifest: {exc}", param="lora_path") from None


def validate_for_serving(name: str, path: Path, settings: ServerSettings) -> None:
    """Raise AdapterInvalid (every problem listed) unless `path` can be served on the base."""
    if not path.is_dir():
        raise InvalidRequest(f"adapter {name}: {path} is not a directory holding a PEFT adapter "
                             "(adapter_config.json + adapter_model.safetensors)", param="lora_path")
    report = validate_adapter(path, base=_base_spec(settings.base.resolve()),
                              max_rank=settings.max_lora_rank, manifest=_manifest(path))
    report.raise_for_errors()
    for w in report.warnings:
        log.warning("adapter %s: %s", name, w.message)


def validate_settings(settings: ServerSettings) -> None:
    """All configured adapters, all problems at once, before the (slow) engine starts."""
    if not (settings.base / "config.json").is_file():
        raise InvalidRequest(f"--base {settings.base}: no config.json; point it at a model directory",
                             param="base")
    problems = []
    for name, path in settings.adapters.items():
        try:
            AdapterRef.parse(name)
            validate_for_serving(name, path, settings)
        except InvalidRequest as exc:
            problems.append(f"--adapter {name}={path}: {exc.message}")
    if problems:
        raise InvalidRequest("cannot serve these adapters:\n" + "\n".join(problems), param="adapter")
