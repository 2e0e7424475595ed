"""LoRA batch slots: never more adapters in the engine than slots, and a tenant flooding its
adapters cannot keep another tenant's adapter out of them."""

from __future__ import annotations

import asyncio
import random

import pytest

from loramux.server.fairness import FairShare
from loramux.server.metrics import Metrics
from loramux.server.slots import LoraSlots


class Engine:
    """Stands for the engine: records who is in it and lets the test finish requests."""

    def __init__(self, slots: LoraSlots, fair: FairShare) -> None:
        self.slots, self.fair = slots, fair
        self.inside: dict[int, tuple[str, int | None]] = {}  # request -> (tenant, adapter)
        self.entered: list[int] = []
        self.done: dict[int, asyncio.Event] = {}
        self.most_adapters = 0
        self._ids = iter(range(10**6))

    def submit(self, tenant: str, adapter: int | None) -> tuple[int, asyncio.Task]:
        rid = next(self._ids)
        self.done[rid] = asyncio.Event()

        async def run():
            with self.fair.turn(tenant) as tag:
                async with self.slots.slot(adapter, tenant, tag):
                    self.inside[rid] = (tenant, adapter)
                    self.entered.append(rid)
                    adapters = {a for _, a in self.inside.values() if a is not None}
                    self.most_adapters = max(self.most_adapters, len(adapters))
                    try:
                        await self.done[rid].wait()
                    finally:
                        del self.inside[rid]

        return rid, asyncio.create_task(run())

    async def finish(self, rid: int) -> None:
        self.done[rid].set()
        await settle()

    async def finish_all(self) -> None:
        """Finish every request, those still waiting for a slot as they enter."""
        while self.inside or self.slots.tenants():
            for rid in list(self.inside):
                await self.finish(rid)
            await settle()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def run(coro):
    return asyncio.run(coro)


def test_a_calm_tenant_gets_a_slot_from_a_flood_holding_them_all():
    async def scenario():
        slots, fair = LoraSlots(2), FairShare()
        engine = Engine(slots, fair)
        flood = [engine.submit("flood", a) for a in (1, 2) for _ in range(3)]  # both slots, 3 requests each
        await settle()
        assert len(engine.inside) == 6
        calm, _ = engine.submit("calm", 9)
        await settle()
        assert calm not in engine.inside  # every slot is taken: it waits here, not in the engine
        later = [engine.submit("flood", a) for a in (1, 2) for _ in range(4)]  # the flood goes on
        await settle()
        # one flood adapter drains (takes no new requests); the other keeps taking them
        inside = [a for _, a in engine.inside.values()]
        draining = 1 if inside.count(1) == 3 else 2
        assert inside.count(draining) == 3 and inside.count(3 - draining) == 7
        for rid, _ in flood:
            if engine.inside.get(rid, (None, None))[1] == draining:
                await engine.finish(rid)
        assert engine.inside[calm] == ("calm", 9)  # the drained slot went to calm, ahead of the flood's backlog
        assert engine.most_adapters == 2
        await engine.finish_all()
        assert all(t.done() for _, t in later) and engine.most_adapters == 2
        assert slots.tenants() == {}

    run(scenario())


def test_a_tenant_asking_one_at_a_time_finds_room_however_hard_another_floods():
    async def scenario():
        slots, fair = LoraSlots(3), FairShare()
        engine = Engine(slots, fair)
        first, _ = engine.submit("calm", 9)
        await settle()
        await engine.finish(first)  # calm is idle now, but was active a moment ago
        for a in range(1, 6):  # the flood asks for five adapters
            engine.submit("flood", a)
        await settle()
        assert {a for _, a in engine.inside.values()} == {1, 2}  # a slot is left for calm
        assert slots.tenants()[("flood", "waiting_for_slot")] == 3
        second, _ = engine.submit("calm", 8)
        await settle()
        assert engine.inside[second] == ("calm", 8)  # no wait: it found the room kept for it
        await engine.finish_all()
        assert slots.tenants() == {}

    run(scenario())


def test_base_requests_never_wait_for_a_slot():
    async def scenario():
        slots, fair = LoraSlots(1), FairShare()
        engine = Engine(slots, fair)
        engine.submit("a", 1)
        waiting, _ = engine.submit("b", 2)
        base, _ = engine.submit("b", None)
        await settle()
        assert base in engine.inside and waiting not in engine.inside
        assert slots.tenants() == {("a", "in_engine"): 1, ("b", "in_engine"): 1, ("b", "waiting_for_slot"): 1}
        page = Metrics(tenants=slots.tenants).render().decode()  # what a dashboard plots per tenant
        assert 'loramux_tenant_requests{state="waiting_for_slot",tenant="b"} 1.0' in page
        assert 'loramux_tenant_requests{state="in_engine",tenant="a"} 1.0' in page
        await engine.finish_all()

    run(scenario())


def test_a_waiter_that_goes_away_leaves_nothing_behind():
    async def scenario():
        slots, fair = LoraSlots(1), FairShare()
        engine = Engine(slots, fair)
        first, _ = engine.submit("a", 1)
        await settle()
        gone, task = engine.submit("b", 2)
        await settle()
        task.cancel()  # the client disconnected while waiting for a slot
        await settle()
        assert slots.tenants() == {("a", "in_engine"): 1}
        more, _ = engine.submit("a", 1)  # nobody waits any more: the slot takes new requests again
        await settle()
        assert more in engine.inside
        await engine.finish(first)
        await engine.finish(more)
        assert slots.tenants() == {} and fair.in_engine() == 0

    run(scenario())


OWN = {"a": range(0, 6), "b": range(10, 12), "c": range(20, 21)}  # tenant -> its adapters


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_traffic_never_exceeds_the_slots_and_every_request_runs(seed):
    async def scenario():
        rng = random.Random(seed)
        slots, fair = LoraSlots(3), FairShare()
        engine = Engine(slots, fair)
        tasks = []
        for step in range(300):
            if rng.random() < 0.6:
                tenant = rng.choice(["a", "a", "a", "b", "c"])
                adapter = rng.choice([None, *OWN[tenant]])
                tasks.append(engine.submit(tenant, adapter)[1])
            await settle()
            if engine.inside and rng.random() < 0.5:
                await engine.finish(rng.choice(list(engine.inside)))
            if rng.random() < 0.02 and tasks:
                rng.choice(tasks).cancel()
        await engine.finish_all()
        assert all(t.done() for t in tasks) and engine.most_adapters == 3
        assert slots.tenants() == {} and fair.in_engine() == 0 and not slots._held

    run(scenario())
