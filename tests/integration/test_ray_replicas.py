"""`loramux serve --replicas 2` on a local Ray: two real vLLM engines behind Ray Serve.

Checks adapter affinity (Ray Serve multiplexing by resolved version), one set of quotas for
the cluster, identical `/v1/models`, per-replica metrics whose sums are exact, alias moves,
the same greedy answers as one process (PEFT's), and a replica killed mid-load losing nothing.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.conftest import running_server
from tests.integration.test_mixed_batches import MAX_TOKENS as ANSWER_TOKENS  # the PEFT reference's length
from tests.integration.test_mixed_batches import peft_outputs
from tests.lora_factory import PROBE, distinct_loras, random_lora

pytestmark = pytest.mark.integration

ADAPTERS = [f"acme/a{i}" for i in range(8)]
QUOTA_RPM = 12
REPLICA = "x-loramux-replica"


@dataclass
class Cluster:
    url: str
    pid: int  # the `loramux serve` process (Ray's driver)
    keys: dict[str, str]
    store: object
    base: Path
    root: Path
    sent: Counter = field(default_factory=Counter)  # (replica, model, status) -> answers seen

    def post(self, model: str, key: str = "acme", **body) -> httpx.Response:
        r = httpx.post(f"{self.url}/v1/completions", headers={"authorization": f"Bearer {self.keys[key]}"},
                       json={"model": model, "prompt": PROBE, "max_tokens": 8, "temperature": 0, **body},
                       timeout=120)
        self.sent[r.headers.get(REPLICA), model, r.status_code] += 1
        return r


def _args(base: Path, store, keys: Path) -> list[str]:
    return ["--base", str(base), "--served-name", "tiny", "--dtype", "float32", "--registry", str(store.root),
            "--refresh-s", "1", "--keys", str(keys), "--max-loras", "4"]


def _answers(url: str, key: str) -> dict[str, str]:
    """Greedy completions of PROBE from the base and every adapter."""
    out = {}
    for model in ["tiny", *ADAPTERS]:
        r = httpx.post(f"{url}/v1/completions", headers={"authorization": f"Bearer {key}"},
                       json={"model": model, "prompt": PROBE, "max_tokens": ANSWER_TOKENS, "temperature": 0},
                       timeout=120)
        assert r.status_code == 200, r.text
        out[model] = r.json()["choices"][0]["text"]
    return out


@pytest.fixture(scope="module")
def world(tiny_base: Path, tmp_path_factory):
    """A registry with eight adapters of one tenant, and keys: acme (no limits), quota (base only, 12 rpm)."""
    from loramux.adapters.base_spec import BaseSpec
    from loramux.adapters.registry import publish
    from loramux.adapters.store import open_store
    from loramux.server.keys import create_key

    root = tmp_path_factory.mktemp("ray")
    store = open_store(str(root / "store"))
    spec = BaseSpec.from_dir(tiny_base, "tiny")
    for name, path in distinct_loras(tiny_base, root / "src", ADAPTERS).items():
        publish(store, path, tenant="acme", name=name.split("/")[1], base=spec)
    keys = {"acme": create_key(root / "keys.json", "acme")[0],
            "quota": create_key(root / "keys.json", "quota", rpm=QUOTA_RPM)[0]}
    return root, store, keys


@pytest.fixture(scope="module")
def reference(world, tiny_base: Path) -> dict[str, str]:
    """PEFT's greedy answers for the base and every adapter: what one process serves too
    (test_mixed_batches holds one process to PEFT), without a third engine to start."""
    from loramux.adapters.registry import Resolver

    _, store, _ = world
    adapters = {name: Resolver(store).resolve(name).path for name in ADAPTERS}
    return {model: text for (model, _), text in peft_outputs(tiny_base, adapters, ["tiny", *ADAPTERS],
                                                               [PROBE]).items()}


@pytest.fixture(scope="module")
def cluster(world, tiny_base: Path):
    root, store, keys = world
    log = root / "ray.log"
    with running_server([*_args(tiny_base, store, root / "keys.json"), "--replicas", "2"], log, timeout=900) as url:
        driver = next(p for p in psutil.process_iter(["cmdline"]) if "--replicas" in (p.info["cmdline"] or [])
                      and str(root / "keys.json") in p.info["cmdline"])
        deadline = time.monotonic() + 600
        while len({httpx.get(f"{url}/health").headers.get(REPLICA) for _ in range(8)} - {None}) < 2:
            assert time.monotonic() < deadline, "the second replica never answered"
            time.sleep(2)
        yield Cluster(url, driver.pid, keys, store, tiny_base, root)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]  # quiet: nothing but our own lines


def _replica_processes(cluster: Cluster) -> list[psutil.Process]:
    """This cluster's engine replicas (Ray titles them `ray::ServeReplica:loramux:Replica`)."""
    found = []
    for p in psutil.Process(cluster.pid).children(recursive=True):
        try:
            if "ServeReplica:loramux:Replica" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            pass
    return found


def test_requests_for_an_adapter_stay_on_one_replica_and_adapters_spread(cluster):
    first = {}
    for model in ADAPTERS:  # each version's first request: Ray sends it to the replica holding fewest
        r = cluster.post(model)
        assert r.status_code == 200, r.text
        first[model] = r.headers[REPLICA]
    time.sleep(2)  # replicas report the ids they hold to Ray's routers
    seen = defaultdict(list)
    for _ in range(4):
        for model in ADAPTERS:
            seen[model].append(cluster.post(model).headers[REPLICA])
    hits = sum(replica == first[m] for m, replicas in seen.items() for replica in replicas)
    print(f"\naffinity: {hits}/{4 * len(ADAPTERS)} repeat requests on the adapter's first replica; "
          f"adapters per replica {Counter(first.values())}", file=sys.stderr)
    # Ray's routing is best-effort (a holder that is slow to say how busy it is loses the request):
    # nearly all stay; without affinity about half would
    assert hits >= 0.9 * 4 * len(ADAPTERS)
    assert len(set(first.values())) == 2  # the adapters spread over both replicas
    assert max(Counter(first.values()).values()) <= len(ADAPTERS) // 2 + 1


def test_base_requests_spread_over_both_replicas(cluster):
    async def burst():
        async with httpx.AsyncClient(timeout=120) as c:
            return await asyncio.gather(*[c.post(f"{cluster.url}/v1/completions", json={
                "model": "tiny", "prompt": PROBE, "max_tokens": 4}, headers={
                "authorization": f"Bearer {cluster.keys['acme']}"}) for _ in range(16)])

    answers = asyncio.run(burst())
    for r in answers:
        cluster.sent[r.headers.get(REPLICA), "tiny", r.status_code] += 1
    assert all(r.status_code == 200 for r in answers)
    assert len({r.headers[REPLICA] for r in answers}) == 2


def test_models_are_the_same_from_every_replica(cluster):
    lists, replicas = set(), set()
    for _ in range(10):
        r = httpx.get(f"{cluster.url}/v1/models", headers={"authorization": f"Bearer {cluster.keys['acme']}"})
        assert r.status_code == 200
        replicas.add(r.headers[REPLICA])
        lists.add(tuple((m["id"], m.get("parent")) for m in r.json()["data"]))
    assert len(replicas) == 2
    assert lists == {(("tiny", None), *((a, "tiny") for a in ADAPTERS))}


def test_a_quota_holds_for_the_cluster_not_per_replica(cluster):
    async def burst():
        async with httpx.AsyncClient(timeout=120) as c:
            return await asyncio.gather(*[c.post(f"{cluster.url}/v1/completions", json={
                "model": "tiny", "prompt": PROBE, "max_tokens": 2}, headers={
                "authorization": f"Bearer {cluster.keys['quota']}"}) for _ in range(2 * QUOTA_RPM)])

    answers = asyncio.run(burst())
    for r in answers:
        cluster.sent[r.headers.get(REPLICA), "tiny", r.status_code] += 1
    codes = Counter(r.status_code for r in answers)
    print(f"\nquota {QUOTA_RPM}/min across 2 replicas: {dict(codes)}", file=sys.stderr)
    assert codes == {200: QUOTA_RPM, 429: QUOTA_RPM}
    assert len({r.headers[REPLICA] for r in answers if r.status_code == 200}) == 2  # both admitted some
    limited = [r for r in answers if r.status_code == 429]
    assert all(r.json()["error"]["code"] == "rate_limit_exceeded" and "retry-after" in r.headers for r in limited)


def test_metrics_carry_each_replica_and_their_sums_are_exact(cluster):
    from prometheus_client.parser import text_string_to_metric_families

    time.sleep(3)  # replicas push their metrics every second
    text = httpx.get(f"{cluster.url}/metrics").text
    counted = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "loramux_requests":
            for s in family.samples:
                if s.name == "loramux_requests_total":
                    counted[s.labels["replica"], s.labels["adapter"], int(s.labels["status"])] += s.value
    sent = {k: v for k, v in cluster.sent.items() if k[2] == 200}
    assert {k: v for k, v in counted.items() if k[2] == 200} == sent
    assert len({replica for replica, *_ in counted}) == 2
    assert sum(v for (_, a, s), v in counted.items() if s == 429) == QUOTA_RPM
    assert 'loramux_engine_healthy{replica="' in text


def test_greedy_answers_equal_one_process(cluster, reference):
    assert _answers(cluster.url, cluster.keys["acme"]) == reference


def test_an_alias_move_reaches_the_cluster_within_the_refresh(cluster):
    from loramux.adapters.base_spec import BaseSpec
    from loramux.adapters.registry import publish

    path = random_lora(cluster.base, cluster.root / "src" / "a0-v2", seed=991)
    new = publish(cluster.store, path, tenant="acme", name="a0", base=BaseSpec.from_dir(cluster.base, "tiny")).manifest
    cluster.store.set_alias(new.ref, "prod")
    time.sleep(2.5)  # --refresh-s 1, on the ingress and on each replica
    versions = {cluster.post("acme/a0").headers["x-loramux-adapter-version"] for _ in range(6)}
    assert versions == {new.short_version}


def test_a_replica_killed_mid_load_loses_no_request_and_comes_back(cluster):
    before = _replica_processes(cluster)
    assert len(before) == 2
    assert [p.nice() for p in before] == [0, 0]  # the engines are the server: not Ray's nice-15 workers
    models = ["tiny", *ADAPTERS[:4]]

    async def load():
        async with httpx.AsyncClient(timeout=300) as c:
            tasks = [asyncio.create_task(c.post(f"{cluster.url}/v1/completions", json={
                "model": models[i % len(models)], "prompt": PROBE, "max_tokens": 100, "ignore_eos": True,
                "temperature": 0}, headers={"authorization": f"Bearer {cluster.keys['acme']}"}))
                for i in range(20)]
            await asyncio.sleep(0.5)  # all sent, none can be done: 100 tokens take over a second here
            before[0].send_signal(signal.SIGKILL)
            return await asyncio.gather(*tasks)

    answers = asyncio.run(load())
    retried = [r for r in answers if int(r.headers.get("x-loramux-attempts", "1")) > 1]
    print(f"\nfault: 20 requests, one replica killed mid-load: {Counter(r.status_code for r in answers)}, "
          f"{len(retried)} retried on the other replica", file=sys.stderr)
    assert [r.status_code for r in answers] == [200] * 20
    assert all(len(r.json()["choices"][0]["text"]) > 0 for r in answers)
    assert retried  # the kill hit requests in flight, and they were answered elsewhere
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # Ray starts a replacement replica
        seen = {cluster.post("tiny").headers.get(REPLICA) for _ in range(8)}
        if len(seen - {None}) == 2 and len(_replica_processes(cluster)) == 2:
            break
        time.sleep(5)
    else:
        pytest.fail("Ray did not bring the killed replica back within 10 minutes")
    print(f"fault: replica back after {600 - (deadline - time.monotonic()):.0f}s", file=sys.stderr)
