"""Helpers shared by the server tests."""

from __future__ import annotations

import asyncio

import pytest


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
