"""loramux's Prometheus series, labelled by served model and tenant.

Kept in a registry per app (no import-time globals, so tests can build many apps);
`/metrics` serves it together with the default registry, where vLLM's own `vllm:*`
series live.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

from .context import Outcome
from .residency import Source

_LOAD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def tenant_of(model: str) -> str:
    """`acme/support@prod` -> `acme`; the base model has no tenant."""
    return model.split("/", 1)[0] if "/" in model else "-"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["model", "tenant", "endpoint"]
        self.requests = Counter("loramux_requests", "Requests answered, by HTTP status.",
                                [*labels, "status"], registry=self.registry)
        self.prompt_tokens = Counter("loramux_prompt_tokens", "Prompt tokens processed.",
                                     labels, registry=self.registry)
        self.completion_tokens = Counter("loramux_completion_tokens", "Completion tokens generated.",
                                         labels, registry=self.registry)
        self.latency = Histogram("loramux_request_duration_seconds", "End-to-end request latency.",
                                 labels, buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("loramux_request_errors", "Requests refused or failed, by error code "
                              "(invalid_adapter: an adapter that could not be loaded).", ["endpoint", "code"],
                              registry=self.registry)
        self.ttft = Histogram("loramux_time_to_first_token_seconds", "Time to first streamed token.",
                              labels, buckets=_LATENCY_BUCKETS, registry=self.registry)

        self.adapter_loads = Counter("loramux_adapter_loads", "Adapter versions loaded into the engine, by "
                                     "source (adapter, registry, merge) and outcome (ok, error).",
                                     ["source", "outcome"], registry=self.registry)
        self.adapter_load_seconds = Histogram("loramux_adapter_load_seconds", "Time a cold load spends in each "
                                              "phase: fetch (store to local disk), validate, engine.", ["phase"],
                                              buckets=_LOAD_BUCKETS, registry=self.registry)
        self.adapter_evictions = Counter("loramux_adapter_evictions", "Adapter versions unloaded by the residency "
                                         "policy, by reason (cold, capacity).", ["source", "reason"],
                                         registry=self.registry)

        self.quota_rejections = Counter("loramux_quota_rejections", "Requests refused by a key's quota, by "
                                        "tenant and limit (requests, tokens, in_flight).", ["tenant", "limit"],
                                        registry=self.registry)

    def quota_rejected(self, tenant: str, limit: str) -> None:
        self.quota_rejections.labels(tenant, limit).inc()

    # -- the catalog's ResidencyEvents ------------------------------------------------------
    def adapter_loaded(self, source: Source, load_s: dict[str, float]) -> None:
        self.adapter_loads.labels(source, "ok").inc()
        for phase, seconds in load_s.items():
            self.adapter_load_seconds.labels(phase).observe(seconds)

    def adapter_load_failed(self, source: Source) -> None:
        self.adapter_loads.labels(source, "error").inc()

    def adapter_evicted(self, source: Source, reason: str) -> None:
        self.adapter_evictions.labels(source, reason).inc()

    def record(self, outcome: Outcome) -> None:
        """One request's outcome: always counted by status; tokens and latency once it generated."""
        lv = (outcome.model, tenant_of(outcome.model), outcome.endpoint)
        self.requests.labels(*lv, str(outcome.status)).inc()
        if outcome.error is not None:
            self.errors.labels(outcome.endpoint, outcome.error).inc()
        if not outcome.generated:
            return
        self.prompt_tokens.labels(*lv).inc(outcome.prompt_tokens)
        self.completion_tokens.labels(*lv).inc(outcome.completion_tokens)
        self.latency.labels(*lv).observe(outcome.seconds)
        if outcome.ttft is not None:
            self.ttft.labels(*lv).observe(outcome.ttft)

    def render(self) -> bytes:
        return generate_latest(DEFAULT_REGISTRY) + generate_latest(self.registry)
