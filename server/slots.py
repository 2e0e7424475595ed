"""Fair share of the engine's LoRA batch slots: which adapters may have requests in the engine.

vLLM runs at most `--max-loras` distinct adapters in a batch. A waiting request whose adapter
is not among those running is skipped, whatever its priority, and requests for the running
adapters go past it. A tenant flooding a few adapters keeps them running for as long as it
floods, and another tenant's adapter waits for a slot that never frees (measured on 4 slots:
a calm tenant's TTFT 63 ms alone, 1,252 ms under a flood, with fair-share priorities on).

So loramux hands out the slots itself. A request enters the engine only while its adapter
holds a slot (the base needs none); one that finds every slot taken waits here, in fair-share
order (its start tag, fairness.py). While anyone waits, one slot drains: the slot of the
tenant holding the most, of its adapters the one with the fewest requests in flight (it
empties first), takes no new requests until it is empty and then passes to the first waiter.
The engine therefore never holds more adapters than slots, vLLM never skips a request for
want of one, and its queue order (the same tags, as priorities) is the order requests run.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class _Slot:
    tenant: str
    active: int = 0  # requests of this adapter in the engine
    draining: bool = False  # takes no new requests until empty


@dataclass(order=True)
class _Waiter:
    tag: int
    seq: int
    adapter: int = field(compare=False)
    tenant: str = field(compare=False)
    granted: asyncio.Future[None] = field(compare=False)


class LoraSlots:
    """Slots per adapter handle id; all bookkeeping is await-free, so it needs no lock."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._held: dict[int, _Slot] = {}  # adapter handle id -> its slot
        self._waiting: list[_Waiter] = []  # sorted by (tag, arrival)
        self._seq = itertools.count()
        self._in_engine: Counter[str] = Counter()  # tenant -> requests in the engine

    @asynccontextmanager
    async def slot(self, adapter: int | None, tenant: str, tag: int) -> AsyncIterator[None]:
        """Held while a request of `adapter` (None: the base) is in the engine; may wait first."""
        if adapter is not None and not self._join(adapter, tenant):
            await self._wait(adapter, tenant, tag)
        self._in_engine[tenant] += 1
        try:
            yield
        finally:
            self._in_engine[tenant] -= 1
            if self._in_engine[tenant] <= 0:
                del self._in_engine[tenant]
            if adapter is not None:
                self._leave(adapter)

    def _join(self, adapter: int, tenant: str) -> bool:
        """Enter at once: the adapter's slot is open, or a slot is free and nobody waits."""
        slot = self._held.get(adapter)
        if slot is None:
            if self._waiting or len(self._held) >= self.slots:
                return False
            slot = self._held[adapter] = _Slot(tenant)
        elif slot.draining:
            return False
        slot.active += 1
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
            self._settle()

    def _settle(self) -> None:
        """Grant what can be granted, in tag order; then, if anyone still waits, drain one slot."""
        self._waiting = [w for w in self._waiting if not w.granted.done()]  # done here: cancelled
        if not self._waiting or len(self._held) < self.slots:  # nobody needs a slot drained
            for slot in self._held.values():
                slot.draining = False
        still = []
        for w in self._waiting:
            slot = self._held.get(w.adapter)
            if slot is None and len(self._held) < self.slots:
                slot = self._held[w.adapter] = _Slot(w.tenant)
            if slot is not None and not slot.draining:
                slot.active += 1
                w.granted.set_result(None)
            else:
                still.append(w)
        self._waiting = still
        if still and not any(s.draining for s in self._held.values()):
            per_tenant = Counter(s.tenant for s in self._held.values())
            victim = max(self._held.values(), key=lambda s: (per_tenant[s.tenant], -s.active))
            victim.draining = True

    def tenants(self) -> dict[tuple[str, str], int]:
        """(tenant, state) -> requests: `waiting_for_slot` here, `in_engine` (queued there or running)."""
        counts = {(t, "in_engine"): n for t, n in self._in_engine.items()}
        for w in self._waiting:
            counts[w.tenant, "waiting_for_slot"] = counts.get((w.tenant, "waiting_for_slot"), 0) + 1
        return counts
