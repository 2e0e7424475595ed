"""Fair share between tenants: the order vLLM's queue serves requests in.

vLLM (`scheduling_policy="priority"`) admits waiting requests lowest `priority` first, ties by
arrival; it preempts nothing for a better one while a slot is free of KV pressure, and when
KV blocks run out it preempts the running request with the highest (priority, arrival). So
all loramux has to do is number requests well, which is start-time fair queuing (Goyal et
al., 1996) with requests as the unit of work: each tenant's requests get consecutive tags,
and a tenant with nothing queued starts at the oldest tag still in the engine. A tenant with
a backlog of 100 therefore sorts its 101st request behind the first request of a tenant that
sends one now; two backlogged tenants alternate; each tenant's own requests stay in order.
Nothing here waits or refuses: a tenant's hard cap is its key's `max_inflight` (quotas.py).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


def tenant_of(model: str) -> str:
    """`acme/support@prod` -> `acme`, `acme/a+acme/b` -> `acme`; the base model's callers share `-`
    (the tenant of a request on a server without keys, for fair share and metrics alike)."""
    return model.split("/", 1)[0] if "/" in model else "-"


class FairShare:
    """Start tags per tenant for requests handed to the engine; all bookkeeping is await-free."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}  # tenant -> where its next request starts (its last finish tag)
        self._open: Counter[int] = Counter()  # start tags of requests in the engine -> how many
        self._heap: list[int] = []  # the same tags, for the oldest; entries whose count fell to 0 are stale
        self._clock = 0  # the largest finish tag handed out: virtual time when the engine is empty

    def _virtual_time(self) -> int:
        """The oldest start tag still in the engine: a tenant that comes back from idle starts
        here, level with the oldest queued work, never with credit saved while it was away."""
        while self._heap and not self._open[self._heap[0]]:
            self._open.pop(heapq.heappop(self._heap), None)
        return self._heap[0] if self._heap else self._clock

    def start(self, tenant: str, cost: int = 1) -> int:
        """The priority of a request of `cost` sequences (vLLM runs `n` choices as `n`); lower runs first."""
        tag = max(self._virtual_time(), self._next.get(tenant, 0))
        self._next[tenant] = tag + cost
        self._clock = max(self._clock, tag + cost)
        if not self._open[tag]:
            heapq.heappush(self._heap, tag)
        self._open[tag] += 1
        if len(self._next) > 4 * len(self._open) + 64:  # forget tenants whose tags time has passed
            now = self._virtual_time()
            self._next = {t: f for t, f in self._next.items() if f > now}
        return tag

    def finish(self, tag: int) -> None:
        """The request with this start tag left the engine (done, failed or cancelled)."""
        if self._open[tag] > 0:
            self._open[tag] -= 1

    @contextmanager
    def turn(self, tenant: str, cost: int = 1) -> Iterator[int]:
        """A request's priority for as long as it is in the engine."""
        tag = self.start(tenant, cost)
        try:
            yield tag
        finally:
            self.finish(tag)

    def in_engine(self) -> int:
        """Requests started and not yet finished (for tests and debugging)."""
        return sum(self._open.values())
