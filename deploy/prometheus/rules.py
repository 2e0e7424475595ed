"""loramux's recording rules and alerts, written to rules.yml beside this file.

One source for the queries an operator acts on: the alerts fire on the recording rules below,
and the Grafana dashboards (deploy/grafana/dashboards.py) plot the same recorded series, so a
page and the panel it points at always show the same number. Regenerate with
`python -m deploy.prometheus.rules`; tests/deploy checks the committed file is current and
runs `promtool check rules` and `promtool test rules` (rules_test.yml) on it.

The Prometheus scrape job for loramux servers must be named `loramux` (JOB below).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

RULES_FILE = Path(__file__).with_name("rules.yml")
JOB = "loramux"
TTFT_SLO_S = 2.0  # p99 time to first token a tenant's adapter is promised
WINDOW = "5m"  # the recording rules' rate window


def _quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket[{WINDOW}])))"


# record name -> expression. Names follow Prometheus's level:metric:operations convention.
RECORDING: dict[str, str] = {
    "tenant_adapter:loramux_requests:rate5m":
        f"sum by (tenant, adapter, status) (rate(loramux_requests_total[{WINDOW}]))",
    # Server-side failures only (4xx are the caller's); 0, not nothing, while there are none.
    "tenant_adapter:loramux_request_errors:ratio_rate5m":
        f'(sum by (tenant, adapter) (rate(loramux_requests_total{{status=~"5.."}}[{WINDOW}]))'
        f" or 0 * sum by (tenant, adapter) (rate(loramux_requests_total[{WINDOW}])))"
        f" / sum by (tenant, adapter) (rate(loramux_requests_total[{WINDOW}]))",
    "tenant_adapter:loramux_time_to_first_token_seconds:p50_rate5m":
        _quantile(0.5, "loramux_time_to_first_token_seconds", "tenant, adapter"),
    "tenant_adapter:loramux_time_to_first_token_seconds:p99_rate5m":
        _quantile(0.99, "loramux_time_to_first_token_seconds", "tenant, adapter"),
    "tenant_adapter:loramux_time_per_output_token_seconds:p50_rate5m":
        _quantile(0.5, "loramux_time_per_output_token_seconds", "tenant, adapter"),
    "tenant_adapter:loramux_time_per_output_token_seconds:p99_rate5m":
        _quantile(0.99, "loramux_time_per_output_token_seconds", "tenant, adapter"),
    "tenant:loramux_quota_rejections:rate5m":
        f"sum by (tenant, limit) (rate(loramux_quota_rejections_total[{WINDOW}]))",
    # A failing adapter's counter is born at 1, which increase() cannot see (it has no earlier
    # sample): a series younger than the window counts in full, an older one by its increase.
    "adapter:loramux_adapter_load_failures:increase10m":
        'sum by (adapter, source) (loramux_adapter_loads_total{outcome="error"}'
        ' unless loramux_adapter_loads_total{outcome="error"} offset 10m)'
        ' or sum by (adapter, source) (increase(loramux_adapter_loads_total{outcome="error"}[10m]))',
}


@dataclass(frozen=True)
class Alert:
    """An alert is `signal OP threshold` held for `for_`: the signal alone is what a dashboard plots."""

    name: str
    signal: str
    op: str
    threshold: float
    for_: str
    severity: str  # page: wake someone; ticket: the next working day
    summary: str
    description: str

    @property
    def expr(self) -> str:
        return f"{self.signal} {self.op} {self.threshold:g}"


ALERTS: list[Alert] = [
    Alert("LoramuxDown", f'up{{job="{JOB}"}}', "==", 0, "1m", "page",
          "loramux {{ $labels.instance }} is not answering scrapes",
          "Prometheus could not scrape /metrics for a minute: the server process is down or hung."),
    Alert("LoramuxEngineUnhealthy", "loramux_engine_healthy", "==", 0, "1m", "page",
          "loramux {{ $labels.instance }}: the engine is not healthy",
          "The HTTP server answers but its vLLM engine failed its health check for a minute; "
          "/health returns 503 and every generation fails."),
    Alert("LoramuxTTFTOverSLO", "tenant_adapter:loramux_time_to_first_token_seconds:p99_rate5m", ">", TTFT_SLO_S,
          "10m", "page",
          "{{ $labels.adapter }}: TTFT p99 {{ $value | humanizeDuration }} is over the SLO",
          f"The p99 time to first token has been over {TTFT_SLO_S:g}s for 10 minutes. See the Tenants "
          "dashboard (queue vs load vs prefill) and the Adapters dashboard (cold starts, evictions)."),
    Alert("LoramuxAdapterLoadFailures", "adapter:loramux_adapter_load_failures:increase10m", ">", 0, "0m",
          "ticket",
          "Adapter {{ $labels.adapter }} failed to load ({{ $labels.source }})",
          "{{ $value }} load(s) of this adapter failed in the last 10 minutes: requests for it get 400 "
          "invalid_adapter. Check its manifest against the server's limits (rank, targets, base)."),
    Alert("LoramuxTenantThrottled", "sum by (tenant) (tenant:loramux_quota_rejections:rate5m)", ">", 0, "5m",
          "ticket",
          "Tenant {{ $labels.tenant }} is being throttled by its quota",
          "Requests from this tenant have been refused with 429 for over 5 minutes "
          "({{ $value | humanize }}/s): raise its key's quota or tell the tenant."),
]


def rules() -> dict:
    return {"groups": [
        {"name": "loramux.recording", "rules": [{"record": name, "expr": expr} for name, expr in RECORDING.items()]},
        {"name": "loramux.alerts", "rules": [
            {"alert": a.name, "expr": a.expr, "for": a.for_, "labels": {"severity": a.severity},
             "annotations": {"summary": a.summary, "description": a.description}} for a in ALERTS]},
    ]}


def render() -> str:
    header = "# Generated by `python -m deploy.prometheus.rules` from deploy/prometheus/rules.py; do not edit.\n"
    return header + yaml.safe_dump(rules(), sort_keys=False, width=120)


if __name__ == "__main__":
    RULES_FILE.write_text(render())
    print(f"wrote {RULES_FILE}")
