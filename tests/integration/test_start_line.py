"""The real server's start line names the dtype the engine computes in, and why (issue 24)."""

from __future__ import annotations


def test_the_start_line_names_the_dtype(server):
    lines = [line for line in server.log.read_text().splitlines() if line.startswith("engine ready in")]
    assert len(lines) == 1, server.log.read_text()[-3000:]
    assert "; dtype float32: as asked;" in lines[0], lines[0]  # the session server passes --dtype float32
