"""The HTTP layer over the fake engine: OpenAI shapes, streaming, errors, admin, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai import NotFoundError, OpenAI

from loramux.server.engine.fake import FakeEngine
from tests.server.conftest import ADMIN


def test_models_lists_base_and_adapters_with_parent(oai: OpenAI):
    models = {m.id: m for m in oai.models.list().data}
    assert set(models) == {"tiny", "acme/support", "globex/sales"}
    assert models["acme/support"].parent == "tiny"
    assert getattr(models["tiny"], "parent", None) is None


def test_completion_has_usage_and_adapter_specific_text(oai: OpenAI):
    base = oai.completions.create(model="tiny", prompt="hello", max_tokens=5, temperature=0)
    tuned = oai.completions.create(model="acme/support", prompt="hello", max_tokens=5, temperature=0)
    assert base.usage.prompt_tokens == 5 and base.usage.completion_tokens == 5
    assert base.usage.total_tokens == 10
    assert base.choices[0].finish_reason == "length"
    assert base.choices[0].text != tuned.choices[0].text


def test_n_and_prompt_list_index_choices(oai: OpenAI):
    resp = oai.completions.create(model="tiny", prompt=["ab", "cd"], n=2, max_tokens=3)
    assert [c.index for c in resp.choices] == [0, 1, 2, 3]
    assert resp.usage.prompt_tokens == 4 and resp.usage.completion_tokens == 12


def test_chat_stream_with_usage_matches_non_stream(oai: OpenAI):
    msgs = [{"role": "user", "content": "hi"}]
    full = oai.chat.completions.create(model="acme/support", messages=msgs, max_tokens=6, seed=3)
    chunks = list(oai.chat.completions.create(model="acme/support", messages=msgs, max_tokens=6, seed=3,
                                              stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_stream_ends_with_done(client: TestClient):
    with client.stream("POST", "/v1/completions",
                       json={"model": "tiny", "prompt": "x", "max_tokens": 2, "stream": True}) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    assert all(ln.startswith("data: ") for ln in lines)


def test_stop_string_ends_with_stop_reason(oai: OpenAI, engine: FakeEngine):
    full = oai.completions.create(model="tiny", prompt="q", max_tokens=8, temperature=0)
    second_word = full.choices[0].text.split()[1]
    cut = oai.completions.create(model="tiny", prompt="q", max_tokens=8, temperature=0, stop=[second_word])
    assert cut.choices[0].finish_reason == "stop"
    assert second_word not in cut.choices[0].text.split()[1:]


def test_unknown_model_is_404_model_not_found(oai: OpenAI):
    with pytest.raises(NotFoundError) as exc:
        oai.completions.create(model="acme/secret", prompt="x", max_tokens=2)
    assert exc.value.status_code == 404
    assert exc.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("body,param", [
    ({"model": "tiny", "prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"model": "tiny", "prompt": "x", "max_tokens": -3}, "max_tokens"),
    ({"model": "tiny", "prompt": "x", "max_tokens": 500}, "max_tokens"),
    ({"model": "tiny", "prompt": "x" * 200, "max_tokens": 1}, "prompt"),
    ({"model": "tiny", "prompt": "x", "temperature": 9}, "temperature"),
    ({"model": "tiny", "prompt": "x", "n": 0}, "n"),
    ({"model": "tiny", "prompt": "x", "n": 2, "temperature": 0}, "n"),
    ({"model": "tiny"}, "prompt"),
    ({"model": "tiny", "messages": []}, "messages"),
])
def test_bad_parameters_are_400_naming_the_param(client: TestClient, body, param):
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]
    assert err["code"] is None or isinstance(err["code"], str), err  # OpenAI's shape: never the status


def test_unknown_routes_and_methods_keep_openais_error_shape(client: TestClient):
    for r in (client.get("/v1/nope"), client.get("/v1/completions")):
        assert r.status_code in (404, 405)
        assert r.json()["error"]["code"] is None and r.json()["error"]["type"] == "invalid_request_error"


def test_malformed_json_is_400(client: TestClient):
    r = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


def test_every_response_has_request_id(client: TestClient):
    assert client.get("/v1/models").headers["x-request-id"]
    r = client.post("/v1/completions", json={"model": "nope", "prompt": "x"},
                    headers={"x-request-id": "abc123"})
    assert r.headers["x-request-id"] == "abc123"


def test_health_follows_engine(client: TestClient, engine: FakeEngine):
    assert client.get("/health").status_code == 200
    assert "loramux_engine_healthy 1.0" in client.get("/metrics").text
    engine.healthy = False
    r = client.get("/health")
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"
    scrape = client.get("/metrics")  # the page still answers, and says the engine does not
    assert scrape.status_code == 200 and "loramux_engine_healthy 0.0" in scrape.text


def test_metrics_count_requests_and_tokens_per_adapter(client: TestClient, oai: OpenAI):
    r = oai.completions.with_raw_response.create(model="acme/support", prompt="abc", max_tokens=4)
    version = r.headers["x-loramux-adapter-version"]
    client.post("/v1/completions", json={"model": "acme/support", "prompt": "x", "max_tokens": 0})
    text = client.get("/metrics").text
    assert ('loramux_requests_total{adapter="acme/support",endpoint="completions",status="200",tenant="acme",'
            f'version="{version}"}} 1.0') in text
    assert 'loramux_completion_tokens_total{adapter="acme/support",endpoint="completions",tenant="acme"} 4.0' in text
    assert 'status="400"' in text
    for series in ("request_duration_seconds", "time_per_output_token_seconds", "request_queue_seconds"):
        assert f'loramux_{series}_count{{adapter="acme/support",endpoint="completions",tenant="acme"}} 1.0' in text
    # the adapter was loaded at start: a warm start
    assert ('loramux_time_to_first_token_seconds_count{adapter="acme/support",endpoint="completions",start="warm",'
            'tenant="acme"} 1.0') in text
    assert "loramux_engine_healthy 1.0" in text
    for phase in ("resolve", "queue", "prefill"):
        assert f'loramux_ttft_phase_seconds_count{{adapter="acme/support",phase="{phase}",tenant="acme"}} 1.0' in text
    assert 'loramux_adapter_resident' in text and "vllm:max_gpu_lora_adapters" in text


def test_admin_requires_key_and_loads_and_unloads(client: TestClient, adapter_dir: Path):
    body = {"lora_name": "initech/new", "lora_path": str(adapter_dir)}
    assert client.post("/v1/load_lora_adapter", json=body).status_code == 401
    wrong = client.post("/v1/load_lora_adapter", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    auth = {"Authorization": f"Bearer {ADMIN}"}
    assert client.post("/v1/load_lora_adapter", json=body, headers=auth).status_code == 200
    assert "initech/new" in {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert client.post("/v1/unload_lora_adapter", json={"lora_name": "initech/new"}, headers=auth).status_code == 200
    gone = client.post("/v1/unload_lora_adapter", json={"lora_name": "initech/new"}, headers=auth)
    assert gone.status_code == 404


def test_admin_rejects_unsafe_names(client: TestClient, adapter_dir: Path):
    auth = {"Authorization": f"Bearer {ADMIN}"}
    r = client.post("/v1/load_lora_adapter", json={"lora_name": "../etc", "lora_path": str(adapter_dir)},
                    headers=auth)
    assert r.status_code == 400


def test_admin_loads_only_from_allowed_folders(client: TestClient, adapter_dir: Path, tmp_path: Path):
    import shutil

    auth = {"Authorization": f"Bearer {ADMIN}"}
    outside = tmp_path / "copy"
    shutil.copytree(adapter_dir, outside)
    escape = adapter_dir.parent / f"link-{tmp_path.name}"
    escape.symlink_to(outside)  # inside the allowed folder by name, outside by its real path
    for path in (outside, escape, Path("/etc")):
        r = client.post("/v1/load_lora_adapter", json={"lora_name": "initech/x", "lora_path": str(path)}, headers=auth)
        assert r.status_code == 403 and r.json()["error"]["param"] == "lora_path" and "--admin-path" in r.text, path


def test_no_500_on_client_mistakes(client: TestClient):
    bodies = [b"[]", b"null", b'{"model": 3}', b'{"model": "tiny", "prompt": {"a": 1}}',
              json.dumps({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}).encode()]
    for body in bodies:
        for path in ("/v1/completions", "/v1/chat/completions"):
            r = client.post(path, content=body, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (path, body, r.text)
            assert "Traceback" not in r.text
            assert not isinstance(r.json()["error"]["code"], int)


def test_unexpected_engine_failure_is_a_clean_500_with_request_id(client: TestClient, engine: FakeEngine,
                                                                   monkeypatch):
    async def boom(request):
        raise RuntimeError("kaboom in the engine")
        yield  # pragma: no cover

    monkeypatch.setattr(engine, "generate", boom)
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2})
    assert r.status_code == 500 and r.headers["x-request-id"]
    assert r.json()["error"]["type"] == "internal_error" and r.json()["error"]["code"] is None
    assert "kaboom" not in r.text and "Traceback" not in r.text
    assert 'status="500"' in client.get("/metrics").text


@pytest.mark.parametrize("field,value", [("suffix", "end"), ("functions", [{"name": "f"}]),
                                         ("typo_field", 1)])
def test_unimplemented_options_are_refused_not_ignored(client: TestClient, field, value):
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2, field: value})
    assert r.status_code == 400 and r.json()["error"]["param"] == field
    ok = client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2, "logprobs": None})
    assert ok.status_code == 200


def test_server_timing_splits_the_time_to_first_token(client):
    for stream in (False, True):
        r = client.post("/v1/completions", json={"model": "acme/support", "prompt": "hi", "max_tokens": 2,
                                                 "stream": stream})
        assert r.status_code == 200
        timing = dict(part.split(";dur=") for part in r.headers["server-timing"].split(", "))
        assert set(timing) == {"resolve", "queue", "prefill"} and all(float(v) >= 0 for v in timing.values())


def test_a_stream_that_fails_before_its_first_token_is_an_http_error(client, engine):
    engine.healthy = False
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2, "stream": True})
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"


def test_best_of_returns_n_of_its_samples_and_counts_them_all(client: TestClient):
    body = {"model": "tiny", "prompt": "x", "max_tokens": 3, "seed": 4}
    r = client.post("/v1/completions", json={**body, "n": 2, "best_of": 5})
    assert r.status_code == 200, r.text
    assert [c["index"] for c in r.json()["choices"]] == [0, 1] and r.json()["usage"]["completion_tokens"] == 15
    assert all(c["logprobs"] is None for c in r.json()["choices"])  # not asked for
    for bad in ({"n": 3, "best_of": 2}, {"best_of": 2, "stream": True}):
        r = client.post("/v1/completions", json={**body, **bad})
        assert r.status_code == 400 and r.json()["error"]["param"] == "best_of", r.text
