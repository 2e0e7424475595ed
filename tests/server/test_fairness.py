"""Fair share: the priorities requests reach the engine with, and whose share they count against.

vLLM serves waiting requests lowest priority first (ties by arrival), so these tests sort what
the engine was given by (priority, arrival) and look at who would be served first.
"""

from __future__ import annotations

import asyncio

import pytest

from loramux.server.context import RequestContext
from loramux.server.engine.fake import FakeEngine
from loramux.server.fairness import FairShare
from loramux.server.generation import GenerationService, fair_share_tenant
from loramux.server.openai_protocol import CompletionRequest


def _served_order(started: list[tuple[str, int]]) -> list[str]:
    """Tenants in the order vLLM's priority queue would admit these (arrival = list order)."""
    return [t for _, (t, _) in sorted(enumerate(started), key=lambda e: (e[1][1], e[0]))]


def test_a_newcomer_goes_ahead_of_a_flooding_tenants_backlog():
    fair = FairShare()
    started = [("A", fair.start("A")) for _ in range(10)]
    started.append(("B", fair.start("B")))
    assert _served_order(started)[:2] == ["A", "B"]  # behind A's oldest only (ties go by arrival)
    assert fair.start("A") == 10 and fair.start("B") == 1  # A's next waits behind its backlog; B's does not


def test_backlogged_tenants_alternate_and_each_keeps_its_own_order():
    fair = FairShare()
    started = [("A", fair.start("A")) for _ in range(4)] + [("B", fair.start("B")) for _ in range(4)]
    assert _served_order(started) == ["A", "B"] * 4
    a_tags = [p for t, p in started if t == "A"]
    assert a_tags == sorted(a_tags)


def test_a_tenant_back_from_idle_starts_level_with_the_oldest_work_not_ahead_of_it():
    fair = FairShare()
    a = [fair.start("A") for _ in range(6)]
    for tag in a[:4]:
        fair.finish(tag)
    b = fair.start("B")  # never seen: no credit for the time it was away
    assert b == a[4]
    c = fair.start("A")
    assert c == 6 and c > b


def test_a_request_of_n_choices_costs_n():
    fair = FairShare()
    assert fair.start("A", cost=4) == 0
    assert fair.start("A") == 4
    assert fair.start("B") == 0


def test_the_engine_emptying_leaves_no_tags_behind():
    fair = FairShare()
    with pytest.raises(RuntimeError):
        with fair.turn("A"):
            with fair.turn("A") as second:
                assert second == 1
                raise RuntimeError("the request failed")
    assert fair.in_engine() == 0
    assert fair.start("B") == 2  # virtual time is where the work got to, not 0


def test_idle_tenants_are_forgotten():
    fair = FairShare()
    for i in range(500):
        with fair.turn(f"t{i}"):
            pass
    assert len(fair._next) < 100


# -- through the generation service -------------------------------------------------------
class HeldEngine(FakeEngine):
    """Records the priority of every request and holds it until `go` is set, like a busy engine."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, int]] = []
        self.go = asyncio.Event()

    async def generate(self, request):
        self.seen.append((request.request_id, request.priority))
        await self.go.wait()
        async for chunk in super().generate(request):
            yield chunk


def _ctx(model: str, tenant: str | None = None) -> RequestContext:
    ctx = RequestContext("r", "completions", tenant=tenant)
    ctx.resolved(model, None)
    return ctx


async def _flood_then_one(fair: FairShare | None, a: RequestContext, b: RequestContext,
                          stream: bool = False) -> list[int]:
    """Priorities of 5 of A's requests, then one of B's, all in the engine at once."""
    engine = HeldEngine()
    service = GenerationService(engine, fair)

    async def ask(ctx: RequestContext):
        out = await service.respond(CompletionRequest(model=ctx.model, prompt="hi", max_tokens=2,
                                                      stream=stream), ctx)
        if stream:
            return [line async for line in out]
        return out

    tasks = [asyncio.create_task(ask(a)) for _ in range(5)]
    while len(engine.seen) < 5:
        await asyncio.sleep(0)
    tasks.append(asyncio.create_task(ask(b)))
    while len(engine.seen) < 6:
        await asyncio.sleep(0)
    assert fair is None or fair.in_engine() == 6
    engine.go.set()
    await asyncio.gather(*tasks)
    assert fair is None or fair.in_engine() == 0
    return [p for _, p in engine.seen]


@pytest.mark.parametrize("stream", [False, True])
def test_keys_tenants_get_their_share(stream):
    prios = asyncio.run(_flood_then_one(FairShare(), _ctx("tiny", "acme"), _ctx("tiny", "globex"), stream))
    assert prios == [0, 1, 2, 3, 4, 0]


def test_on_an_open_server_the_adapters_owner_is_the_tenant():
    prios = asyncio.run(_flood_then_one(FairShare(), _ctx("acme/support"), _ctx("globex/sales@prod")))
    assert prios == [0, 1, 2, 3, 4, 0]
    assert fair_share_tenant(_ctx("tiny")) == fair_share_tenant(_ctx("other-base")) == "-"
    assert fair_share_tenant(_ctx("acme/support", "globex")) == "globex"  # the key's tenant wins


def test_without_fair_share_everything_is_first_come_first_served():
    assert asyncio.run(_flood_then_one(None, _ctx("tiny", "acme"), _ctx("tiny", "globex"))) == [0] * 6


def test_a_cancelled_request_gives_its_place_back():
    async def scenario() -> int:
        engine, fair = HeldEngine(), FairShare()
        service = GenerationService(engine, fair)
        task = asyncio.create_task(service.respond(CompletionRequest(model="acme/x", prompt="hi", max_tokens=2),
                                                   _ctx("acme/x")))
        while not engine.seen:
            await asyncio.sleep(0)
        assert fair.in_engine() == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return fair.in_engine()

    assert asyncio.run(scenario()) == 0
