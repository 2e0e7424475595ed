"""The adapter catalog: served name -> the adapter version a request runs (an `AdapterHandle`).

The serving side owns it, as vLLM's `OpenAIServingModels` owns `lora_requests`: handle ids,
one load at a time per name, and admission (an adapter is checked against the served base
before the engine sees it). The engine only runs handles, and a request keeps the handle it
was resolved to, so unloading a name or moving it to a new version never changes, or breaks,
a request already admitted.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections import defaultdict
from pathlib import Path

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.errors import InvalidRequest, NotFound
from loramux.adapters.manifest import MANIFEST_FILE, Manifest
from loramux.adapters.names import AdapterRef
from loramux.adapters.peft_format import CONFIG_FILE, WEIGHTS_FILE
from loramux.adapters.store.base import not_found
from loramux.adapters.validation import validate_adapter

from .engine.protocol import AdapterHandle, Engine
from .settings import ServerSettings

log = logging.getLogger("loramux.server")


# -- admission ------------------------------------------------------------------------------
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


def admit(name: str, path: Path, settings: ServerSettings) -> None:
    """Raise InvalidRequest (every problem listed) unless `path` can be served as `name` on the base."""
    AdapterRef.parse(name)  # TENANT/NAME in safe characters
    if not path.is_dir():
        raise InvalidRequest(f"adapter {name}: {path} is not a directory holding a PEFT adapter "
                             f"({CONFIG_FILE} + {WEIGHTS_FILE})", param="lora_path")
    report = validate_adapter(path, base=_base_spec(settings.base.resolve()),
                              max_rank=settings.max_lora_rank, manifest=_manifest(path))
    report.raise_for_errors()
    for w in report.warnings:
        log.warning("adapter %s: %s", name, w.message)


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
    if problems:
        raise InvalidRequest("cannot serve these adapters:\n" + "\n".join(problems), param="adapter")


# -- the catalog ----------------------------------------------------------------------------
class AdapterCatalog:
    def __init__(self, engine: Engine, settings: ServerSettings) -> None:
        self.engine = engine
        self.settings = settings
        self._served: dict[str, AdapterHandle] = {}
        self._ids = itertools.count(1)  # never reused: an id always means one version
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._loading: dict[tuple[str, Path], asyncio.Task[AdapterHandle]] = {}

    @property
    def base_name(self) -> str:
        return self.engine.base_name

    def resolve(self, model: str) -> AdapterHandle | None:
        """The handle a request for `model` runs with; None for the base. Unknown names: 404."""
        if model == self.engine.base_name:
            return None
        if (handle := self._served.get(model)) is None:
            raise not_found(model)
        return handle

    def served(self) -> list[AdapterHandle]:
        return sorted(self._served.values(), key=lambda h: h.name)

    async def load(self, name: str, path: Path) -> AdapterHandle:
        """Admit and load `path` as `name`; a served name moves to the new version once it is loaded.

        Concurrent loads of the same (name, folder) share one load; loads of one name run one
        at a time. The checks and the engine's load run off the event loop's critical path.
        """
        key = (name, Path(path).resolve())
        task = self._loading.get(key)
        if task is None:
            task = self._loading[key] = asyncio.create_task(self._load(name, Path(path)))
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(task)

    async def _load(self, name: str, path: Path) -> AdapterHandle:
        async with self._locks[name]:
            await asyncio.to_thread(admit, name, path, self.settings)  # reads and hashes files
            handle = AdapterHandle(name, next(self._ids), path)
            await self.engine.load(handle)
            previous, self._served[name] = self._served.get(name), handle
        if previous is not None:
            await self.engine.unload(previous)  # requests holding it still finish on it
        return handle

    async def unload(self, name: str) -> None:
        async with self._locks[name]:
            handle = self._served.pop(name, None)
        if handle is None:
            raise NotFound(not_found(name).message, param="lora_name")
        await self.engine.unload(handle)
