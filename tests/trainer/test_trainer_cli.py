"""The `trainer` CLI: errors are one readable message and exit 2; add-tenant end to end."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from loramux.trainer.cli import app

FAST = ["training.threads=1"]  # as in conftest.py: one thread is fastest on a busy small CPU


def test_bad_data_prints_every_problem_without_a_traceback(tiny_base, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a"}\nnot json\n')
    r = CliRunner().invoke(app, ["add-tenant", "--tenant", "acme", "--name", "x", "--data", str(data),
                                 "--base", str(tiny_base), "--registry", str(tmp_path / "store"),
                                 "--output-dir", str(tmp_path / "run")])
    assert r.exit_code == 2
    assert f"{data}:1" in r.output and f"{data}:2" in r.output and "Traceback" not in r.output


def test_add_tenant_cli_stops_at_the_gate(tiny_base, demo_data, tmp_path):
    train, held = demo_data["pirate"]
    r = CliRunner().invoke(app, ["add-tenant", "--tenant", "acme", "--name", "weak", "--data", str(train),
                                 "--eval", str(held), "--base", str(tiny_base), "--registry",
                                 str(tmp_path / "store"), "--output-dir", str(tmp_path / "run"),
                                 "training.max_steps=1", *FAST])
    assert r.exit_code == 2, r.output
    assert "not published" in r.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["score"] == 0.0


def test_demo_data_command_writes_both_personas(tmp_path):
    r = CliRunner().invoke(app, ["demo-data", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    for persona in ("pirate", "robot"):
        rows = [json.loads(line) for line in (tmp_path / f"{persona}.train.jsonl").read_text().splitlines()]
        held = [json.loads(line) for line in (tmp_path / f"{persona}.eval.jsonl").read_text().splitlines()]
        assert len(rows) == 400 and len(held) == 40
        assert not {r["messages"][0]["content"] for r in rows} & {r["messages"][0]["content"] for r in held}
