"""add-tenant publishes only an adapter that beats the base; --server loads it into a running server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from loramux.adapters.store import open_store
from loramux.trainer.config import load_config, recipe_path
from loramux.trainer.tenant import Gate, GateFailed, add_tenant
from loramux.adapters.registry import Resolver

FAST = ["training.threads=1"]  # as in conftest.py: one thread is fastest on a busy small CPU


def test_published_manifest_records_data_hash_scores_and_method(lora_tenant, store):
    mf = lora_tenant.manifest
    assert (mf.tenant, mf.name, mf.method, mf.rank) == ("demo", "pirate", "lora", 16)  # the size rule's r
    assert mf.data_hash == lora_tenant.metrics["data_hash"] and mf.data_hash.startswith("sha256:")
    assert mf.eval_scores["exact_match"] >= 0.95 and mf.eval_scores["base_exact_match"] <= 0.05
    s = open_store(str(store))
    assert Resolver(s).resolve("demo/pirate").manifest.version == mf.version  # `prod` points at it
    assert (Resolver(s).resolve("demo/pirate").path / "adapter_model.safetensors").is_file()


def test_failing_gate_publishes_nothing(tiny_base, demo_data, tmp_path):
    train, held = demo_data["pirate"]
    store = tmp_path / "store"
    cfg = load_config(recipe_path("lora"), [f"base={tiny_base}", f"data.train={train}", f"data.eval={held}",
                                            f"output_dir={tmp_path / 'run'}", "training.max_steps=2", *FAST])
    with pytest.raises(GateFailed) as e:
        add_tenant(cfg, tenant="acme", name="undertrained", store=str(store), gate=Gate(min_gain=0.5))
    assert "not published" in e.value.message and "below the required" in e.value.message
    assert open_store(str(store)).list() == []
    assert not list(store.rglob("adapter_model.safetensors"))


def test_bad_names_fail_before_any_training(tiny_base, demo_data, tmp_path):
    train, _ = demo_data["pirate"]
    cfg = load_config(recipe_path("full"), [f"base={tiny_base}", f"data.train={train}",
                                            f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(Exception) as e:
        add_tenant(cfg, tenant="Bad Tenant!", name="x", store=str(tmp_path / "store"))
    assert "tenant" in str(e.value) and "full" in str(e.value)
    assert not (tmp_path / "run").exists()


class _Admin(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Admin.seen.append((self.path, self.headers.get("Authorization"), body))
        payload = json.dumps({"status": "loaded", "lora_name": body["lora_name"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_server_is_told_to_load_the_published_version(lora_tenant, store, monkeypatch):
    from loramux.trainer.tenant import notify_server

    httpd = HTTPServer(("127.0.0.1", 0), _Admin)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("LORAMUX_ADMIN_KEY", "sekrit")
    path = Resolver(open_store(str(store))).resolve("demo/pirate").path
    try:
        reply = notify_server(f"http://127.0.0.1:{httpd.server_port}", "demo/pirate", path)
    finally:
        httpd.shutdown()
    assert reply == {"status": "loaded", "lora_name": "demo/pirate"}
    route, auth, body = _Admin.seen[-1]
    assert route == "/v1/load_lora_adapter" and auth == "Bearer sekrit"
    assert body == {"lora_name": "demo/pirate", "lora_path": str(path)}
