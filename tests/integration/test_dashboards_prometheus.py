"""Every dashboard query and every rule, answered by a real Prometheus scraping a real server.

A loramux server (real vLLM engine) with three tenants' keys, five registry adapters over three
engine places (so adapters are loaded, evicted and reloaded all the time), one adapter whose
loads always fail and one tenant over its quota, runs about a minute of load while Prometheus
(Debian's 2.42, its own config and TSDB, scraping every second, with deploy/prometheus/rules.yml)
watches. Then each dashboard variable, panel query, recording rule and alert expression goes
through Prometheus's HTTP API with the variables replaced as Grafana replaces them, and must
parse and return data; the alerts that should be pending or firing are.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from deploy.prometheus.rules import ALERTS, JOB, RECORDING
from tests.deploy.dashboard_queries import (RULES, load_dashboards, multi_value, panels, query_variables, substitute,
                                            targets, tool)
from tests.integration.conftest import free_port, running_server
from tests.lora_factory import random_lora

pytestmark = pytest.mark.integration

GOOD = {"acme": ["support", "legal"], "globex": ["sales", "ops"], "initech": ["chat"]}
BROKEN = "initech/huge"  # rank 32 over the server's --max-lora-rank 16: every load fails validation
RPM = 20  # initech's quota; it asks about once a second
LOAD_S = 70.0
RATE_INTERVAL = "15s"  # Grafana's $__rate_interval over a few minutes' range at this scrape interval


@contextlib.contextmanager
def prometheus(target: str, root: Path) -> Iterator[str]:
    """Debian's prometheus scraping `target` (host:port) every second, with loramux's rules."""
    port = free_port()
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(RULES)],
              "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}]}
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = root / "prometheus.log"
    with log.open("w") as out:
        proc = subprocess.Popen([tool("prometheus"), f"--config.file={root / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={root / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def stack(tiny_base: Path, tmp_path_factory) -> Iterator[dict]:
    from loramux.adapters.base_spec import BaseSpec
    from loramux.adapters.registry import publish
    from loramux.adapters.store import open_store
    from loramux.server.keys import create_key

    root, base = tmp_path_factory.mktemp("dashboards"), BaseSpec.from_dir(tiny_base, "tiny")
    store = open_store(str(root / "store"))
    for i, (tenant, names) in enumerate(GOOD.items()):
        for j, name in enumerate(names):
            publish(store, random_lora(tiny_base, root / f"{tenant}-{name}", seed=900 + 10 * i + j, std=0.2, r=4),
                    tenant=tenant, name=name, base=base)
    publish(store, random_lora(tiny_base, root / "huge", seed=999, r=32), tenant="initech", name="huge", base=base)
    keys_file = root / "keys.json"
    keys = {"acme": create_key(keys_file, "acme")[0], "globex": create_key(keys_file, "globex")[0],
            "initech": create_key(keys_file, "initech", rpm=RPM)[0]}
    args = ["--base", str(tiny_base), "--served-name", "tiny", "--dtype", "float32", "--registry", str(store.root),
            "--keys", str(keys_file), "--max-loras", "2", "--max-cpu-loras", "3", "--max-lora-rank", "16"]
    with running_server(args, root / "server.log") as url, prometheus(url.removeprefix("http://"), root) as prom:
        yield {"url": url, "prom": prom, "keys": keys}


async def _load(url: str, keys: dict[str, str], seconds: float) -> Counter:
    """Two clients each for acme and globex over their adapters (and the base), initech at about
    1/s (over its quota), a failing adapter and an unknown one; returns (tenant, model, status) counts."""
    codes: Counter = Counter()
    deadline = time.monotonic() + seconds

    async def ask(client: httpx.AsyncClient, tenant: str, model: str) -> httpx.Response:
        r = await client.post(f"{url}/v1/completions", headers={"Authorization": f"Bearer {keys[tenant]}"},
                              json={"model": model, "prompt": "The cat sees", "max_tokens": 8, "temperature": 0})
        codes[tenant, model, r.status_code] += 1
        return r

    async def ask_past_quota(client: httpx.AsyncClient, tenant: str, model: str) -> None:
        """The load leaves initech over its quota: wait as `Retry-After` says, so the request is judged."""
        while (r := await ask(client, tenant, model)).status_code == 429:
            await asyncio.sleep(int(r.headers["Retry-After"]))

    async def client_loop(client: httpx.AsyncClient, tenant: str, models: list[str], offset: int, pause: float):
        i = offset
        while time.monotonic() < deadline:
            await ask(client, tenant, models[i % len(models)])
            i += 1
            await asyncio.sleep(pause)

    async with httpx.AsyncClient(timeout=120) as client:
        await ask(client, "initech", BROKEN)
        await ask(client, "acme", "acme/nothing")
        own = {t: [f"{t}/{n}" for n in names] for t, names in GOOD.items()}
        await asyncio.gather(
            *(client_loop(client, t, [*own[t], "tiny"], k, 0.0) for t in ("acme", "globex") for k in range(2)),
            client_loop(client, "initech", own["initech"], 0, 1.0))
        await ask_past_quota(client, "initech", BROKEN)
    return codes


def _query(prom: str, expr: str, at: float) -> tuple[str, list[dict] | str]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr, "time": at}, timeout=30)
    body = r.json()
    return (body["status"], body["data"]["result"] if body["status"] == "success" else body.get("error", r.text))


def _problem(prom: str, expr: str, start: float, end: float) -> str | None:
    """None when `expr` parses and has a finite sample somewhere in [start, end], else what is wrong.
    A window, not an instant: a gauge of requests in flight is rightly empty between requests."""
    r = httpx.get(f"{prom}/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": 1},
                  timeout=30)
    body = r.json()
    if body["status"] != "success":
        return f"error {body.get('error', r.text)}"
    result = body["data"]["result"]
    if not result:
        return "no data"
    if not any(math.isfinite(float(v)) for s in result for _, v in s["values"]):
        return f"only NaN/Inf ({len(result)} series)"
    return None


def _variables(prom: str, board: dict, start: float, end: float) -> dict[str, list[str]]:
    """Each label_values variable's values over the window, resolved in order (adapter uses $tenant)."""
    found: dict[str, list[str]] = {}
    for name, selector, label in query_variables(board):
        match = substitute(selector, {k: multi_value(v) for k, v in found.items()})
        r = httpx.get(f"{prom}/api/v1/series", params={"match[]": match, "start": start, "end": end}, timeout=30)
        assert r.json()["status"] == "success", (name, match, r.text)
        found[name] = sorted({s[label] for s in r.json()["data"] if label in s})
    return found


def test_every_dashboard_query_and_rule_answers_from_a_real_prometheus(stack):
    url, prom = stack["url"], stack["prom"]
    started = time.time()
    codes = asyncio.run(_load(url, stack["keys"], LOAD_S))
    at = time.time() - 1  # the load window's end
    time.sleep(4)  # a few more scrapes and rule evaluations past `at`
    by_status = Counter({(t, s): n for (t, _, s), n in codes.items()})
    assert codes["initech", BROKEN, 400] == 2 and codes["acme", "acme/nothing", 404] == 1
    assert codes["initech", "initech/chat", 429] > 0 and by_status["initech", 200] >= 5
    assert by_status["acme", 200] > 20 and by_status["globex", 200] > 20, codes

    problems, counted = [], Counter()
    for stem, board in load_dashboards().items():
        found = _variables(prom, board, started, at)
        values = {"__rate_interval": RATE_INTERVAL, **{k: multi_value(v) for k, v in found.items()}}
        if "tenant" in found:
            assert {"acme", "globex", "initech"} <= set(found["tenant"]), found
            assert {"acme/support", "globex/sales"} <= set(found["adapter"]), found
        counted["variables"] += len(found)
        counted["panels"] += len(panels(board))
        for title, expr, _ in targets(board):
            counted["panel queries"] += 1
            if (why := _problem(prom, substitute(expr, values), started, at)) is not None:
                problems.append(f"{stem} / {title}: {why}: {substitute(expr, values)}")
        if out := os.environ.get("LORAMUX_DASHBOARD_PNGS"):
            from tests.bench.render_dashboards import render

            render(prom, board, values, started, at, Path(out) / f"{stem}.png")
    for record, expr in RECORDING.items():
        counted["recording rules"] += 1
        for q in (record, expr):  # what Prometheus recorded, and the expression itself
            if (why := _problem(prom, q, started, at)) is not None:
                problems.append(f"rule {record}: {why}: {q}")
    for alert in ALERTS:
        counted["alerts"] += 1
        status, result = _query(prom, alert.expr, at)
        if status != "success":
            problems.append(f"alert {alert.name}: {result}")
        if (why := _problem(prom, alert.signal, started, at)) is not None:  # the figure it compares with a threshold
            problems.append(f"alert {alert.name}'s signal: {why}: {alert.signal}")
    print(f"\nchecked against Prometheus: {dict(counted)}; load: {sum(codes.values())} requests in {LOAD_S:.0f}s",
          file=sys.stderr)
    assert not problems, "\n".join(problems)

    status, alerts = _query(prom, "ALERTS", time.time())
    states = {(a["metric"]["alertname"], a["metric"].get("adapter") or a["metric"].get("tenant"),
               a["metric"]["alertstate"]) for a in alerts}
    assert ("LoramuxAdapterLoadFailures", BROKEN, "firing") in states, states
    assert ("LoramuxTenantThrottled", "initech", "pending") in states, states  # firing after 5 minutes of it
    assert not {s for s in states if s[0] in ("LoramuxDown", "LoramuxEngineUnhealthy")}, states
