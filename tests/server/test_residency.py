"""Residency over the fake engine: the catalog keeps at most its capacity of versions, cold ones
leave, held and pinned ones never do, a pin follows its alias, and the admin API lists where
each adapter is (device / host / store) and pins, unpins and reloads by name."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.errors import Conflict
from loramux.adapters.registry import Resolver, publish
from loramux.adapters.store import open_store
from loramux.server.app import create_app
from loramux.server.catalog import AdapterCatalog
from loramux.server.engine.fake import FakeEngine
from loramux.server.metrics import Metrics
from loramux.server.settings import ServerSettings
from tests.lora_factory import random_lora

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture(scope="module")
def registry(tiny_base: Path, tmp_path_factory) -> dict:
    """t/a0..t/a5, one version each, and t/a0 with a second version (not prod)."""
    root = tmp_path_factory.mktemp("residency")
    store = open_store(str(root / "store"))
    base = BaseSpec.from_dir(tiny_base)
    first = {f"t/a{i}": publish(store, random_lora(tiny_base, root / f"a{i}", seed=i), tenant="t", name=f"a{i}",
                                base=base).manifest for i in range(6)}
    second = publish(store, random_lora(tiny_base, root / "a0v2", seed=99), tenant="t", name="a0", base=base).manifest
    return {"store": store, "root": str(root / "store"), "first": first, "second": second}


def _catalog(tiny_base: Path, registry: dict, **settings) -> tuple[FakeEngine, AdapterCatalog, Metrics]:
    s = ServerSettings(base=tiny_base, registry=registry["root"], refresh_s=0, **settings)
    engine, metrics = FakeEngine("tiny", max_loras=s.max_loras), Metrics()
    return engine, AdapterCatalog(engine, s, Resolver(registry["store"], ttl_s=0), events=metrics), metrics


async def _use(catalog: AdapterCatalog, model: str):
    handle = await catalog.acquire(model)
    await catalog.release(handle)
    return handle


def _sample(metrics: Metrics, name: str, **labels) -> float:
    """The sum over every series of `name` with these labels (whatever their adapter)."""
    return sum(s.value for family in metrics.registry.collect() for s in family.samples
               if s.name == name and labels.items() <= s.labels.items())


def test_the_catalog_keeps_at_most_its_capacity_least_recent_out_first(tiny_base, registry):
    engine, catalog, metrics = _catalog(tiny_base, registry, max_loras=2, max_cpu_loras=3)

    async def run():
        handles = [await _use(catalog, f"t/a{i}") for i in range(6)]
        assert len(catalog.residency.loaded) == 3 == len(engine.loaded)
        assert {h.id for h in handles[-3:]} == engine.loaded  # the three most recent stay
        again = await _use(catalog, "t/a0")  # evicted: loaded afresh, under a new id
        assert again.version == handles[0].version and again.id != handles[0].id
    asyncio.run(run())
    assert _sample(metrics, "loramux_adapter_evictions_total", source="registry", reason="capacity") == 4
    assert _sample(metrics, "loramux_adapter_loads_total", source="registry", outcome="ok") == 7


def test_cold_versions_leave_but_held_ones_stay_until_released(tiny_base, registry):
    engine, catalog, metrics = _catalog(tiny_base, registry, idle_s=0.2)

    async def run():
        cold = await _use(catalog, "t/a1")
        held = await catalog.acquire("t/a2")
        await asyncio.sleep(0.3)
        await catalog.evict()
        assert cold.id not in engine.loaded and held.id in engine.loaded
        await catalog.release(held)
        await catalog.evict()  # idle since it was taken, and free now
        assert held.id not in engine.loaded and not catalog.residency.loaded
    asyncio.run(run())
    assert _sample(metrics, "loramux_adapter_evictions_total", source="registry", reason="cold") == 2


def test_the_policy_task_evicts_without_being_asked(tiny_base, registry):
    engine, catalog, _ = _catalog(tiny_base, registry, idle_s=0.3)

    async def run():
        policy = asyncio.create_task(catalog.run_policy())
        try:
            handle = await _use(catalog, "t/a3")
            deadline = time.monotonic() + 5
            while handle.id in engine.loaded and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert handle.id not in engine.loaded
        finally:
            policy.cancel()
    asyncio.run(run())


def test_a_pin_survives_cold_and_capacity_and_follows_its_alias(tiny_base, registry):
    engine, catalog, _ = _catalog(tiny_base, registry, max_loras=2, max_cpu_loras=2, idle_s=0.2)
    store, first, second = registry["store"], registry["first"], registry["second"]

    async def run():
        pinned = await catalog.pin("t/a0")
        assert pinned.id in engine.pinned and pinned.id in engine.slots
        for i in range(1, 5):
            await _use(catalog, f"t/a{i}")  # churn through the one free slot
        await asyncio.sleep(0.3)
        await catalog.evict()
        assert engine.loaded == {pinned.id} and list(engine.slots)[0] == pinned.id
        store.set_alias(second.ref, "prod")
        try:
            moved = await _use(catalog, "t/a0")
            assert moved.version == second.version
            assert engine.pinned == {moved.id} and pinned.id not in engine.loaded
            await catalog.unpin("t/a0")
            assert not engine.pinned
            await asyncio.sleep(0.3)
            await catalog.evict()
            assert moved.id not in engine.loaded  # an unpinned version goes cold like any other
        finally:
            store.set_alias(first["t/a0"].ref, "prod")
    asyncio.run(run())


def test_pins_must_leave_a_slot_for_everyone_else(tiny_base, registry):
    with pytest.raises(ValueError, match="pin fewer or raise --max-loras"):
        ServerSettings(base=tiny_base, max_loras=2, pins=["t/a0", "t/a1"])
    _, catalog, _ = _catalog(tiny_base, registry, max_loras=2)

    async def run():
        await catalog.pin("t/a0")
        with pytest.raises(Conflict, match="larger --max-loras"):
            await catalog.pin("t/a1")
        with pytest.raises(Conflict, match="not pinned"):
            await catalog.unpin("t/a1")
    asyncio.run(run())


def test_a_canary_keeps_both_versions_loaded(tiny_base, registry):
    """Requests alternating between an alias's primary and canary must not unload each other."""
    engine, catalog, metrics = _catalog(tiny_base, registry)
    store, first, second = registry["store"], registry["first"], registry["second"]
    store.set_alias(first["t/a0"].ref, "prod", canary=second.ref, weight=0.5)
    try:
        async def run():
            for k in range(40):
                h = await catalog.acquire("t/a0", routing_key=f"user-{k}")
                await catalog.release(h)
        asyncio.run(run())
    finally:
        store.set_alias(first["t/a0"].ref, "prod")
    assert len(engine.loaded) == 2
    assert _sample(metrics, "loramux_adapter_loads_total", source="registry", outcome="ok") == 2


def test_the_admin_api_lists_states_and_pins_by_name(tiny_base, registry):
    settings = ServerSettings(base=tiny_base, registry=registry["root"], refresh_s=0, admin_key="admin-secret",
                              max_loras=2, max_cpu_loras=3, pins=["t/a5"])

    async def engine_factory(_):
        return FakeEngine("tiny", max_loras=2)

    with TestClient(create_app(settings, engine_factory)) as client:
        assert client.get("/v1/admin/adapters").status_code == 401
        for model in ("t/a1", "t/a2"):
            r = client.post("/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 2})
            assert r.status_code == 200, r.text
        rows = {r["name"]: r for r in client.get("/v1/admin/adapters", headers=ADMIN).json()["data"]}
        assert set(rows) == {f"t/a{i}" for i in range(6)}
        assert rows["t/a5"]["pinned"] and rows["t/a5"]["state"] == "device"  # pinned at start: in a slot
        assert rows["t/a2"]["state"] == "device" and rows["t/a1"]["state"] == "host"  # one free slot: a2 took it
        assert rows["t/a3"]["state"] == "store" and rows["t/a3"]["version"] == registry["first"]["t/a3"].short_version
        assert set(rows["t/a1"]["load_s"]) == {"fetch", "validate", "engine"}
        assert rows["t/a1"]["source"] == "registry" and rows["t/a1"]["in_flight"] == 0

        r = client.post("/v1/admin/adapters/pin", json={"name": "t/a3"}, headers=ADMIN)
        assert r.status_code == 409 and "--max-loras" in r.json()["error"]["message"]  # a5 + a3 = every slot
        assert client.post("/v1/admin/adapters/unpin", json={"name": "t/a5"}, headers=ADMIN).status_code == 200
        r = client.post("/v1/admin/adapters/pin", json={"name": "t/a3"}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["version"] == registry["first"]["t/a3"].short_version
        rows = {r["name"]: r for r in client.get("/v1/admin/adapters", headers=ADMIN).json()["data"]}
        assert rows["t/a3"]["pinned"] and not rows["t/a5"]["pinned"]

        r = client.post("/v1/admin/adapters/reload", json={"name": "t/a4"}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["version"] == registry["first"]["t/a4"].short_version
        r = client.post("/v1/admin/adapters/pin", json={"name": "t/nope"}, headers=ADMIN)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_a_cold_load_shows_in_the_requests_server_timing(tiny_base, registry):
    settings = ServerSettings(base=tiny_base, registry=registry["root"], refresh_s=0)

    async def engine_factory(_):
        return FakeEngine("tiny")

    def timing(client: TestClient) -> dict[str, float]:
        r = client.post("/v1/completions", json={"model": "t/a4", "prompt": "hi", "max_tokens": 2})
        return {k: float(v) for k, v in (p.split(";dur=") for p in r.headers["server-timing"].split(", "))}

    with TestClient(create_app(settings, engine_factory)) as client:
        cold, warm = timing(client), timing(client)
    assert cold["load"] > 0 and "load" not in warm and warm["resolve"] >= 0
