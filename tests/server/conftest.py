"""Helpers shared by the server tests: the fake-engine app with two adapters, its clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from loramux.server.app import create_app
from loramux.server.engine.fake import FakeEngine
from loramux.server.settings import ServerSettings
from tests.lora_factory import random_lora

ADMIN = "admin-secret"


@pytest.fixture(scope="session")
def adapter_dir(tiny_base: Path, tmp_path_factory) -> Path:
    """A real adapter for the tiny base: the catalog admits only what the base can serve."""
    return random_lora(tiny_base, tmp_path_factory.mktemp("adapter") / "a", seed=1)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(base_name="tiny", max_model_len=128)


@pytest.fixture
def client(engine: FakeEngine, adapter_dir: Path, tiny_base: Path):
    settings = ServerSettings(base=tiny_base, served_name="tiny", admin_key=ADMIN, admin_paths=[adapter_dir.parent],
                              adapters={"acme/support": adapter_dir, "globex/sales": adapter_dir})

    async def factory(_):
        return engine

    with TestClient(create_app(settings, factory)) as c:
        yield c


@pytest.fixture
def oai(client: TestClient) -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key="k", http_client=client, max_retries=0)



@pytest.fixture
def slow_loads(monkeypatch):
    """`slow_loads(engine)` -> the list of handles the engine is asked to load; each load takes
    50 ms, so concurrent first uses really overlap."""

    def record(engine) -> list:
        loads, real = [], engine.load

        async def counting(handle):
            loads.append(handle)
            await asyncio.sleep(0.05)
            await real(handle)
        monkeypatch.setattr(engine, "load", counting)
        return loads
    return record
