"""Which adapter versions stay in the engine: pins, cold versions leaving, a cap on how many.

vLLM keeps its own LRU (`--max-loras` slots per batch, `--max-cpu-loras` in host memory) and
reloads an evicted adapter inside an engine step. This policy sits above it, in the catalog:
a pinned name never pays a cold load, a version nobody asked for in `--idle-s` gives its memory
back, and the catalog's table of loaded versions (per-request merges included) stays bounded.
A version a request holds is never chosen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .engine.protocol import AdapterHandle, Tier

Source = Literal["adapter", "registry", "merge"]  # named at start/admin, a registry version, a merge
PHASES = ("fetch", "validate", "engine")  # where a cold load spends its time


class ResidencyEvents(Protocol):
    """What the catalog reports as it loads and evicts (the server's metrics implement it)."""

    def adapter_loaded(self, adapter: str, source: Source, load_s: dict[str, float]) -> None: ...
    def adapter_load_failed(self, adapter: str, source: Source) -> None: ...
    def adapter_evicted(self, adapter: str, source: Source, reason: str) -> None: ...


class NoEvents:
    def adapter_loaded(self, adapter: str, source: Source, load_s: dict[str, float]) -> None:
        pass

    def adapter_load_failed(self, adapter: str, source: Source) -> None:
        pass

    def adapter_evicted(self, adapter: str, source: Source, reason: str) -> None:
        pass


@dataclass
class Loaded:
    handle: AdapterHandle
    source: Source
    load_s: dict[str, float] = field(default_factory=dict)  # phase -> seconds, for the last load
    rank: int | None = None
    last_used: float = field(default_factory=time.monotonic)
    fresh: bool = True  # loaded, not yet taken by the request that asked for it


@dataclass(frozen=True)
class AdapterState:
    """One row of the admin listing."""

    name: str
    version: str  # 12 hex digits, as `x-loramux-adapter-version`
    source: Source
    state: Tier
    pinned: bool = False
    in_flight: int = 0
    idle_s: float | None = None
    load_s: dict[str, float] | None = None
    rank: int | None = None


class Residency:
    def __init__(self, capacity: int, idle_s: float) -> None:
        self.capacity = capacity
        self.idle_s = idle_s
        self.loaded: dict[int, Loaded] = {}  # handle id -> entry, for every handle in the engine
        self.pins: set[str] = set()  # requested names, e.g. `acme/support`

    def add(self, handle: AdapterHandle, source: Source, load_s: dict[str, float] | None = None,
            rank: int | None = None) -> None:
        self.loaded[handle.id] = Loaded(handle, source, load_s or {}, rank)

    def touch(self, handle: AdapterHandle) -> None:
        if (entry := self.loaded.get(handle.id)) is not None:
            entry.last_used, entry.fresh = time.monotonic(), False

    def victims(self, keep: Callable[[AdapterHandle], bool], room: int = 0) -> list[tuple[Loaded, str]]:
        """(entry, reason) to unload now: cold ones, then the least recently used beyond capacity.

        `keep` says which handles are held or pinned. A fresh handle is spared: the request that
        loaded it resumes after the load and has not taken hold of it yet.
        """
        now = time.monotonic()
        free = sorted((e for e in self.loaded.values() if not keep(e.handle) and not e.fresh),
                      key=lambda e: e.last_used)
        cold = [e for e in free if self.idle_s and now - e.last_used >= self.idle_s]
        over = len(self.loaded) - len(cold) - (self.capacity - room)
        lru = [e for e in free if e not in cold][:max(over, 0)]
        return [(e, "cold") for e in cold] + [(e, "capacity") for e in lru]
