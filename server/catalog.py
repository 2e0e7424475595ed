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
import os
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.errors import InvalidRequest, NotFound
from loramux.adapters.manifest import MANIFEST_FILE, Manifest, content_hash
from loramux.adapters.merge import MERGES, merge_adapters, merged_name
from loramux.adapters.names import AdapterRef
from loramux.adapters.peft_format import CONFIG_FILE, WEIGHTS_FILE
from loramux.adapters.registry import Resolved, Resolver, within
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


def admit(name: str, path: Path, settings: ServerSettings) -> str:
    """The version (content hash) of `path`; InvalidRequest (every problem listed) unless it can be
    served as `name` on the base."""
    AdapterRef.parse(name)  # TENANT/NAME in safe characters
    return _admit_files(name, path, settings)


def _admit_files(name: str, path: Path, settings: ServerSettings) -> str:
    if not path.is_dir():
        raise InvalidRequest(f"adapter {name}: {path} is not a directory holding a PEFT adapter "
                             f"({CONFIG_FILE} + {WEIGHTS_FILE})", param="lora_path")
    manifest = _manifest(path)
    report = validate_adapter(path, base=_base_spec(settings.base.resolve()),
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
    if problems:
        raise InvalidRequest("cannot serve these adapters:\n" + "\n".join(problems), param="adapter")


# -- the catalog ----------------------------------------------------------------------------
class AdapterCatalog:
    """Served names -> handles, from two sources: adapters named at start (or loaded through the
    admin API) and, with a registry, every adapter published for this base, loaded on first use.

    A request *acquires* the handle it will run and *releases* it when its response is done;
    a registry version that is no longer what its name resolves to leaves the engine once no
    request holds it.
    """

    def __init__(self, engine: Engine, settings: ServerSettings, resolver: Resolver | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.resolver = resolver
        self._served: dict[str, AdapterHandle] = {}  # named at start or by the admin API
        self._versions: dict[str, AdapterHandle] = {}  # registry version hash -> loaded handle
        self._current: dict[str, str] = {}  # requested name -> the version it resolved to last
        self._holds: Counter[int] = Counter()
        self._retired: dict[int, AdapterHandle] = {}  # superseded, unloaded when no longer held
        self._ids = itertools.count(1)  # never reused: an id always means one version
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._loading: dict[tuple[str, ...], asyncio.Task[AdapterHandle]] = {}
        self._merges: Path | None = None  # per-request merges, built on first use
        self._listed: tuple[float, set[str]] = (-float("inf"), set())  # (when, the registry's servable names)

    @property
    def base_name(self) -> str:
        return self.engine.base_name

    # -- requests ---------------------------------------------------------------------------
    async def acquire(self, model: str, routing_key: str | None = None, *,
                      parts: list[tuple[str, float]] | None = None, merge: str = "cat") -> AdapterHandle | None:
        """The handle a request for `model` runs with (None for the base), held until `release`.

        `T/A+T/B` (or `parts`, name and weight each) is their merge by `merge`, built once per
        distinct recipe. Unknown names are a 404 that never says whether they exist
        elsewhere; a registry version that fails validation is a 400 naming the adapter.
        """
        if parts is None and "+" in model:
            parts = [(name, 1.0) for name in model.split("+")]
        if parts:
            return await self._acquire_merged("+".join(n for n, _ in parts), parts, merge, routing_key)
        if model == self.engine.base_name:
            return None
        handle = self._served.get(model)
        if handle is None:
            if self.resolver is None:
                raise not_found(model)
            resolved = await asyncio.to_thread(self.resolver.resolve, model, routing_key=routing_key)
            handle = self._versions.get(resolved.version) or await self._single_flight(
                ("version", resolved.version), lambda: self._load_version(resolved))
            self._holds[handle.id] += 1  # held before the await below: a move cannot retire it first
            await self._moved(model, handle)
            return handle
        self._holds[handle.id] += 1
        return handle

    async def release(self, handle: AdapterHandle | None) -> None:
        if handle is None:
            return
        self._holds[handle.id] -= 1
        if self._holds[handle.id] <= 0:
            del self._holds[handle.id]
            if (retired := self._retired.pop(handle.id, None)) is not None:
                await self.engine.unload(retired)

    def resolve(self, model: str) -> AdapterHandle | None:
        """A loaded handle by served name, without loading or holding it (tests, admin)."""
        if model == self.engine.base_name:
            return None
        if (handle := self._served.get(model)) is None:
            raise not_found(model)
        return handle

    def served(self) -> list[AdapterHandle]:
        return sorted(self._served.values(), key=lambda h: h.name)

    async def servable(self) -> list[str]:
        """Every name a client may ask for: the named adapters and the registry's, for this base.

        The registry's list is read at most once per `refresh_s` (a full listing: on S3, many GETs).
        """
        names = set(self._served)
        if self.resolver is not None:
            listed_at, listed = self._listed
            if time.monotonic() - listed_at >= self.settings.refresh_s:
                base = _base_spec(self.settings.base.resolve())
                listed = await asyncio.to_thread(_registry_names, self.resolver, base)
                self._listed = (time.monotonic(), listed)
            names |= listed
        return sorted(names)

    # -- loading ----------------------------------------------------------------------------
    async def _single_flight(self, key: tuple[str, ...], load) -> AdapterHandle:
        task = self._loading.get(key)
        if task is None:
            task = self._loading[key] = asyncio.create_task(load())
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(task)

    async def _start(self, name: str, path: Path, version: str) -> AdapterHandle:
        """A new handle (a fresh id: never another version's) loaded into the engine."""
        handle = AdapterHandle(name, next(self._ids), path, version)
        await self.engine.load(handle)
        return handle

    async def _load_version(self, resolved: Resolved) -> AdapterHandle:
        m = resolved.manifest
        await asyncio.to_thread(admit, f"{m.tenant}/{m.name}", resolved.path, self.settings)
        handle = self._versions[m.version] = await self._start(m.served_name, resolved.path, m.version)
        return handle

    async def _acquire_merged(self, label: str, parts: list[tuple[str, float]], merge: str,
                              routing_key: str | None) -> AdapterHandle:
        if merge not in MERGES:
            raise InvalidRequest(f"unknown merge {merge!r}; use one of {', '.join(MERGES)}", param="merge")
        inputs: list[AdapterHandle] = []  # the versions the parts name now, held while merging
        try:
            for name, _ in parts:
                if (h := await self.acquire(name, routing_key)) is None:
                    raise InvalidRequest("a merge combines adapters; the base is always under them", param="model")
                inputs.append(h)
            key = merged_name([h.version for h in inputs], [w for _, w in parts], merge)
            handle = self._versions.get(key) or await self._single_flight(
                ("merge", key), lambda: self._load_merged(label, key, inputs, [w for _, w in parts], merge))
        finally:
            for h in inputs:
                await self.release(h)
        self._holds[handle.id] += 1
        return handle

    async def _load_merged(self, label: str, key: str, inputs: list[AdapterHandle], weights: list[float],
                           merge: str) -> AdapterHandle:
        """Merge off the event loop into this server's merge folder; never published as a version."""
        if self._merges is None:
            self._merges = Path(tempfile.mkdtemp(prefix="loramux-merges-"))
        out = self._merges / key
        if not (out / CONFIG_FILE).is_file():
            staging = Path(tempfile.mkdtemp(dir=self._merges))
            await asyncio.to_thread(merge_adapters, [(h.path, w) for h, w in zip(inputs, weights, strict=True)],
                                    staging, merge)
            staging.rename(out)
        await asyncio.to_thread(_admit_files, label, out, self.settings)
        handle = self._versions[key] = await self._start(label, out, key)
        return handle

    def close(self) -> None:
        """Remove the merges this server built."""
        if self._merges is not None:
            shutil.rmtree(self._merges, ignore_errors=True)

    async def _moved(self, model: str, handle: AdapterHandle) -> None:
        """Remember what `model` serves now; retire the version it served before if nothing else does."""
        before = self._current.get(model)
        self._current[model] = handle.version
        if before is None or before == handle.version or before in self._current.values():
            return
        if (old := self._versions.pop(before, None)) is not None:
            await self._retire(old)

    async def load(self, name: str, path: Path) -> AdapterHandle:
        """Admit and load `path` as `name`; a served name moves to the new version once it is loaded.

        Concurrent loads of the same (name, folder) share one load; loads of one name run one
        at a time. The checks and the engine's load run off the event loop's critical path.
        """
        return await self._single_flight(("path", name, str(Path(path).resolve())), lambda: self._load(name, Path(path)))

    async def _load(self, name: str, path: Path) -> AdapterHandle:
        async with self._locks[name]:
            version = await asyncio.to_thread(admit, name, path, self.settings)  # reads and hashes files
            handle = await self._start(name, path, version)
            previous, self._served[name] = self._served.get(name), handle
        if previous is not None:
            await self._retire(previous)  # requests holding it still finish on it
        return handle

    async def _retire(self, handle: AdapterHandle) -> None:
        """Unload `handle` now, or when the last request holding it is done."""
        if self._holds.get(handle.id):
            self._retired[handle.id] = handle
        else:
            await self.engine.unload(handle)

    async def unload(self, name: str) -> None:
        async with self._locks[name]:
            handle = self._served.pop(name, None)
        if handle is None:
            raise NotFound(not_found(name).message, param="lora_name")
        await self._retire(handle)

    def admissible_path(self, path: Path) -> Path:
        """An admin-given folder, if it lies inside the registry or an allowed folder (symlinks resolved)."""
        roots = [*self.settings.admin_paths, *([self.resolver.root] if self.resolver else [])]
        for root in roots:
            if (real := within(Path(os.path.realpath(root)), path)) is not None:
                return real
        raise InvalidRequest(f"{path} is outside the folders this server loads adapters from; start it with "
                             "--admin-path FOLDER (or serve that registry with --registry)", param="lora_path")

    def refresh(self) -> None:
        """Forget cached alias answers: the next request reads the registry (admin, after a move)."""
        if self.resolver is not None:
            self.resolver.forget()


def _registry_names(resolver: Resolver, base: BaseSpec) -> set[str]:
    """`T/N` of every registry adapter whose `prod` version was trained on `base`."""
    names = set()
    for key in {f"{m.tenant}/{m.name}" for m in resolver.store.list() if base.matches(m.base_fingerprint)}:
        try:
            if base.matches(resolver.store.route(key).primary.base_fingerprint):
                names.add(key)
        except NotFound:  # versions, but no `prod` yet
            continue
    return names
