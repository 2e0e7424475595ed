"""The adapter catalog: served name -> the adapter version a request runs (an `AdapterHandle`).

The serving side owns it, as vLLM's `OpenAIServingModels` owns `lora_requests`: handle ids,
one load at a time per version, admission (`admission.py`) before the engine sees an adapter,
and the residency policy (`residency.py`). The engine only runs handles, and a request keeps the handle it
was resolved to, so unloading a name or moving it to a new version never changes, or breaks,
a request already admitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

from loramux.adapters.errors import Forbidden, InvalidRequest, NotFound
from loramux.adapters.manifest import Manifest
from loramux.adapters.merge import MERGES, merge_adapters, merged_name
from loramux.adapters.peft_format import CONFIG_FILE, read_config
from loramux.adapters.registry import Resolver, within
from loramux.adapters.store.base import Route, not_found

from .admission import admit_files, admit, base_spec, registry_names
from .engine.protocol import AdapterHandle, Engine
from .residency import AdapterState, NoEvents, Residency, ResidencyEvents, Source
from .residency_control import ResidencyControl
from .settings import ServerSettings


class AdapterCatalog(ResidencyControl):
    """Served names -> handles, from two sources: adapters named at start (or loaded through the
    admin API) and, with a registry, every adapter published for this base, loaded on first use.

    A request *acquires* the handle it will run and *releases* it when its response is done;
    a registry version that is no longer what its name resolves to leaves the engine once no
    request holds it. `residency` decides what else stays loaded (pins, cold, capacity), and
    `ResidencyControl` acts on it.
    """

    def __init__(self, engine: Engine, settings: ServerSettings, resolver: Resolver | None = None,
                 events: ResidencyEvents | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.resolver = resolver
        self.events = events or NoEvents()
        self.residency = Residency(settings.capacity, settings.idle_s)
        self._served: dict[str, AdapterHandle] = {}  # named at start or by the admin API
        self._versions: dict[str, AdapterHandle] = {}  # loaded registry version (or merge recipe) -> handle
        self._current: dict[str, frozenset[str]] = {}  # requested name -> versions its route names now
        self._named: Counter[str] = Counter()  # version -> how many requested names name it now
        self._fetched = False  # a download since the cache was last pruned
        self._holds: Counter[int] = Counter()
        self._retired: dict[int, AdapterHandle] = {}  # superseded, unloaded when no longer held
        self._ids = itertools.count(1)  # never reused: an id always means one version
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._loading: dict[tuple[str, ...], asyncio.Task[AdapterHandle]] = {}
        self._evicting = asyncio.Lock()
        self._merges: Path | None = None  # per-request merges, built on first use
        self._listed: tuple[float, dict[str, str]] = (-float("inf"), {})  # (when, servable registry name -> prod)
        self.snapshot: list[AdapterState] = []  # what is in the engine, as of the policy's last tick (metrics)

    @property
    def base_name(self) -> str:
        return self.engine.base_name

    # -- requests ---------------------------------------------------------------------------
    async def acquire(self, model: str, routing_key: str | None = None, *,
                      parts: list[tuple[str, float]] | None = None, merge: str = "cat",
                      phases: dict[str, float] | None = None) -> AdapterHandle | None:
        """The handle a request for `model` runs with (None for the base), held until `release`.

        Time spent waiting for a load (its own or another request's) is added to `phases["load"]`.

        `T/A+T/B` (or `parts`, name and weight each) is their merge by `merge`, built once per
        distinct recipe. Unknown names are a 404 that never says whether they exist
        elsewhere; a registry version that fails validation is a 400 naming the adapter.
        """
        if parts is None and "+" in model:
            parts = [(name, 1.0) for name in model.split("+")]
        if parts:
            handle = await self._acquire_merged("+".join(n for n, _ in parts), parts, merge, routing_key, phases)
        elif model == self.engine.base_name:
            return None
        elif (handle := self._served.get(model)) is not None:
            self._holds[handle.id] += 1  # held before any await: the policy never unloads a held handle
            if handle.id not in self.residency.loaded:  # the policy unloaded it while cold
                try:
                    await self._single_flight(("reload", str(handle.id)), lambda: self._reload(handle), phases)
                except BaseException:
                    await self.release(handle)
                    raise
        elif self.resolver is None:
            raise not_found(model)
        else:
            route = await asyncio.to_thread(self.resolver.route, model)
            manifest = route.pick(routing_key)
            handle = self._versions.get(manifest.version) or await self._single_flight(
                ("version", manifest.version), lambda: self._load_version(manifest), phases)
            self._holds[handle.id] += 1  # held before the await below: a move cannot retire it first
            await self._moved(model, route)
        self.residency.touch(handle)
        return handle

    async def release(self, handle: AdapterHandle | None) -> None:
        if handle is None:
            return
        self._holds[handle.id] -= 1
        if self._holds[handle.id] <= 0:
            del self._holds[handle.id]
            if (retired := self._retired.pop(handle.id, None)) is not None:
                await self._unload(retired)

    def resolve(self, model: str) -> AdapterHandle | None:
        """A loaded handle by served name, without loading or holding it (tests, admin)."""
        if model == self.engine.base_name:
            return None
        if (handle := self._served.get(model)) is None:
            raise not_found(model)
        return handle

    def held(self) -> dict[int, str]:
        """Handle id -> served name, for every adapter version a request holds now (metrics)."""
        handles = [e.handle for e in self.residency.loaded.values()] + list(self._retired.values())
        return {h.id: h.name for h in handles if self._holds.get(h.id)}

    def served(self) -> list[AdapterHandle]:
        return sorted(self._served.values(), key=lambda h: h.name)

    async def servable(self) -> list[str]:
        """Every name a client may ask for: the named adapters and the registry's, for this base."""
        return sorted(set(self._served) | set(await self._registry_listing()))

    async def _registry_listing(self) -> dict[str, str]:
        """Registry name -> its `prod` version, for this base; read at most once per `refresh_s`
        (a full listing: on S3, many GETs)."""
        if self.resolver is None:
            return {}
        listed_at, listed = self._listed
        if time.monotonic() - listed_at >= self.settings.refresh_s:
            base = base_spec(self.settings.base.resolve())
            listed = await asyncio.to_thread(registry_names, self.resolver, base)
            self._listed = (time.monotonic(), listed)
        return listed

    # -- loading ----------------------------------------------------------------------------
    async def _single_flight(self, key: tuple[str, ...], load,
                             phases: dict[str, float] | None = None) -> AdapterHandle:
        task = self._loading.get(key)
        if task is None:
            task = self._loading[key] = asyncio.create_task(load())
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        started = time.perf_counter()
        try:
            return await asyncio.shield(task)
        finally:
            if phases is not None:
                phases["load"] = phases.get("load", 0.0) + time.perf_counter() - started

    async def _start(self, name: str, path: Path, version: str, source: Source,
                     load_s: dict[str, float]) -> AdapterHandle:
        """A new handle (a fresh id: never another version's) loaded into the engine."""
        handle = AdapterHandle(name, next(self._ids), path, version)
        await self._engine_load(handle, source, load_s)
        return handle

    async def _engine_load(self, handle: AdapterHandle, source: Source, load_s: dict[str, float]) -> None:
        await self.evict(room=1)  # make room first, so vLLM's own LRU never has to choose
        started = time.perf_counter()
        try:
            await self.engine.load(handle)
        except Exception:
            self.events.adapter_load_failed(handle.name, source)
            raise
        load_s["engine"] = time.perf_counter() - started
        self.residency.add(handle, source, load_s, read_config(handle.path).get("r"))
        self.events.adapter_loaded(handle.name, source, load_s)
        if self._pinned(handle):
            await self.engine.pin(handle)

    async def _reload(self, handle: AdapterHandle) -> AdapterHandle:
        await self._engine_load(handle, "adapter", {})
        self.residency.touch(handle)  # the requests waiting already hold it
        return handle

    async def _load_version(self, manifest: Manifest) -> AdapterHandle:
        assert self.resolver is not None
        load_s: dict[str, float] = {}
        name = f"{manifest.tenant}/{manifest.name}"
        making_room = asyncio.create_task(self.evict(room=1))  # meanwhile; awaited before the engine load
        try:
            with _timed(load_s, "fetch"):
                path = await asyncio.to_thread(self.resolver.fetch, manifest)
            with _timed(load_s, "validate"):
                await asyncio.to_thread(admit, name, path, self.settings)
        except Exception:
            self.events.adapter_load_failed(name, "registry")
            raise
        finally:
            await making_room
        self._fetched = True
        handle = self._versions[manifest.version] = await self._start(name, path, manifest.version, "registry", load_s)
        return handle

    async def _acquire_merged(self, label: str, parts: list[tuple[str, float]], merge: str,
                              routing_key: str | None, phases: dict[str, float] | None) -> AdapterHandle:
        if merge not in MERGES:
            raise InvalidRequest(f"unknown merge {merge!r}; use one of {', '.join(MERGES)}", param="merge")
        inputs: list[AdapterHandle] = []  # the versions the parts name now, held while merging
        try:
            for name, _ in parts:
                if (h := await self.acquire(name, routing_key, phases=phases)) is None:
                    raise InvalidRequest("a merge combines adapters; the base is always under them", param="model")
                inputs.append(h)
            key = merged_name([h.version for h in inputs], [w for _, w in parts], merge)
            handle = self._versions.get(key) or await self._single_flight(
                ("merge", key), lambda: self._load_merged(label, key, inputs, [w for _, w in parts], merge), phases)
            self._holds[handle.id] += 1  # before the releases below await: the policy never takes a held one
        finally:
            for h in inputs:
                await self.release(h)
        return handle

    async def _load_merged(self, label: str, key: str, inputs: list[AdapterHandle], weights: list[float],
                           merge: str) -> AdapterHandle:
        """Merge off the event loop into this server's merge folder; never published as a version."""
        if self._merges is None:
            self._merges = Path(tempfile.mkdtemp(prefix="loramux-merges-"))
        out = self._merges / key
        load_s: dict[str, float] = {}
        try:
            with _timed(load_s, "fetch"):  # a merge's "fetch" is building it
                if not (out / CONFIG_FILE).is_file():
                    staging = Path(tempfile.mkdtemp(dir=self._merges))
                    await asyncio.to_thread(merge_adapters, [(h.path, w) for h, w in zip(inputs, weights, strict=True)],
                                            staging, merge)
                    staging.rename(out)
            with _timed(load_s, "validate"):
                await asyncio.to_thread(admit_files, label, out, self.settings)
        except Exception:
            self.events.adapter_load_failed(label, "merge")
            raise
        handle = self._versions[key] = await self._start(label, out, key, "merge", load_s)
        return handle

    def close(self) -> None:
        """Remove the merges this server built."""
        if self._merges is not None:
            shutil.rmtree(self._merges, ignore_errors=True)

    async def _moved(self, model: str, route: Route) -> None:
        """Remember which versions `model` names now; retire those it named before if nothing else does."""
        now = frozenset(m.version for m in (route.primary, route.canary) if m is not None)
        before = self._current.get(model, frozenset())
        if now == before:
            return
        self._current[model] = now
        self._named.update(now)
        self._named.subtract(before)
        for version in before - now:
            if self._named[version] > 0:
                continue
            del self._named[version]
            if (old := self._versions.pop(version, None)) is not None:
                await self._retire(old)
        for version in now - before:  # a pinned name's new version is pinned too
            if (new := self._versions.get(version)) is not None and self._pinned(new):
                await self.engine.pin(new)

    async def load(self, name: str, path: Path) -> AdapterHandle:
        """Admit and load `path` as `name`; a served name moves to the new version once it is loaded.

        Concurrent loads of the same (name, folder) share one load; loads of one name run one
        at a time. The checks and the engine's load run off the event loop's critical path.
        """
        return await self._single_flight(("path", name, str(Path(path).resolve())), lambda: self._load(name, Path(path)))

    async def _load(self, name: str, path: Path) -> AdapterHandle:
        async with self._locks[name]:
            load_s: dict[str, float] = {}
            with _timed(load_s, "validate"):
                version = await asyncio.to_thread(admit, name, path, self.settings)  # reads and hashes files
            handle = await self._start(name, path, version, "adapter", load_s)
            self.residency.touch(handle)  # loaded for its name, not for one request
            previous, self._served[name] = self._served.get(name), handle
        if previous is not None:
            await self._retire(previous)  # requests holding it still finish on it
        return handle

    async def _retire(self, handle: AdapterHandle) -> None:
        """Unload `handle` now, or when the last request holding it is done."""
        if self._holds.get(handle.id):
            self._retired[handle.id] = handle
        else:
            await self._unload(handle)

    async def _unload(self, handle: AdapterHandle) -> None:
        self.residency.loaded.pop(handle.id, None)
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
        raise Forbidden(f"{path} is outside the folders this server loads adapters from; start it with "
                             "--admin-path FOLDER (or serve that registry with --registry)", param="lora_path")

    def refresh(self) -> None:
        """Forget cached alias answers: the next request reads the registry (admin, after a move)."""
        if self.resolver is not None:
            self.resolver.forget()


@contextlib.contextmanager
def _timed(into: dict[str, float], phase: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    into[phase] = time.perf_counter() - started
