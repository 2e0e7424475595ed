"""loramux's Grafana dashboards as code (grafana-foundation-sdk), written as JSON beside this file.

Run `python -m deploy.grafana.dashboards` after changing a panel; the JSON under dashboards/ is
what operators import or provision, and tests/deploy fails when it is not what this file makes.
The generator stays out of the installed package (the SDK is a dev dependency): a deployment
needs the JSON, never the Python.

Panels read the recording rules of deploy/prometheus/rules.py wherever an alert fires on the
same figure, so a page and its panel agree. The data source is the `datasource` variable (no
`${DS_...}` import inputs); `tenant` and `adapter` filter by regex, as Grafana expands a
multi-value or All selection into `(a|b|...)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DataSourceRef, DashboardCursorSync, VariableRefresh, VariableSort

from deploy.prometheus.rules import RECORDING

OUT = Path(__file__).with_name("dashboards")
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
SEL = 'tenant=~"$tenant", adapter=~"$adapter"'  # the tenant and adapter variables


def _rule(name: str) -> str:
    assert name in RECORDING, name  # a typo would plot nothing
    return name


@dataclass
class P:
    """One panel: a title, its queries as (PromQL, legend), a unit, and stat or time series."""

    title: str
    queries: list[tuple[str, str]]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    width: int = 12
    stack: bool = False
    extra: dict = field(default_factory=dict)


def _quantiles(metric: str, by: str, sel: str = "") -> list[tuple[str, str]]:
    legend = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(",") if label.strip())
    inner = f"sum by ({by + ', ' if by else ''}le) (rate({metric}_bucket{{{sel}}}[{RATE}]))"
    return [(f"histogram_quantile({q}, {inner})", f"p{round(q * 100)} {legend}".strip()) for q in (0.5, 0.99)]


def _recorded_quantiles(metric: str, legend: str) -> list[tuple[str, str]]:
    return [(f"{_rule(f'tenant_adapter:{metric}:{p}_rate5m')}{{{SEL}}}", f"{p} {legend}") for p in ("p50", "p99")]


OVERVIEW = {
    "Health": [
        P("Engine healthy", [("min(loramux_engine_healthy)", "healthy")], "bool_yes_no", kind="stat", width=6,
          description="1 when every server's engine answered its health check at the last scrape."),
        P("Requests running", [("sum(vllm:num_requests_running)", "running")], kind="stat", width=6),
        P("Requests waiting", [("sum(vllm:num_requests_waiting)", "waiting")], kind="stat", width=6),
        P("KV cache used", [("max(vllm:kv_cache_usage_perc)", "max")], "percentunit", kind="stat", width=6),
    ],
    "Throughput": [
        P("Tokens/s", [(f"sum(rate(vllm:prompt_tokens_total[{RATE}]))", "prompt"),
                       (f"sum(rate(vllm:generation_tokens_total[{RATE}]))", "generated")], "short"),
        P("Requests finished/s", [(f"sum by (finished_reason) (rate(vllm:request_success_total[{RATE}]))",
                                   "{{finished_reason}}")], "reqps", stack=True),
    ],
    "Latency (engine)": [
        P("Time to first token", _quantiles("vllm:time_to_first_token_seconds", ""), "s"),
        P("Time per output token", _quantiles("vllm:request_time_per_output_token_seconds", ""), "s"),
        P("End-to-end request latency", _quantiles("vllm:e2e_request_latency_seconds", ""), "s"),
        P("Queue time in the engine", _quantiles("vllm:request_queue_time_seconds", ""), "s"),
    ],
    "Scheduler": [
        P("Requests running and waiting", [("sum(vllm:num_requests_running)", "running"),
                                           ("sum(vllm:num_requests_waiting)", "waiting")]),
        P("KV cache usage", [("vllm:kv_cache_usage_perc", "{{instance}}")], "percentunit"),
        P("LoRA batch slots", [("sum(vllm:num_gpu_loaded_lora_adapters)", "in use"),
                               ("sum(vllm:max_gpu_lora_adapters)", "slots")],
          description="Adapters in a batch slot against the engine's max_loras."),
    ],
}

TENANTS = {
    "Traffic": [
        P("Requests/s by status", [(f"sum by (adapter, status) (rate(loramux_requests_total{{{SEL}}}[{RATE}]))",
                                    "{{adapter}} {{status}}")], "reqps", stack=True),
        P("Tokens/s", [(f"sum by (adapter) (rate(loramux_prompt_tokens_total{{{SEL}}}[{RATE}]))",
                        "prompt {{adapter}}"),
                       (f"sum by (adapter) (rate(loramux_completion_tokens_total{{{SEL}}}[{RATE}]))",
                        "completion {{adapter}}")]),
        P("Requests in flight", [('sum by (tenant, state) (loramux_tenant_requests{tenant=~"$tenant"})',
                                  "{{tenant}} {{state}}")],
          description="waiting_for_slot: for its adapter's batch slot (fair share); in_engine: queued or running."),
    ],
    "Latency (per adapter, 5m)": [
        P("Time to first token", _recorded_quantiles("loramux_time_to_first_token_seconds", "{{adapter}}"), "s",
          description="The series LoramuxTTFTOverSLO fires on."),
        P("Time per output token", _recorded_quantiles("loramux_time_per_output_token_seconds", "{{adapter}}"), "s"),
        P("Waiting for a batch slot",
          _quantiles("loramux_request_queue_seconds", "adapter", SEL), "s"),
    ],
    "Errors and quotas": [
        P("Error ratio (5xx)", [(f"{_rule('tenant_adapter:loramux_request_errors:ratio_rate5m')}{{{SEL}}}",
                                 "{{adapter}}")], "percentunit"),
        P("Quota rejections/s", [(f'{_rule("tenant:loramux_quota_rejections:rate5m")}{{tenant=~"$tenant"}}',
                                  "{{tenant}} {{limit}}")], "reqps", stack=True,
          description="429s by the limit hit; LoramuxTenantThrottled fires when this stays above 0 for 5m."),
        P("Refused and failed requests by code (all tenants)",
          [(f"sum by (code) (rate(loramux_request_errors_total[{RATE}]))", "{{code}}")], "reqps", stack=True),
    ],
}

ADAPTERS = {
    "Residency": [
        P("Adapter versions by tier", [("sum by (tier) (loramux_resident_adapters)", "{{tier}}")], stack=True,
          description="device: in a batch slot; host: loaded, in memory."),
        P("Resident adapters", [('sum by (adapter, tier) (loramux_adapter_resident{adapter=~"$adapter"})',
                                 "{{adapter}} {{tier}}")], stack=True),
    ],
    "Loads and evictions": [
        P("Loads/s by outcome",
          [(f'sum by (adapter, outcome) (rate(loramux_adapter_loads_total{{adapter=~"$adapter"}}[{RATE}]))',
            "{{adapter}} {{outcome}}")], "ops", stack=True),
        P("Evictions/s by reason",
          [(f'sum by (adapter, reason) (rate(loramux_adapter_evictions_total{{adapter=~"$adapter"}}[{RATE}]))',
            "{{adapter}} {{reason}}")], "ops", stack=True),
        P("Failed loads (10m)", [(f'{_rule("adapter:loramux_adapter_load_failures:increase10m")}'
                                  '{adapter=~"$adapter"}', "{{adapter}} {{source}}")],
          description="The series LoramuxAdapterLoadFailures fires on."),
        P("Load time by phase", _quantiles("loramux_adapter_load_seconds", "phase", 'adapter=~"$adapter"'), "s",
          description="fetch: store to local disk; validate: checks against the base; engine: into vLLM."),
    ],
    "Cold starts": [
        P("Time to first token, cold vs warm",
          _quantiles("loramux_time_to_first_token_seconds", "start", SEL), "s",
          description="cold: the request waited for its adapter to load."),
        P("Where the time to first token goes (mean)",
          [(f"sum by (phase) (rate(loramux_ttft_phase_seconds_sum{{{SEL}}}[{RATE}]))"
            f" / sum by (phase) (rate(loramux_ttft_phase_seconds_count{{{SEL}}}[{RATE}]))", "{{phase}}")], "s",
          stack=True),
    ],
}


def _panel(p: P, ref_ids: str = "ABCDEFGH"):
    if p.kind == "stat":
        panel = stat.Panel().graph_mode(common.BigValueGraphMode.AREA).height(4)
    else:
        panel = timeseries.Panel().height(8).fill_opacity(10 if not p.stack else 40).line_width(1)
        if p.stack:
            panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    panel = panel.title(p.title).datasource(DS).unit(p.unit).span(p.width)
    if p.description:
        panel = panel.description(p.description)
    for ref, (expr, legend) in zip(ref_ids, p.queries, strict=False):
        panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS))
    return panel


def _variables(adapters_from: str) -> list:
    tenant = (db.QueryVariable("tenant").label("Tenant").datasource(DS)
              .query("label_values(loramux_requests_total, tenant)")
              .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
              .multi(True).include_all(True))
    adapter = (db.QueryVariable("adapter").label("Adapter").datasource(DS)
               .query(f"label_values({adapters_from}, adapter)")
               .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
               .multi(True).include_all(True))
    return [tenant, adapter]


def dashboard(uid: str, title: str, description: str, rows: dict[str, list[P]], variables: list) -> db.Dashboard:
    d = (db.Dashboard(title).uid(uid).description(description).tags(["loramux"]).refresh("30s")
         .time("now-1h", "now").timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR)
         .with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus")))
    for variable in variables:
        d = d.with_variable(variable)
    ids = iter(range(1, 1000))  # stable, unique panel ids: links and provisioning refer to them
    for row, panels in rows.items():
        d = d.with_row(db.Row(row).id(next(ids)))
        for p in panels:
            d = d.with_panel(_panel(p).id(next(ids)))
    return d


def dashboards() -> dict[str, db.Dashboard]:
    """File stem -> dashboard."""
    return {
        "overview": dashboard("loramux-overview", "loramux / Overview",
                              "The vLLM engine inside loramux: throughput, latency, scheduler, KV cache.",
                              OVERVIEW, []),
        "tenants": dashboard("loramux-tenants", "loramux / Tenants",
                             "Per tenant and adapter: traffic, latency, errors and quota rejections.", TENANTS,
                             _variables('loramux_requests_total{tenant=~"$tenant"}')),
        "adapters": dashboard("loramux-adapters", "loramux / Adapters",
                              "Adapter residency, loads and evictions, load time, cold vs warm starts.", ADAPTERS,
                              _variables('loramux_adapter_loads_total{adapter=~"($tenant)/.*"}')),
    }


def render(d: db.Dashboard) -> str:
    return json.dumps(d.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for stem, d in dashboards().items():
        (OUT / f"{stem}.json").write_text(render(d))
        print(f"wrote {OUT / stem}.json")


if __name__ == "__main__":
    main()
