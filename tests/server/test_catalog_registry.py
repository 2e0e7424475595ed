"""Serving a registry on demand over the fake engine: first use loads, once per version; alias
moves take effect while held versions finish; canaries split by routing key; /v1/models lists
what this base can serve; a bad version is a 400 naming it, counted."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.errors import InvalidRequest
from loramux.adapters.registry import Resolver, publish
from loramux.adapters.store import open_store
from loramux.server.app import create_app
from loramux.server.catalog import AdapterCatalog
from loramux.server.engine.fake import FakeEngine
from loramux.server.settings import ServerSettings
from tests.lora_factory import random_lora


@pytest.fixture(scope="module")
def registry(tiny_base: Path, tmp_path_factory) -> dict:
    """acme/one with two versions (v1 is prod), and globex/other trained on another base."""
    root = tmp_path_factory.mktemp("registry")
    store = open_store(str(root / "store"))
    base = BaseSpec.from_dir(tiny_base)
    v1 = publish(store, random_lora(tiny_base, root / "v1", seed=1), tenant="acme", name="one", base=base).manifest
    v2 = publish(store, random_lora(tiny_base, root / "v2", seed=2), tenant="acme", name="one", base=base).manifest
    other_base = root / "other-base"
    shutil.copytree(tiny_base, other_base)
    (other_base / "loramux_base.json").write_text('{"seed": 99}')  # another base of the same shape
    publish(store, random_lora(tiny_base, root / "o", seed=3), tenant="globex", name="other",
            base=BaseSpec.from_dir(other_base))
    return {"store": store, "root": str(root / "store"), "v1": v1, "v2": v2}


def _catalog(tiny_base: Path, registry: dict) -> tuple[FakeEngine, AdapterCatalog]:
    engine = FakeEngine("tiny")
    settings = ServerSettings(base=tiny_base, registry=registry["root"], refresh_s=0)
    return engine, AdapterCatalog(engine, settings, Resolver(registry["store"], ttl_s=0))


def test_first_use_loads_once_per_version_even_when_many_ask(tiny_base, registry, slow_loads):
    engine, catalog = _catalog(tiny_base, registry)
    loads = slow_loads(engine)

    async def run():
        return await asyncio.gather(*(catalog.acquire(m) for m in ["acme/one"] * 40 + ["acme/one@prod"] * 10))
    handles = asyncio.run(run())
    assert [h.version for h in loads] == [registry["v1"].version] and {h.version for h in handles} == {registry["v1"].version}
    assert asyncio.run(catalog.servable()) == ["acme/one"]  # not globex/other: another base


def test_an_alias_move_takes_effect_and_the_old_version_leaves_once_released(tiny_base, registry):
    engine, catalog = _catalog(tiny_base, registry)
    store, v1, v2 = registry["store"], registry["v1"], registry["v2"]

    async def run():
        held = await catalog.acquire("acme/one")
        store.set_alias(v2.ref, "prod")
        try:
            moved = await catalog.acquire("acme/one")
            assert moved.version == v2.version and moved.id != held.id
            assert held.id in engine.loaded  # still running a request
            await catalog.release(held)
            assert held.id not in engine.loaded and moved.id in engine.loaded
            pinned = await catalog.acquire(f"acme/one@{v1.short_version}")  # a version by hash prefix
            assert pinned.version == v1.version
        finally:
            store.set_alias(v1.ref, "prod")
    asyncio.run(run())


def test_a_canary_splits_by_routing_key(tiny_base, registry):
    engine, catalog = _catalog(tiny_base, registry)
    store, v1, v2 = registry["store"], registry["v1"], registry["v2"]
    store.set_alias(v1.ref, "prod", canary=v2.version, weight=0.25)

    async def run():
        picks = []
        for i in range(1000):
            h = await catalog.acquire("acme/one", routing_key=f"user-{i}")
            picks.append(h.version)
            await catalog.release(h)
        again = [(await catalog.acquire("acme/one", routing_key=f"user-{i}")).version for i in range(100)]
        return picks, again
    try:
        picks, again = asyncio.run(run())
    finally:
        store.set_alias(v1.ref, "prod")
    assert 0.20 <= picks.count(v2.version) / len(picks) <= 0.30
    assert again == picks[:100]  # one key, one version


def test_http_reports_the_version_and_refuses_another_bases_adapter(tiny_base, registry):
    settings = ServerSettings(base=tiny_base, served_name="tiny", registry=registry["root"], refresh_s=0,
                              admin_key="k")
    engine = FakeEngine("tiny")

    async def factory(_):
        return engine

    with TestClient(create_app(settings, factory)) as client:
        assert {m["id"] for m in client.get("/v1/models").json()["data"]} == {"tiny", "acme/one"}
        r = client.post("/v1/completions", json={"model": "acme/one", "prompt": "hi", "max_tokens": 2,
                                                 "user": "u1"})
        assert r.status_code == 200 and r.headers["x-loramux-adapter-version"] == registry["v1"].short_version
        client.post("/v1/completions", json={"model": "acme/one", "prompt": "hi", "max_tokens": 2, "user": "u1"})
        text = client.get("/metrics").text  # the first request waited for the load, the second did not
        for start in ("cold", "warm"):
            assert ('loramux_time_to_first_token_seconds_count{adapter="acme/one",endpoint="completions",'
                    f'start="{start}",tenant="acme"}} 1.0') in text
        bad = client.post("/v1/completions", json={"model": "globex/other", "prompt": "hi", "max_tokens": 2})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_adapter"
        assert "globex/other" in bad.json()["error"]["message"] and "Traceback" not in bad.text
        assert 'loramux_request_errors_total{code="invalid_adapter",endpoint="completions"} 1.0' in \
            client.get("/metrics").text
        nope = client.post("/v1/completions", json={"model": "acme/nothing", "prompt": "hi", "max_tokens": 2})
        assert nope.status_code == 404
        reload = client.post("/v1/load_lora_adapter", json={"lora_name": "acme/one"},
                             headers={"Authorization": "Bearer k"})
        assert reload.status_code == 200 and reload.json()["version"] == registry["v1"].short_version



def test_a_per_request_merge_is_built_once_per_recipe(tiny_base, registry, slow_loads):
    engine, catalog = _catalog(tiny_base, registry)
    loads = slow_loads(engine)
    v2 = registry["v2"]
    model = f"acme/one+acme/one@{v2.short_version}"

    async def run():
        merged = await asyncio.gather(*(catalog.acquire(model) for _ in range(8)))
        weighted = await catalog.acquire("ignored", parts=[("acme/one", 0.7), (f"acme/one@{v2.short_version}", 0.3)])
        return merged, weighted
    merged, weighted = asyncio.run(run())
    assert len({h.id for h in merged}) == 1 and merged[0].name == model
    assert weighted.id != merged[0].id and weighted.version != merged[0].version  # another recipe
    merges = [h for h in loads if "+" in h.name]
    assert len(merges) == 2 and len(loads) == 4  # each input version once, each recipe once

    async def refused():
        for name, kw, param in [("acme/one+tiny", {}, "model"), (model, {"merge": "average"}, "merge")]:
            with pytest.raises(InvalidRequest) as err:
                await catalog.acquire(name, **kw)
            assert err.value.param == param
    asyncio.run(refused())
