"""compare trains every method on the same data and reports one row each."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from loramux.trainer.cli import app
from loramux.trainer.config import recipe_path

FAST = ["training.threads=1"]  # as in conftest.py: one thread is fastest on a busy small CPU


def test_compare_table_has_every_method(tiny_base, demo_data, tmp_path):
    train, held = demo_data["robot"]
    args = ["compare", "--config", str(recipe_path("lora")), "--methods", "lora,qlora,full",
            f"base={tiny_base}", f"data.train={train}", f"data.eval={held}", f"output_dir={tmp_path}",
            "training.max_steps=3", "data.max_eval_examples=4", "full.training.learning_rate=1e-4", *FAST]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    rows = {row["method"]: row for row in json.loads((tmp_path / "compare.json").read_text())}
    assert set(rows) == {"lora", "qlora", "full"}
    assert rows["lora"]["trainable_params"] == rows["qlora"]["trainable_params"]
    assert rows["full"]["trainable_pct"] == 100.0
    assert rows["full"]["artifact_bytes"] > 10 * rows["lora"]["artifact_bytes"]
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and row["peak_memory_mb"] > 0 and "forgetting" in row
    full_cfg = json.loads((tmp_path / "full" / "config.json").read_text())
    assert full_cfg["training"]["learning_rate"] == 1e-4
    assert json.loads((tmp_path / "lora" / "config.json").read_text())["training"]["learning_rate"] == 3e-3
    assert "forgetting" in r.output and "full" in r.output
