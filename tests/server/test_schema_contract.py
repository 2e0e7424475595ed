"""The schema is the contract: /openapi.json says every answer a route gives, and Schemathesis
finds no request the server answers otherwise (fake engine; tests/integration runs the real one)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient

from loramux.server.app import create_app
from loramux.server.engine.fake import FakeEngine
from loramux.server.settings import ServerSettings
from tests.schema_fuzz import Served, config, fuzz
from tests.server.conftest import ADMIN

ERRORS = {  # what each route can answer besides 200: the reason it is declared
    ("post", "/v1/completions"): {"400", "401", "404", "429", "500", "503"},
    ("post", "/v1/chat/completions"): {"400", "401", "404", "429", "500", "503"},
    ("get", "/v1/models"): {"401", "500", "503"},
    ("post", "/v1/load_lora_adapter"): {"400", "401", "403", "404", "409", "500", "503"},
    ("post", "/v1/unload_lora_adapter"): {"400", "401", "403", "404", "500"},
    ("get", "/v1/admin/adapters"): {"401", "403", "500", "503"},
    ("post", "/v1/admin/adapters/pin"): {"400", "401", "403", "404", "409", "500", "503"},
    ("post", "/v1/admin/adapters/unpin"): {"400", "401", "403", "409", "500"},
    ("post", "/v1/admin/adapters/reload"): {"400", "401", "403", "404", "409", "500", "503"},
    ("get", "/health"): {"500", "503"},
    ("get", "/metrics"): set(),
}


def test_every_route_declares_its_errors_with_openais_error_model(client: TestClient):
    spec = client.get("/openapi.json").json()
    routes = {(m, p): op for p, ops in spec["paths"].items() for m, op in ops.items()}
    assert set(routes) == set(ERRORS)
    for route, op in routes.items():
        assert set(op["responses"]) - {"200"} == ERRORS[route], route
        for status in ERRORS[route]:
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (route, status)
    error = spec["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"message", "type", "param", "code"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # a validation failure is a 400
    assert "Retry-After" in routes[("post", "/v1/completions")]["responses"]["429"]["headers"]


def test_an_undeclared_method_is_405_with_allow(client: TestClient):
    for method, path, allowed in (("GET", "/v1/completions", "POST"), ("DELETE", "/v1/models", "GET"),
                                  ("TRACE", "/health", "GET"), ("PUT", "/v1/admin/adapters/pin", "POST")):
        r = client.request(method, path)
        assert r.status_code == 405 and r.headers["allow"] == allowed, (method, path)
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_health_and_metrics_send_the_content_types_they_declare(client: TestClient):
    spec = client.get("/openapi.json").json()["paths"]
    health = client.get("/health")
    assert health.headers["content-type"] == "application/json" and health.json() == {"status": "ok"}
    assert list(spec["/health"]["get"]["responses"]["200"]["content"]) == ["application/json"]
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain") and "loramux_requests_total" in metrics.text
    assert list(spec["/metrics"]["get"]["responses"]["200"]["content"]) == [metrics.headers["content-type"]]


@pytest.mark.parametrize("prompt", ["", [""], ["", "abc"]])
def test_an_empty_prompt_is_answered_as_openai_does(client: TestClient, prompt):
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == (1 if isinstance(prompt, str) else len(prompt))
    assert r.json()["usage"]["prompt_tokens"] >= 1  # the start token


@pytest.mark.parametrize("body,param", [
    ({"prompt": []}, "prompt"), ({"prompt": [[]]}, "prompt"), ({"prompt": [5000]}, "prompt"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"prompt": "x", "merge": "nope"}, "merge"),
    ({"prompt": "x", "logit_bias": {"x": 1}}, "logit_bias"),
])
def test_what_the_schema_forbids_is_a_400_naming_the_field(client: TestClient, body, param):
    r = client.post("/v1/completions", json={"model": "tiny", **body})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith(param), r.text


def test_state_refusals_are_conflicts_not_bad_requests(client: TestClient):
    auth = {"Authorization": f"Bearer {ADMIN}"}
    for path, name in (("unpin", "acme/support"), ("pin", "tiny"), ("reload", "tiny")):
        r = client.post(f"/v1/admin/adapters/{path}", json={"name": name}, headers=auth)
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", (path, r.text)


def test_schemathesis_finds_no_server_error_and_no_conformance_failure(adapter_dir: Path, tiny_base: Path):
    """Every phase and check of `st run`, bounded; the fuzz may unload and pin, so it gets its own app.
    Its engine has the tiny base's context (512), as the real-engine fuzz does: in 128 tokens a
    two-message chat with a tool did not fit (a CI run), and the fuzz counts that 400 as a valid
    request refused."""
    engine = FakeEngine(base_name="tiny", max_model_len=512)
    settings = ServerSettings(base=tiny_base, served_name="tiny", admin_key=ADMIN, admin_paths=[adapter_dir.parent],
                              adapters={"acme/support": adapter_dir, "globex/sales": adapter_dir})

    async def factory(_):
        return engine

    app = create_app(settings, factory)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config(
        max_examples=30, headers={"Authorization": f"Bearer {ADMIN}"}))
    started = time.monotonic()
    report = fuzz(schema, Served(["tiny", "acme/support", "globex/sales"], engine.vocab_size))
    print(f"\nschemathesis (fake engine): {report.cases} cases in {time.monotonic() - started:.1f}s", file=sys.stderr)
    assert report.cases > 500
    assert not report.errors, report.errors
    assert not report.failures, "\n".join(report.failures)
