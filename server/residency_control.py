"""The catalog's residency operations: evicting (and the task that does it as versions go
cold), pins, and the admin listing of where each adapter is.

A mixin of `AdapterCatalog` (catalog.py): what stays loaded is a concern apart from resolving
and loading names, but it reads the catalog's tables and unloads through it, so it shares the
object. `residency.py` holds the policy itself (which versions to let go).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from loramux.adapters.errors import Conflict
from loramux.adapters.registry import Resolver

from .engine.protocol import AdapterHandle, Engine
from .residency import AdapterState, Residency, ResidencyEvents
from .settings import ServerSettings


class ResidencyControl:
    # the catalog's state this reads (set in AdapterCatalog.__init__)
    engine: Engine
    settings: ServerSettings
    resolver: Resolver | None
    events: ResidencyEvents
    residency: Residency
    snapshot: list[AdapterState]
    _served: dict[str, AdapterHandle]
    _versions: dict[str, AdapterHandle]
    _current: dict[str, frozenset[str]]
    _holds: Counter[int]
    _retired: dict[int, AdapterHandle]
    _evicting: asyncio.Lock
    _fetched: bool

    def _pinned(self, handle: AdapterHandle) -> bool:
        """Whether a pinned name serves `handle` now (looks at the pins only: there are few)."""
        return any(self._served.get(p) is handle or handle.version in self._current.get(p, ())
                   for p in self.residency.pins)

    def _names_of(self, handle: AdapterHandle) -> set[str]:
        """The requested names that serve `handle` now."""
        names = {n for n, h in self._served.items() if h is handle}
        return names | {n for n, versions in self._current.items() if handle.version in versions}

    async def evict(self, room: int = 0) -> None:
        """Unload what the residency policy lets go: cold versions, then the least recent beyond
        capacity (less `room`, for loads about to happen)."""
        def keep(h: AdapterHandle) -> bool:
            return bool(self._holds.get(h.id)) or self._pinned(h)

        async with self._evicting:
            for entry, reason in self.residency.victims(keep, room):
                h = entry.handle
                if keep(h) or h.id not in self.residency.loaded:  # taken again during an earlier unload
                    continue
                if self._versions.get(h.version) is h:
                    del self._versions[h.version]  # the next request loads it afresh, under a new id
                await self._unload(h)
                self.events.adapter_evicted(h.name, entry.source, reason)

    async def run_policy(self) -> None:
        """Evict versions as they go cold and keep the download cache bounded (runs for the app's life)."""
        tick = min(max(self.settings.idle_s / 4, 0.25), 5.0) if self.settings.idle_s else 5.0
        while True:
            await asyncio.sleep(tick)
            await self.evict()
            self.snapshot = await self.states(store=False)
            if self._fetched and self.resolver is not None:
                self._fetched = False
                await asyncio.to_thread(self._prune_downloads)

    def _prune_downloads(self) -> None:
        """Bound a remote registry's download cache; versions the catalog may still load from stay."""
        keep = {e.handle.version for e in self.residency.loaded.values()} | {h.version for h in self._retired.values()}
        self.resolver.store.prune_cache(int(self.settings.cache_gib * 2**30), keep)

    async def pin(self, name: str) -> AdapterHandle:
        """Keep what `name` serves loaded and in a batch slot, following its alias as it moves."""
        handle = await self.acquire(name)
        try:
            if handle is None:
                raise Conflict(f"`{name}` is the base model; it is always loaded", param="name")
            if len(self.residency.pins | {name}) >= self.settings.max_loras:
                raise Conflict(f"pinning {name} would hold every one of the {self.settings.max_loras} LoRA "
                                     f"slots (pinned: {', '.join(sorted(self.residency.pins))}); unpin one, or "
                                     "start the server with a larger --max-loras", param="name")
            self.residency.pins.add(name)
            await self.engine.pin(handle)
        finally:
            await self.release(handle)
        return handle

    async def unpin(self, name: str) -> None:
        if name not in self.residency.pins:
            raise Conflict(f"`{name}` is not pinned; pinned: {', '.join(sorted(self.residency.pins)) or 'none'}",
                                 param="name")
        self.residency.pins.discard(name)
        for entry in list(self.residency.loaded.values()):
            if name in self._names_of(entry.handle) and not self._pinned(entry.handle):
                await self.engine.pin(entry.handle, pinned=False)

    async def states(self, store: bool = True) -> list[AdapterState]:
        """Every adapter this server can serve and where it is: device, host or store (`store`:
        also those not in the engine)."""
        tiers = await self.engine.residency()
        now, rows, seen = time.monotonic(), [], set()
        for entry in self.residency.loaded.values():
            h = entry.handle
            names = self._names_of(h)
            seen |= names | {h.name}
            rows.append(AdapterState(
                name=h.name, version=h.version[:12], source=entry.source, state=tiers.get(h.id, "store"),
                pinned=self._pinned(h), in_flight=self._holds.get(h.id, 0),
                idle_s=round(now - entry.last_used, 3), load_s={k: round(v, 6) for k, v in entry.load_s.items()},
                rank=entry.rank))
        if not store:
            return sorted(rows, key=lambda r: (r.name, r.version))
        for name, handle in self._served.items():
            if name not in seen:
                rows.append(AdapterState(name=name, version=handle.version[:12], source="adapter", state="store",
                                         pinned=name in self.residency.pins))
        for name, version in (await self._registry_listing()).items():
            if name not in seen:
                rows.append(AdapterState(name=name, version=version[:12], source="registry", state="store",
                                         pinned=name in self.residency.pins))
        return sorted(rows, key=lambda r: (r.name, r.version))
