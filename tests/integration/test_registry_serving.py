"""The real server serving a registry on demand: first use loads the prod version once for
many concurrent requests, every answer names its version, and a moved alias takes effect."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.lora_factory import PROBE

pytestmark = pytest.mark.integration


def _ask(server, model: str, **extra) -> httpx.Response:
    body = {"model": model, "prompt": PROBE, "max_tokens": 8, "temperature": 0}
    return httpx.post(f"{server.url}/v1/completions", json=body, timeout=300, **extra)


def test_registry_adapters_load_on_first_use_and_follow_their_alias(server):
    store = server.registry
    versions = sorted((m for m in store.list("reg") if m.name == "one"), key=lambda m: m.created_at)
    v1, v2 = versions[0], versions[1]
    assert store.aliases("reg/one") == {"prod": v1.version}  # the first version became prod

    async def many():
        body = {"model": "reg/one", "prompt": PROBE, "max_tokens": 8, "temperature": 0}
        async with httpx.AsyncClient(timeout=300) as client:
            return await asyncio.gather(*(client.post(f"{server.url}/v1/completions", json=body)
                                          for _ in range(16)))
    first = asyncio.run(many())
    assert {r.status_code for r in first} == {200}
    assert {r.headers["x-loramux-adapter-version"] for r in first} == {v1.short_version}
    texts = {r.json()["choices"][0]["text"] for r in first}
    assert len(texts) == 1
    pinned_v2 = _ask(server, f"reg/one@{v2.short_version}")
    assert pinned_v2.headers["x-loramux-adapter-version"] == v2.short_version
    assert pinned_v2.json()["choices"][0]["text"] not in texts  # distinct adapters, by a logit margin
    base = _ask(server, server.base_name).json()["choices"][0]["text"]
    assert base not in texts

    store.set_alias(v2.ref, "prod")
    try:
        moved = _ask(server, "reg/one")
        assert moved.headers["x-loramux-adapter-version"] == v2.short_version
        assert moved.json()["choices"][0]["text"] == pinned_v2.json()["choices"][0]["text"]
    finally:
        store.set_alias(v1.ref, "prod")
    assert _ask(server, "reg/one").headers["x-loramux-adapter-version"] == v1.short_version


def test_the_admin_api_shows_where_adapters_are_and_pins_them(server):
    """On the real engine: a just-used adapter is in a batch slot, a pin keeps it there while
    the other slots churn, and the listing covers static and registry adapters alike."""
    admin = {"Authorization": f"Bearer {server.admin_key}"}

    def rows() -> dict[tuple[str, str], dict]:
        r = httpx.get(f"{server.url}/v1/admin/adapters", headers=admin, timeout=60)
        assert r.status_code == 200, r.text
        return {(row["name"], row["version"]): row for row in r.json()["data"]}

    answer = _ask(server, "reg/one")
    assert answer.status_code == 200
    served = ("reg/one", answer.headers["x-loramux-adapter-version"])  # earlier tests may have loaded others
    listed = rows()
    assert listed[served]["state"] == "device" and listed[served]["source"] == "registry"
    assert set(listed[served]["load_s"]) == {"fetch", "validate", "engine"}
    assert set(server.adapters) <= {name for name, _ in listed}
    r = httpx.post(f"{server.url}/v1/admin/adapters/pin", json={"name": "reg/one"}, headers=admin, timeout=60)
    assert r.status_code == 200 and r.json()["version"] == served[1], r.text
    try:
        for name in server.adapters:  # every other slot used since
            assert _ask(server, name).status_code == 200
        assert rows()[served] | {"idle_s": None} == listed[served] | {"pinned": True, "idle_s": None}
    finally:
        r = httpx.post(f"{server.url}/v1/admin/adapters/unpin", json={"name": "reg/one"}, headers=admin, timeout=60)
        assert r.status_code == 200, r.text
    assert not rows()[served]["pinned"]
