"""Tenant keys over the fake engine: `loramux keys` stores hashes only; `serve --keys` lets a key
reach only its grants, answers anything else exactly like a name that exists nowhere, keeps
admin calls for admin keys, and follows changes to the file without a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai import AuthenticationError, NotFoundError, OpenAI
from typer.testing import CliRunner

from loramux.cli import app as loramux
from loramux.server.app import create_app
from loramux.server.engine.fake import FakeEngine
from loramux.server.keys import Keyring
from loramux.server.settings import ServerSettings
from tests.lora_factory import random_lora

ADAPTERS = ("acme/support", "acme/legal", "globex/sales")


def _keys(path: Path, *args: str) -> str:
    r = CliRunner().invoke(loramux, ["keys", *args, "--keys", str(path)])
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "keys.json"
    made = {"acme": _keys(path, "create", "--tenant", "acme"),
            "globex": _keys(path, "create", "--tenant", "globex", "--no-base"),
            "ops": _keys(path, "create", "--tenant", "ops", "--adapters", "*", "--admin")}
    return {"path": str(path), **{k: v.strip() for k, v in made.items()}} | {"raw": made["acme"]}


@pytest.fixture
def client(tiny_base: Path, tmp_path_factory, keys):
    folder = tmp_path_factory.mktemp("keys-adapters")
    adapters = {name: random_lora(tiny_base, folder / name.replace("/", "--"), seed=i)
                for i, name in enumerate(ADAPTERS)}
    settings = ServerSettings(base=tiny_base, served_name="tiny", adapters=adapters, keys=keys["path"])

    async def factory(_):
        return FakeEngine(base_name="tiny", max_model_len=128)

    with TestClient(create_app(settings, factory)) as c:
        yield c


def _oai(client: TestClient, key: str) -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)


def test_create_prints_one_key_and_stores_only_its_hash(keys):
    assert keys["raw"].count("\n") == 1 and keys["raw"].startswith("lmx-")
    stored = Path(keys["path"]).read_text()
    assert all(keys[t] not in stored for t in ("acme", "globex", "ops"))
    listed = _keys(Path(keys["path"]), "list")
    assert "acme/*" in listed and "globex" in listed and keys["acme"] not in listed
    assert Path(keys["path"]).stat().st_mode & 0o077 == 0


def test_a_key_reaches_its_own_adapters_and_nothing_else(client, keys):
    acme = _oai(client, keys["acme"])
    assert {m.id for m in acme.models.list().data} == {"tiny", "acme/support", "acme/legal"}
    assert acme.completions.create(model="acme/support", prompt="hi", max_tokens=2).choices[0].text
    with pytest.raises(NotFoundError):
        acme.completions.create(model="globex/sales", prompt="hi", max_tokens=2)
    with pytest.raises(NotFoundError):  # a merge needs every part granted
        acme.completions.create(model="acme/support+globex/sales", prompt="hi", max_tokens=2)
    globex = _oai(client, keys["globex"])
    assert {m.id for m in globex.models.list().data} == {"globex/sales"}  # --no-base
    with pytest.raises(NotFoundError):
        globex.completions.create(model="tiny", prompt="hi", max_tokens=2)


def test_forbidden_and_nonexistent_names_get_the_same_answer(client, keys):
    """Byte for byte, apart from the request id and the echoed name (same length here)."""
    auth = {"Authorization": f"Bearer {keys['acme']}"}

    def ask(model: str):
        r = client.post("/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 2}, headers=auth)
        headers = {k: v for k, v in r.headers.items() if k != "x-request-id"}
        return r.status_code, r.text.replace(model, "MODEL"), headers

    forbidden, nowhere = ask("globex/sales"), ask("globex/nopes")
    assert forbidden == nowhere and forbidden[0] == 404 and "model_not_found" in forbidden[1]


def test_missing_unknown_and_revoked_keys_are_401(client, keys):
    for key in ("", "sk-not-a-loramux-key", keys["acme"][:-1] + "x"):
        r = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"} if key else {})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert key[:12] not in r.text or not key
    with pytest.raises(AuthenticationError):
        _oai(client, "nope").models.list()
    assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200  # stay open
    assert keys["acme"] not in client.get("/metrics").text


def test_admin_calls_need_an_admin_key(client, keys):
    body = {"lora_name": "acme/support"}
    r = client.post("/v1/unload_lora_adapter", json=body, headers={"Authorization": f"Bearer {keys['acme']}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    r = client.get("/v1/admin/adapters", headers={"Authorization": f"Bearer {keys['ops']}"})
    assert r.status_code == 200
    assert client.get("/v1/admin/adapters").status_code == 401


def test_the_server_follows_the_keys_file_without_a_restart(client, keys):
    path = Path(keys["path"])
    acme = _oai(client, keys["acme"])
    acme.models.list()
    key_id = keys["acme"].split("-")[1]
    _keys(path, "revoke", key_id)
    newcomer = _keys(path, "create", "--tenant", "initech").strip()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            acme.models.list()
        except AuthenticationError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("a revoked key still works after 5 s")
    assert [m.id for m in _oai(client, newcomer).models.list().data] == ["tiny"]


def test_a_broken_keys_file_keeps_the_keys_read_before(tmp_path: Path, keys):
    ring = Keyring(Path(keys["path"]), check_every_s=0)
    Path(keys["path"]).write_text("{not json")
    assert ring.check(f"Bearer {keys['acme']}").tenant == "acme"


def test_logs_carry_the_tenant_and_key_id_never_the_key(client, keys, caplog):
    with caplog.at_level("INFO", logger="loramux.server"):
        _oai(client, keys["acme"]).completions.create(model="acme/support", prompt="hi", max_tokens=2)
    (line,) = [r for r in caplog.records if r.getMessage() == "request"]
    assert (line.tenant, line.key_id, line.model, line.status) == ("acme", keys["acme"].split("-")[1],
                                                                    "acme/support", 200)
    assert all(keys["acme"] not in str(v) for r in caplog.records for v in vars(r).values())
