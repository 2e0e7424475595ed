"""The LoRA throughput benchmark runs end to end in its quick mode (one server, a few requests).

Numbers are not checked (a shared 2-core machine); the table's rows and the plot are.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_quick_bench_runs(tiny_base, tmp_path, capsys):
    from tests.bench.bench_lora_throughput import main

    png = tmp_path / "bench.png"
    results = main(["--quick", "--no-base-server", "--base", str(tiny_base), "--requests", "8",
                    "--max-tokens", "8", "--png", str(png)])
    closed = results["closed"]
    assert {row for _, row in closed} == {"base only", "LoRA on, unused", "1 resident", "4 resident",
                                          "16 over 4 slots"}
    assert all(s.tokens > 0 and s.ttft for s in closed.values())
    out = capsys.readouterr().out
    assert "16 over 4 slots" in out and "TTFT p50" in out
    assert png.stat().st_size > 0
