"""loramux's Prometheus series: per adapter and tenant, and bounded.

Request series carry `adapter` (the resolved `T/N`, the base's served name, or `other`),
`tenant` (the key's, else the adapter's; `-` for an anonymous base request) and `endpoint`;
`loramux_requests_total` also carries `version` (12 hex digits) and `status`. Only the K
busiest adapters (`--metrics-top-k`) keep their own label and the rest share `other`, so
10,000 adapters cannot blow up `/metrics`: each period the K busiest of the last one keep or
take a label, and one that falls out loses its series (its counts go on under `other`).

Residency is read from the catalog's snapshot at scrape time, as loramux's own series and as
the ones vLLM PR #54830 proposes (`vllm:lora_adapter_loaded`, ...). vLLM's own `vllm:*` series
are served unchanged beside them, except `vllm:lora_requests_info`: vLLM names adapters there
by their engine names (`acme/support#3`, one per version), but routers (llm-d's endpoint picker,
AIBrix) match its `running_lora_adapters` / `waiting_lora_adapters` against the request's
`model`, so loramux states it itself, with served names, from the requests it holds.
Kept in a registry per app (no import-time globals, so tests can build many apps).
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from .context import Outcome
from .fairness import tenant_of
from .residency import AdapterState, Source

OTHER = "other"
LORA_INFO = "vllm:lora_requests_info"  # vLLM's name and labels; the value: when it was stated (unix time)
_LOAD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


class AdapterLabels:
    """Which adapters keep their own label: the first K until the first period ends, then the
    K busiest of each period. `on_drop(adapter)` removes the series of one that falls out."""

    def __init__(self, k: int, on_drop: Callable[[str], None], period_s: float = 60.0) -> None:
        self.k, self.on_drop, self.period_s = k, on_drop, period_s
        self.members: set[str] = set()
        self._recent: Tally[str] = Tally()
        self._since = time.monotonic()

    def __call__(self, adapter: str, *, busy: bool = True) -> str:
        if busy:
            self._recent[adapter] += 1
        if time.monotonic() - self._since >= self.period_s:
            self._rerank()
        if adapter in self.members:
            return adapter
        if len(self.members) < self.k:
            self.members.add(adapter)
            return adapter
        return OTHER

    def _rerank(self) -> None:
        """The period's K busiest keep or take a label; a quiet member keeps its own while there is
        room, so only a busier adapter takes a label away (a failing adapter's series stay)."""
        busiest = [a for a, _ in self._recent.most_common(self.k)]
        quiet = sorted(self.members - set(busiest))[:self.k - len(busiest)]
        new = set(busiest) | set(quiet)
        for adapter in self.members - new:
            self.on_drop(adapter)
        self.members, self._recent, self._since = new, Tally(), time.monotonic()


class Metrics:
    def __init__(self, top_k: int = 50, residency: Callable[[], tuple[list[AdapterState], int]] | None = None,
                 tenants: Callable[[], dict[tuple[str, str], int]] | None = None,
                 lora_requests: Callable[[], tuple[set[str], set[str]]] | None = None, max_loras: int = 0) -> None:
        self.registry = CollectorRegistry()
        self.labels = AdapterLabels(top_k, self._drop)
        self._series: defaultdict[str, set[tuple[MetricWrapperBase, tuple[str, ...]]]] = defaultdict(set)
        self.residency = residency  # the catalog's snapshot: rows and the number of batch slots
        self.tenants = tenants  # (tenant, state) -> requests waiting for a batch slot or in the engine
        self.lora_requests = lora_requests  # served adapter names with requests (running, waiting)
        self.max_loras = max_loras
        per = ["adapter", "tenant", "endpoint"]
        r = self.registry
        self.requests = Counter("loramux_requests", "Requests answered, by adapter version and HTTP status.",
                                [*per, "version", "status"], registry=r)
        self.prompt_tokens = Counter("loramux_prompt_tokens", "Prompt tokens processed.", per, registry=r)
        self.completion_tokens = Counter("loramux_completion_tokens", "Completion tokens generated.", per,
                                         registry=r)
        self.latency = Histogram("loramux_request_duration_seconds", "End-to-end request latency.", per,
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("loramux_time_to_first_token_seconds", "Time to first token (streamed or not), by "
                              "start: cold (waited for its adapter to load) or warm.",
                              [*per, "start"], buckets=_LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("loramux_time_per_output_token_seconds", "Time per output token after the first.",
                              per, buckets=_TOKEN_BUCKETS, registry=r)
        self.queue = Histogram("loramux_request_queue_seconds", "Time waiting for a batch slot: the adapter's "
                               "(fair share of LoRA slots), then the engine's.",
                               per, buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft_phases = Histogram("loramux_ttft_phase_seconds", "Where the time to first token went: "
                                     "resolve, load (waiting for an adapter load), queue, prefill.",
                                     ["adapter", "tenant", "phase"], buckets=_LATENCY_BUCKETS, registry=r)
        self.errors = Counter("loramux_request_errors", "Requests refused or failed, by error code "
                              "(invalid_adapter: an adapter that could not be loaded).", ["endpoint", "code"],
                              registry=r)
        self.adapter_loads = Counter("loramux_adapter_loads", "Adapter versions loaded into the engine, by "
                                     "source (adapter, registry, merge) and outcome (ok, error).",
                                     ["adapter", "source", "outcome"], registry=r)
        self.adapter_load_seconds = Histogram("loramux_adapter_load_seconds", "Time a cold load spends in each "
                                              "phase: fetch (store to local disk), validate, engine.",
                                              ["adapter", "phase"], buckets=_LOAD_BUCKETS, registry=r)
        self.adapter_evictions = Counter("loramux_adapter_evictions", "Adapter versions unloaded by the residency "
                                         "policy, by reason (cold, capacity).", ["adapter", "source", "reason"],
                                         registry=r)
        self.quota_rejections = Counter("loramux_quota_rejections", "Requests refused by a key's quota, by "
                                        "tenant and limit (requests, tokens, in_flight).", ["tenant", "limit"],
                                        registry=r)
        self.engine_healthy = Gauge("loramux_engine_healthy", "1 when the engine answered its health check at "
                                    "this scrape, else 0 (the HTTP server can outlive a dead engine).", registry=r)
        self._load_hist = _LoadHistogram()  # vllm:lora_adapter_load_seconds, as PR #54830 names it
        r.register(_ResidencyCollector(self))

    # -- bounded adapter labels ---------------------------------------------------------------
    def _of(self, metric: MetricWrapperBase, adapter: str, *rest: str):
        """`metric`'s child for an adapter label that was already bounded, remembered for `_drop`."""
        values = (adapter, *rest)
        self._series[adapter].add((metric, values))
        return metric.labels(*values)

    def _drop(self, adapter: str) -> None:
        for metric, values in self._series.pop(adapter, ()):
            try:
                metric.remove(*values)
            except KeyError:
                pass

    # -- requests -------------------------------------------------------------------------------
    def record(self, outcome: Outcome) -> None:
        """One request's outcome: always counted by status; tokens and latency once it generated."""
        adapter = self.labels(outcome.model) if outcome.model != "-" else "-"  # "-": never resolved
        tenant = outcome.tenant or tenant_of(outcome.model)
        per = (tenant, outcome.endpoint)
        self._of(self.requests, adapter, *per, outcome.version[:12], str(outcome.status)).inc()
        if outcome.error is not None:
            self.errors.labels(outcome.endpoint, outcome.error).inc()
        if not outcome.generated:
            return
        self._of(self.prompt_tokens, adapter, *per).inc(outcome.prompt_tokens)
        self._of(self.completion_tokens, adapter, *per).inc(outcome.completion_tokens)
        self._of(self.latency, adapter, *per).observe(outcome.seconds)
        ttft = outcome.ttft if outcome.ttft is not None else sum(outcome.phases.values())
        self._of(self.ttft, adapter, *per, "cold" if "load" in outcome.phases else "warm").observe(ttft)
        if outcome.completion_tokens > 1:
            self._of(self.tpot, adapter, *per).observe(max(outcome.seconds - ttft, 0.0) /
                                                       (outcome.completion_tokens - 1))
        if "queue" in outcome.phases:
            self._of(self.queue, adapter, *per).observe(outcome.phases["queue"])
        for phase, seconds in outcome.phases.items():
            self._of(self.ttft_phases, adapter, tenant, phase).observe(seconds)

    def quota_rejected(self, tenant: str, limit: str) -> None:
        self.quota_rejections.labels(tenant, limit).inc()

    # -- the catalog's ResidencyEvents ----------------------------------------------------------
    def adapter_loaded(self, adapter: str, source: Source, load_s: dict[str, float]) -> None:
        label = self.labels(adapter, busy=False)
        self._of(self.adapter_loads, label, source, "ok").inc()
        for phase, seconds in load_s.items():
            self._of(self.adapter_load_seconds, label, phase).observe(seconds)
        self._load_hist.observe(sum(load_s.values()))

    def adapter_load_failed(self, adapter: str, source: Source) -> None:
        self._of(self.adapter_loads, self.labels(adapter, busy=False), source, "error").inc()

    def adapter_evicted(self, adapter: str, source: Source, reason: str) -> None:
        self._of(self.adapter_evictions, self.labels(adapter, busy=False), source, reason).inc()

    def render(self) -> bytes:
        return generate_latest(_Without(DEFAULT_REGISTRY, LORA_INFO)) + generate_latest(self.registry)


def merge_replicas(texts: dict[str, bytes]) -> bytes:
    """Replicas' metrics texts as one exposition, each series labelled `replica`: sums over
    replicas are the cluster's, and each family is stated once."""
    families: dict[str, Metric] = {}
    for replica, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text.decode()):
            into = families.setdefault(family.name, Metric(family.name, family.documentation, family.type,
                                                           family.unit))
            into.samples += [s._replace(labels={**s.labels, "replica": replica}) for s in family.samples]
    return generate_latest(_Families(list(families.values())))


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self):
        return self.families


class _Without:
    """A registry's families less one: vLLM's `vllm:lora_requests_info`, which loramux states itself."""

    def __init__(self, registry: CollectorRegistry, name: str) -> None:
        self.registry, self.name = registry, name

    def collect(self):
        return (family for family in self.registry.collect() if family.name != self.name)


class _LoadHistogram:
    """A running cumulative histogram for the vLLM-named load series the collector emits."""

    def __init__(self) -> None:
        self.buckets = [0] * (len(_LOAD_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        for i, upper in enumerate((*_LOAD_BUCKETS, float("inf"))):
            if seconds <= upper:
                self.buckets[i] += 1


class _ResidencyCollector:
    """Residency at scrape time, from the catalog's snapshot (refreshed by its policy task), and
    each tenant's requests by where they wait."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self):
        rows, slots = self.metrics.residency() if self.metrics.residency else ([], 0)
        resident = GaugeMetricFamily("loramux_adapter_resident", "Adapter versions in the engine, by tier "
                                     "(device: in a batch slot; host: in memory).",
                                     labels=["adapter", "version", "tier", "pinned"])
        tiers = GaugeMetricFamily("loramux_resident_adapters", "Adapter versions by tier.", labels=["tier"])
        loaded = GaugeMetricFamily("vllm:lora_adapter_loaded", "LoRA adapters loaded (vLLM PR #54830).",
                                   labels=["adapter_name", "level", "pinned", "rank"])
        count = Tally()
        for row in rows:
            if row.state == "store":
                continue
            count[row.state] += 1
            pinned = "true" if row.pinned else "false"
            resident.add_metric([row.name, row.version, row.state, pinned], 1)
            loaded.add_metric([row.name, "gpu" if row.state == "device" else "cpu", pinned, str(row.rank or "")], 1)
        for tier in ("device", "host"):
            tiers.add_metric([tier], count[tier])
        yield from (resident, tiers, loaded)
        waiting = GaugeMetricFamily("loramux_tenant_requests", "Requests in flight by tenant and state "
                                    "(waiting_for_slot: for its adapter's batch slot; in_engine: queued or running).",
                                    labels=["tenant", "state"])
        for (tenant, state), n in sorted((self.metrics.tenants() if self.metrics.tenants else {}).items()):
            waiting.add_metric([tenant, state], n)
        yield waiting
        running, waiting = self.metrics.lora_requests() if self.metrics.lora_requests else (set(), set())
        info = GaugeMetricFamily(LORA_INFO, "Running stats on lora requests (served adapter names).",
                                 labels=["max_lora", "running_lora_adapters", "waiting_lora_adapters"])
        info.add_metric([str(self.metrics.max_loras), ",".join(sorted(running)), ",".join(sorted(waiting))],
                        time.time())
        yield info
        yield GaugeMetricFamily("vllm:num_gpu_loaded_lora_adapters", "Adapters in a batch slot (vLLM PR #54830).",
                                value=count["device"])
        yield GaugeMetricFamily("vllm:max_gpu_lora_adapters", "Batch slots for adapters (vLLM PR #54830).",
                                value=slots)
        h = self.metrics._load_hist  # its buckets are cumulative already
        bounds = [str(b) for b in _LOAD_BUCKETS] + ["+Inf"]
        yield HistogramMetricFamily("vllm:lora_adapter_load_seconds", "Adapter load latency (vLLM PR #54830).",
                                    buckets=list(zip(bounds, h.buckets, strict=True)), sum_value=h.sum)
