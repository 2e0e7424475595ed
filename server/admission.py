"""Admission: whether an adapter folder can be served as a name on this base, checked before
the engine sees it (every problem listed), and which registry adapters this base serves."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.errors import InvalidRequest, NotFound
from loramux.adapters.manifest import MANIFEST_FILE, Manifest, content_hash
from loramux.adapters.names import AdapterRef
from loramux.adapters.peft_format import CONFIG_FILE, WEIGHTS_FILE
from loramux.adapters.registry import Resolver
from loramux.adapters.settings import StoreSettings
from loramux.adapters.store.base import not_found
from loramux.adapters.validation import validate_adapter

from .settings import ServerSettings

log = logging.getLogger("loramux.server")


@functools.lru_cache(maxsize=4)
def base_spec(base: Path) -> BaseSpec:
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


def admit(name: str, path: Path, settings: ServerSettings) -> str:
    """The version (content hash) of `path`; InvalidRequest (every problem listed) unless it can be
    served as `name` on the base."""
    AdapterRef.parse(name)  # TENANT/NAME in safe characters
    return admit_files(name, path, settings)


def admit_files(name: str, path: Path, settings: ServerSettings) -> str:
    if not path.is_dir():
        raise InvalidRequest(f"adapter {name}: {path} is not a directory holding a PEFT adapter "
                             f"({CONFIG_FILE} + {WEIGHTS_FILE})", param="lora_path")
    manifest = _manifest(path)
    report = validate_adapter(path, base=base_spec(settings.base.resolve()),
                              max_rank=settings.max_lora_rank, manifest=manifest)
    report.raise_for_errors()
    for w in report.warnings:
        log.warning("adapter %s: %s", name, w.message)
    # a manifest's version was just checked against the files (integrity); hash only folders without one
    return manifest.version if manifest is not None else content_hash(path)


def admit_configured(settings: ServerSettings) -> None:
    """The base and every configured adapter, all problems at once, before the (slow) engine starts."""
    if not (settings.base / "config.json").is_file():
        raise InvalidRequest(f"--base {settings.base}: no config.json; point it at a model directory",
                             param="base")
    problems = []
    for name, path in settings.adapters.items():
        try:
            admit(name, path, settings)
        except InvalidRequest as exc:
            problems.append(f"--adapter {name}={path}: {exc.message}")
    resolver = Resolver(StoreSettings.of(settings.registry).open()) if settings.registry else None
    for name in settings.pins:
        if name in settings.adapters:
            continue
        try:
            if resolver is None:
                raise not_found(name)
            resolver.route(name)
        except NotFound:
            problems.append(f"--pin {name}: not an --adapter of this server" +
                            (f" nor in the registry {settings.registry}" if resolver else " (and no --registry)"))
    if problems:
        raise InvalidRequest("cannot serve these adapters:\n" + "\n".join(problems), param="adapter")


def registry_names(resolver: Resolver, base: BaseSpec) -> dict[str, str]:
    """`T/N` -> its `prod` version, for every registry adapter whose `prod` was trained on `base`."""
    names = {}
    for key in {f"{m.tenant}/{m.name}" for m in resolver.store.list()
                if base.matches(m.base_fingerprint, m.chat_template)}:
        try:
            prod = resolver.store.route(key).primary
        except NotFound:  # versions, but no `prod` yet
            continue
        if base.matches(prod.base_fingerprint, prod.chat_template):
            names[key] = prod.version
    return names
