"""What the Ray ingress decides without Ray: a request's multiplexed model id, and the
replicas' metrics merged into one exposition."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loramux.adapters.errors import NotFound
from loramux.server.metrics import merge_replicas
from loramux.server.ray_serve import model_id


class _Route:
    def __init__(self, version: str) -> None:
        self.version = version

    def pick(self, routing_key):
        return self


def _route(model: str) -> _Route:
    if model.startswith("acme/"):
        return _Route(f"v-{model.split('@')[0]}")
    raise NotFound(f"The model {model!r} does not exist")


def test_the_model_id_is_the_version_an_adapter_name_resolves_to():
    body = lambda model: json.dumps({"model": model, "prompt": "x"}).encode()  # noqa: E731
    assert model_id(body("tiny"), "tiny", _route, None) == ""  # the base: any replica
    assert model_id(body("acme/support"), "tiny", _route, None) == "v-acme/support"
    assert model_id(body("acme/support@prod"), "tiny", _route, None) == "v-acme/support"  # same version, same id
    assert model_id(body("other/x"), "tiny", _route, None) == "other/x"  # the replica answers the 404
    assert model_id(body("acme/a+acme/b"), "tiny", _route, None) == "acme/a+acme/b"
    assert model_id(body("acme/a"), "tiny", None, None) == "acme/a"  # no registry: names are fixed
    assert model_id(b"not json", "tiny", _route, None) == ""
    assert model_id(b"[1, 2]", "tiny", _route, None) == ""


def _replica(n: int) -> bytes:
    r = CollectorRegistry()
    c = Counter("loramux_requests", "Requests answered.", ["adapter"], registry=r)
    c.labels("acme/a").inc(n)
    return generate_latest(r)


def test_replicas_metrics_merge_into_one_family_labelled_by_replica():
    text = merge_replicas({"r1": _replica(3), "r2": _replica(4)}).decode()
    assert text.count("# TYPE loramux_requests_total counter") == 1
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == "loramux_requests_total"]
    assert {s.labels["replica"]: s.value for s in samples} == {"r1": 3.0, "r2": 4.0}
    assert sum(s.value for s in samples) == 7.0
