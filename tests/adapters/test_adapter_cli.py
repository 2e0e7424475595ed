"""`loramux adapters ...`: every command of the issue, against the local and the S3 registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loramux.adapters.cli import app
from loramux.adapters.manifest import content_hash
from s3_server import KEY, REGION, SECRET


@pytest.fixture(params=["local", "s3"])
def registry(request, tmp_path, monkeypatch) -> str:
    """The registry URL; S3 credentials and endpoint come from the standard AWS variables."""
    if request.param == "local":
        return str(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    for var, value in (("AWS_ACCESS_KEY_ID", KEY), ("AWS_SECRET_ACCESS_KEY", SECRET),
                       ("AWS_DEFAULT_REGION", REGION), ("AWS_ENDPOINT_URL", endpoint)):
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("LORAMUX_STORE_CACHE", str(tmp_path / "cache"))
    return f"s3://adapters/cli-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cli(registry, monkeypatch):
    monkeypatch.setenv("LORAMUX_STORE", registry)  # as a user would set it once
    monkeypatch.setenv("COLUMNS", "200")  # tables unwrapped, so the test can read them
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result.stdout if "--json" in args else result.output
    return run


def test_publish_list_show_resolve(cli, registry, adapter_dir, tiny_base):
    version = content_hash(adapter_dir)
    printed = cli("publish", adapter_dir, "--tenant", "acme", "--name", "support", "--base", tiny_base,
                  "--alias", "prod", "--score", "exact_match=0.97", "--data-hash", "sha256:feed",
                  "--registry", registry)
    assert f"acme/support@{version[:12]}" in printed
    [listed] = json.loads(cli("list", "--json", "--tenant", "acme"))
    assert (listed["version"], listed["aliases"], listed["dtype"]) == (version, ["prod"], "float32")
    assert json.loads(cli("list", "--json", "--tenant", "globex")) == []
    table = cli("list", "--store", registry)  # the second spelling of --registry
    assert "acme/support" in table and version[:12] in table and "prod" in table
    shown = json.loads(cli("show", "acme/support", "--json"))
    assert (shown["version"], shown["aliases"], shown["data_hash"]) == (version, {"prod": version}, "sha256:feed")
    assert shown["eval_scores"] == {"exact_match": 0.97} and shown["loramux_version"]
    assert cli("resolve", "acme/support").strip() == shown["path"]
    table = cli("show", f"acme/support@{version[:8]}")
    assert "base_fingerprint" in table and "@prod" in table


def test_alias_canary_rollback_and_rm(cli, adapter_dir, variant, tiny_base, tmp_path):
    v1 = content_hash(adapter_dir)
    v2_dir = variant(adapter_dir, tmp_path / "v2", 1)
    v2 = content_hash(v2_dir)
    cli("publish", adapter_dir, "--tenant", "acme", "--name", "support", "--base", tiny_base, "--alias", "prod")
    cli("publish", v2_dir, "acme/support", "--base", tiny_base)
    out = cli("alias", "acme/support", "prod", v1[:12], "--canary", v2[:12], "--weight", "0.1")
    assert f"canary {v2[:12]} at 10%" in out
    shown = json.loads(cli("show", "acme/support", "--json"))
    assert shown["canary"] == {"version": v2, "weight": 0.1, "alias": "prod"}
    assert "prod (canary 10%)" in cli("list")
    assert "still aliased as prod" in cli("rm", f"acme/support@{v2[:12]}", code=2)  # a canary is in use
    cli("alias", "acme/support", "prod", v2[:12])  # promote the canary
    assert json.loads(cli("show", "acme/support", "--json"))["version"] == v2
    rolled = json.loads(cli("rollback", "acme/support", "--json"))  # back to the 90/10 split
    assert (rolled["version"], rolled["canary"], rolled["weight"]) == (v1, v2, 0.1)
    assert f"-> {v1[:12]}" in cli("rollback", "acme/support")  # back to v1 alone
    assert "no earlier version" in cli("rollback", "acme/support", code=2)
    assert "canary" not in json.loads(cli("show", "acme/support", "--json"))
    assert f"deleted acme/support@{v2[:12]}" in cli("rm", f"acme/support@{v2[:12]}")
    assert "still aliased" in cli("rm", f"acme/support@{v1[:12]}", code=2)
    cli("alias", "acme/support", "canary", v1[:12])
    cli("unalias", "acme/support", "canary")
    cli("unalias", "acme/support", "prod")
    cli("delete", f"acme/support@{v1[:12]}")  # the older spelling of rm
    assert json.loads(cli("list", "--json")) == []
    assert "does not exist" in cli("show", "acme/support", code=2)


def test_bad_input_is_one_message_and_a_non_zero_exit(cli, adapter_dir, tiny_base):
    out = cli("publish", adapter_dir, "acme/support", "--base", tiny_base, "--score", "em", "--score", "x=y", code=2)
    assert "'em'" in out and "'x=y'" in out
    cli("publish", adapter_dir, "acme/support@prod", "--base", tiny_base, code=2)
    cli("publish", adapter_dir, "--tenant", "Acme", "--name", "support", "--base", tiny_base, code=2)
    cli("publish", adapter_dir, "acme/support", "--base", tiny_base, "--method", "dora", code=2)
    assert "--tenant, --name" in cli("publish", adapter_dir, "--base", tiny_base, code=2)
    cli("publish", adapter_dir, "acme/support", "--base", tiny_base)
    version = content_hash(adapter_dir)[:12]
    assert "weight strictly between 0 and 1" in cli("alias", "acme/support", "prod", version, "--canary",
                                                     version, "--weight", "1.5", code=2)
    cli("alias", "acme/support", "prod", code=2)  # no version named
    cli("show", "../../etc/passwd", code=2)
    cli("rm", "acme/support@prod", code=2)  # rm names a version, never an alias
    assert json.loads(cli("list", "--json"))[0]["aliases"] == ["prod"]  # its first version became prod


def test_validate_lists_every_problem_with_a_fix(cli, make_adapter, tiny_base):
    assert "ok: servable" in cli("validate", make_adapter(), "--base", tiny_base, "--max-rank", "16")
    out = cli("validate", make_adapter(r=32, lora_alpha=32, use_dora=True), "--base", tiny_base,
              "--max-rank", "16", code=1)
    assert "rank" in out and "dora" in out and "use_dora=False" in out and "r <= 16" in out
    report = json.loads(cli("validate", make_adapter(r=32, lora_alpha=32, use_dora=True), "--max-rank", "16",
                            "--json", code=1))
    assert report["ok"] is False and all(p["fix"] for p in report["problems"])
    out = cli("publish", make_adapter(r=32, lora_alpha=32, use_dora=True), "acme/support", "--base", tiny_base,
              "--max-rank", "16", code=2)
    assert "rank 32" in out and "DoRA" in out and "fix:" in out


def test_an_unreachable_s3_registry_is_an_error_message(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = CliRunner().invoke(app, ["list", "--registry", "s3://adapters/x"],
                                env={"AWS_ENDPOINT_URL": "http://127.0.0.1:1",
                                     "LORAMUX_STORE_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 2 and "unreachable" in result.output and "Traceback" not in result.output


def test_the_console_script(tmp_path, adapter_dir, tiny_base):
    """The installed `loramux` command: JSON on stdout, errors on stderr, exit codes, no traceback."""
    loramux = Path(sys.executable).with_name("loramux")
    env = {**os.environ, "LORAMUX_STORE": str(tmp_path / "store")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(loramux), "adapters", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=120)

    assert run("publish", adapter_dir, "--tenant", "acme", "--name", "support", "--base", tiny_base,
               "--alias", "prod").returncode == 0
    listed = run("list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["tenant"] == "acme"
    missing = run("show", "acme/nothing")
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_a_name_without_prod_says_so_and_lists_its_versions(cli, adapter_dir, tiny_base):
    cli("publish", adapter_dir, "acme/beta", "--base", tiny_base, "--alias", "canary")
    out = cli("show", "acme/beta", code=2)
    assert "no alias `prod`" in out and content_hash(adapter_dir)[:12] in out and "adapters alias" in out
