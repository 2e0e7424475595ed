"""Fair share of the engine's LoRA batch slots: which adapters may have requests in the engine.

vLLM runs at most `--max-loras` distinct adapters in a batch. A waiting request whose adapter
is not among those running is skipped, whatever its priority, and requests for the running
adapters go past it. A tenant flooding a few adapters keeps them running for as long as it
floods, and another tenant's adapter waits for a slot that never frees (measured on 4 slots:
a calm tenant's TTFT 63 ms alone, 1,252 ms under a flood, with fair-share priorities on).

So loramux hands out the slots itself. A request enters the engine only while its adapter
holds a slot (the base needs none); one that finds no slot it may take waits here, in
fair-share order (its start tag, fairness.py).
- Room: a tenant's first slot is any free one, but it takes another only while a free slot
  is left for each tenant active in the last `room_s` that holds none. A tenant sending one
  request at a time then finds a slot free each time, however hard another floods.
- Drain: while a waiter's tenant holds fewer slots than another, or a waiter has waited
  `patience_s` behind its own tenant's adapters, one slot drains: of the tenant holding the
  most, the adapter whose newest request entered longest ago (it empties first) takes no new
  requests until it is empty, and then passes to the first waiter.
The engine therefore never holds more adapters than slots, vLLM never skips a request for
want of one, and its queue order (the same tags, as priorities) is the order requests run.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class _Slot:
    tenant: str
    active: int = 0  # requests of this adapter in the engine
    draining: bool = False  # takes no new requests until empty
    joined: float = field(default_factory=time.monotonic)  # when its newest request entered


@dataclass(order=True)
class _Waiter:
    tag: int
    seq: int
    adapter: int = field(compare=False)
    tenant: str = field(compare=False)
    granted: asyncio.Future[None] = field(compare=False)
    since: float = field(compare=False, default_factory=time.monotonic)


class LoraSlots:
    """Slots per adapter handle id; all bookkeeping is await-free, so it needs no lock."""

    def __init__(self, slots: int, patience_s: float = 2.0, room_s: float = 10.0) -> None:
        self.slots = slots
        self.patience_s = patience_s  # how long a tenant's adapter waits behind its own others
        self.room_s = room_s  # how long a tenant's room is kept after its last adapter request
        self._held: dict[int, _Slot] = {}  # adapter handle id -> its slot
        self._waiting: list[_Waiter] = []  # sorted by (tag, arrival)
        self._seq = itertools.count()
        self._in_engine: Counter[str] = Counter()  # tenant -> requests in the engine
        self._seen: dict[str, float] = {}  # tenant -> when its last adapter request came or went

    @asynccontextmanager
    async def slot(self, adapter: int | None, tenant: str, tag: int) -> AsyncIterator[None]:
        """Held while a request of `adapter` (None: the base) is in the engine; may wait first."""
        if adapter is not None:
            self._seen[tenant] = time.monotonic()
            if not self._enter(adapter, tenant):
                await self._wait(adapter, tenant, tag)
        self._in_engine[tenant] += 1
        try:
            yield
        finally:
            self._in_engine[tenant] -= 1
            if self._in_engine[tenant] <= 0:
                del self._in_engine[tenant]
            if adapter is not None:
                self._seen[tenant] = time.monotonic()
                self._leave(adapter)

    def _per_tenant(self) -> Counter[str]:
        return Counter(s.tenant for s in self._held.values())

    def _may_open(self, tenant: str, per_tenant: Counter[str]) -> bool:
        """Whether `tenant` may take a free slot for another adapter now (see Room above)."""
        free = self.slots - len(self._held)
        if free <= 0 or not per_tenant[tenant]:
            return free > 0
        now = time.monotonic()
        self._seen = {t: at for t, at in self._seen.items() if now - at < self.room_s}
        return free > sum(1 for t in self._seen if t != tenant and not per_tenant[t])

    def _enter(self, adapter: int, tenant: str) -> bool:
        """Enter at once: the adapter's slot is open, or it may open one and nobody waits."""
        slot = self._held.get(adapter)
        if slot is None:
            if self._waiting or not self._may_open(tenant, self._per_tenant()):
                return False
            slot = self._held[adapter] = _Slot(tenant)
        elif slot.draining:
            return False
        slot.active += 1
        slot.joined = time.monotonic()
        return True

    async def _wait(self, adapter: int, tenant: str, tag: int) -> None:
        waiter = _Waiter(tag, next(self._seq), adapter, tenant, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        self._waiting.sort()
        self._settle()
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter.granted.cancelled():
                self._settle()  # drops it, and stops a drain nobody needs any more
            else:
                self._leave(adapter)  # granted just as the client went away: give it back
            raise

    def _leave(self, adapter: int) -> None:
        slot = self._held[adapter]
        slot.active -= 1
        if slot.active <= 0:
            del self._held[adapter]
        if slot.active <= 0 or self._waiting:
            self._settle()

    def _settle(self) -> None:
        """Grant what can be granted, in tag order; then choose the slot that drains, if any."""
        self._waiting = [w for w in self._waiting if not w.granted.done()]  # done here: cancelled
        per_tenant = self._per_tenant()
        still = []
        for w in self._waiting:
            slot = self._held.get(w.adapter)
            if slot is None and self._may_open(w.tenant, per_tenant):
                slot = self._held[w.adapter] = _Slot(w.tenant)
                per_tenant[w.tenant] += 1
            if slot is not None and not slot.draining:
                slot.active += 1
                slot.joined = time.monotonic()
                w.granted.set_result(None)
            else:
                still.append(w)
        self._waiting = still
        self._choose_drain(per_tenant)

    def _choose_drain(self, per_tenant: Counter[str]) -> None:
        """Keep one slot draining while a waiter needs it (see Drain above), none otherwise."""
        most, now = max(per_tenant.values(), default=0), time.monotonic()
        needed = any(per_tenant[w.tenant] < most or now - w.since >= self.patience_s for w in self._waiting)
        draining = [s for s in self._held.values() if s.draining]
        if needed and draining and per_tenant[draining[0].tenant] == most:
            return  # the one draining still belongs to a tenant holding the most
        for s in draining:
            s.draining = False
        if needed and self._held:
            max(self._held.values(), key=lambda s: (per_tenant[s.tenant], -s.joined)).draining = True

    def adapters(self) -> tuple[set[int], set[int]]:
        """Adapter handle ids with requests in the engine (holding a slot), and ids waiting for one."""
        return set(self._held), {w.adapter for w in self._waiting}

    def tenants(self) -> dict[tuple[str, str], int]:
        """(tenant, state) -> requests: `waiting_for_slot` here, `in_engine` (queued there or running)."""
        counts = {(t, "in_engine"): n for t, n in self._in_engine.items()}
        for w in self._waiting:
            counts[w.tenant, "waiting_for_slot"] = counts.get((w.tenant, "waiting_for_slot"), 0) + 1
        return counts
