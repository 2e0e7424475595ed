"""The adapter catalog over the fake engine: handles, single-flight loads, versions, admission."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from loramux.adapters.errors import InvalidRequest, NotFound
from loramux.server import catalog as catalog_module
from loramux.server.catalog import AdapterCatalog
from loramux.server.context import RequestContext
from loramux.server.engine.fake import FakeEngine
from loramux.server.generation import GenerationService
from loramux.server.openai_protocol import CompletionRequest
from loramux.server.settings import ServerSettings
from tests.lora_factory import random_lora


@pytest.fixture(scope="module")
def versions(tiny_base: Path, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("versions")
    return [random_lora(tiny_base, root / f"v{i}", seed=i) for i in (1, 2)]


@pytest.fixture
def setup(tiny_base: Path):
    engine = FakeEngine("tiny")
    return engine, AdapterCatalog(engine, ServerSettings(base=tiny_base, max_lora_rank=16))


def test_concurrent_loads_of_one_version_share_one_load(setup, versions, slow_loads):
    engine, catalog = setup
    loads = slow_loads(engine)

    async def run():
        return await asyncio.gather(*(catalog.load("acme/support", versions[0]) for _ in range(5)))
    handles = asyncio.run(run())
    assert len({h.id for h in handles}) == 1 and [h.id for h in loads] == [handles[0].id]  # no leaked engine ids
    assert catalog.resolve("acme/support") == handles[0]


def test_a_new_version_gets_a_new_handle_and_frees_the_old_one(setup, versions):
    engine, catalog = setup

    async def run():
        old = await catalog.load("acme/support", versions[0])
        new = await catalog.load("acme/support", versions[1])
        return old, new
    old, new = asyncio.run(run())
    assert new.id != old.id and catalog.resolve("acme/support") == new
    assert old.id not in engine.loaded and new.id in engine.loaded
    assert [h.name for h in catalog.served()] == ["acme/support"]


def test_a_request_keeps_the_version_it_resolved(setup, versions):
    """Unload (or a new version) between resolution and generation: the request still runs, on its version."""
    engine, catalog = setup
    service = GenerationService(engine)
    req = CompletionRequest(model="acme/support", prompt="hello", max_tokens=4, temperature=0)

    async def run():
        await catalog.load("acme/support", versions[0])
        first = RequestContext("r1", "completions")
        first.resolved(req.model, catalog.resolve(req.model))
        expected = (await service.respond(req, first))["choices"][0]["text"]
        held = RequestContext("r2", "completions")
        held.resolved(req.model, catalog.resolve(req.model))
        await catalog.load("acme/support", versions[1])  # the name moves on...
        await catalog.unload("acme/support")  # ...and goes away
        got = (await service.respond(req, held))["choices"][0]["text"]
        return expected, got
    expected, got = asyncio.run(run())
    assert got == expected
    with pytest.raises(NotFound):
        catalog.resolve("acme/support")


def test_admission_runs_off_the_event_loop_and_refuses_before_the_engine(setup, versions, tiny_base, tmp_path,
                                                                         monkeypatch):
    engine, catalog = setup
    threads = []
    real_admit = catalog_module.admit

    def recording(name, path, settings):
        threads.append(threading.current_thread() is threading.main_thread())
        real_admit(name, path, settings)
    monkeypatch.setattr(catalog_module, "admit", recording)
    wide = random_lora(tiny_base, tmp_path / "wide", seed=3, r=32)
    with pytest.raises(InvalidRequest) as exc:
        asyncio.run(catalog.load("acme/wide", wide))
    assert "rank" in exc.value.message and threads == [False]
    assert engine.loaded == set()
    with pytest.raises(InvalidRequest):
        asyncio.run(catalog.load("../escape", versions[0]))
    with pytest.raises(NotFound):
        asyncio.run(catalog.unload("acme/never"))
