"""The cold-load benchmark runs end to end in quick mode (local store) and reports every phase.

Only that it completes and measures: timings on a shared CI machine say nothing, so no
speed threshold here — tests/bench/bench_cold_load.py prints those against the goal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_cold_load.py"


@pytest.mark.timeout(600)
def test_quick_cold_load_bench_reports_every_phase(tiny_base: Path, tmp_path: Path):
    out = tmp_path / "cold.json"
    run = subprocess.run([sys.executable, str(BENCH), "--base", str(tiny_base), "--stores", "local",
                          "--counts", "1,10", "--samples", "3", "--out", str(out)],
                         capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(out.read_text())
    samples = result["samples"]
    assert {(s["store"], s["adapters"]) for s in samples} == {("local", 1), ("local", 10)}
    assert len(samples) == 6
    for s in samples:
        assert set(s["load_s"]) >= {"fetch", "validate", "engine"}, s
        assert all(s["load_s"][p] > 0 for p in ("fetch", "validate", "engine")), s
        assert s["cold_s"] > 0 and s["warm_s"] > 0, s
    assert not any(s["reused"] for s in samples if s["adapters"] == 10)  # 10 > 3: never-used versions only
    assert all(s["reused"] for s in samples if s["adapters"] == 1)  # count 1: evicted, then cold again
    rows = {(r["store"], r["adapters"]): r for r in result["summary"]}
    assert set(rows) == {("local", 1), ("local", 10)}
    assert all("goal_met" in r and r["samples"] == 3 for r in rows.values())
    assert "cold p50" in run.stdout  # the table
