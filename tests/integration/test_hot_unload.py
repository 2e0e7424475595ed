"""Unloading an adapter on the real server never breaks a request that already resolved it."""

from __future__ import annotations

import httpx
import pytest
from openai import NotFoundError, OpenAI

from tests.lora_factory import PROBE

pytestmark = pytest.mark.integration


def test_unload_mid_stream_lets_the_stream_finish_on_its_version(server):
    name, path = "acme/legal", server.adapters["acme/legal"]
    admin = {"Authorization": f"Bearer {server.admin_key}"}
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)
    ask = dict(model=name, prompt=PROBE, max_tokens=96, temperature=0.0)
    expected = client.completions.create(**ask).choices[0].text
    parts = []
    try:
        for chunk in client.completions.create(**ask, stream=True):
            if not parts:
                r = httpx.post(f"{server.url}/v1/unload_lora_adapter", json={"lora_name": name}, headers=admin)
                assert r.status_code == 200, r.text
            parts += [c.text for c in chunk.choices]
        assert "".join(parts) == expected
        with pytest.raises(NotFoundError):  # new requests no longer find it
            client.completions.create(**ask)
    finally:  # the server is shared by the session: leave it serving what it started with
        r = httpx.post(f"{server.url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)},
                       headers=admin, timeout=300)
        assert r.status_code == 200, r.text
    assert client.completions.create(**ask).choices[0].text == expected
