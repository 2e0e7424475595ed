"""A tenant flooding the server does not starve another: with tenant A keeping ten times B's
requests in flight, more than the engine's batch holds, B's requests all complete during the
flood and each waits far less for its first token than A's own requests wait in the same
window (under first come, first served both wait in one queue, so the two are alike).

The comparison is within one window on one server, so a slow or busy machine slows both
sides alike; the bench (tests/bench/bench_fair_share.py) prints the figures, fairness off too.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

import pytest

from tests.bench.bench_fair_share import make_keys, phase
from tests.integration.conftest import running_server

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_a_light_tenant_keeps_flowing_under_a_tenfold_flood(tiny_base: Path, tmp_path: Path):
    keys = make_keys(tmp_path / "keys.json")
    args = ["--base", str(tiny_base), "--served-name", "tiny", "--dtype", "float32",
            "--keys", str(tmp_path / "keys.json"), "--max-num-seqs", "2"]
    with running_server(args, tmp_path / "server.log") as url:
        r = asyncio.run(phase(url, keys, flood=True, b_requests=6, b_clients=1, a_clients=10,
                              max_tokens=24, warmup_s=2.0))
    # phase() fails if A's flood stopped early: B's six requests all ran while it went on
    assert len(r.b_ttft) == 6 and r.a_done >= 4, r
    b, a = statistics.median(r.b_ttft), statistics.median(r.a_ttft)
    assert b * 3 < a, f"B's median TTFT {b:.2f}s vs A's {a:.2f}s under A's flood"
