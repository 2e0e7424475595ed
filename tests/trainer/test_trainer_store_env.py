"""The trainer opens its registry from `LORAMUX_*` like every other command: with only the
environment set (no --registry), add-tenant publishes to that S3 endpoint and merge downloads
into that cache."""

from __future__ import annotations

from typer.testing import CliRunner

from loramux.trainer.cli import app
from tests.adapters.s3_server import KEY, REGION, SECRET


def test_add_tenant_and_merge_use_the_environments_store(tiny_base, demo_data, s3_endpoint, tmp_path,
                                                            monkeypatch):
    cache = tmp_path / "cache"
    for var, value in {"LORAMUX_STORE": "s3://adapters/from-env", "LORAMUX_S3_ENDPOINT_URL": s3_endpoint,
                       "LORAMUX_STORE_CACHE": str(cache), "AWS_ACCESS_KEY_ID": KEY,
                       "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": REGION,
                       "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # only loramux's variable names the endpoint
    train, held = demo_data["pirate"]
    r = CliRunner().invoke(app, ["add-tenant", "--tenant", "acme", "--name", "envy", "--data", str(train),
                                 "--eval", str(held), "--base", str(tiny_base), "--min-gain", "-1",
                                 "--output-dir", str(tmp_path / "run"), "training.max_steps=2",
                                 "training.threads=1"])
    assert r.exit_code == 0, r.output
    assert "to s3://adapters/from-env" in r.output

    r = CliRunner().invoke(app, ["merge", "--adapter", "acme/envy", "--out", str(tmp_path / "merged"),
                                 "--base", str(tiny_base)])
    assert r.exit_code == 0, r.output
    assert list(cache.rglob("adapter_model.safetensors")), "merge did not download into LORAMUX_STORE_CACHE"
