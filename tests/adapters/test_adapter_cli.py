"""`loramux adapters ...`: the registry from the shell."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from loramux.adapters.cli import app
from loramux.adapters.manifest import content_hash


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAMUX_STORE", str(tmp_path / "store"))  # as a user would set it once
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result.output
    return run


def test_publish_list_show_resolve(cli, adapter_dir, tiny_base):
    version = content_hash(adapter_dir)
    printed = cli("publish", adapter_dir, "acme/support", "--base", tiny_base, "--alias", "prod",
                  "--score", "exact_match=0.97", "--data-hash", "sha256:feed")
    assert f"acme/support@{version[:12]}" in printed
    listed = cli("list", "--json").splitlines()
    assert [json.loads(line)["version"] for line in listed] == [version]
    table = cli("list")
    assert "acme/support" in table and version[:12] in table and "prod" in table
    shown = json.loads(cli("show", "acme/support"))
    assert (shown["version"], shown["aliases"], shown["data_hash"]) == (version, {"prod": version}, "sha256:feed")
    assert shown["eval_scores"] == {"exact_match": 0.97}
    assert cli("resolve", "acme/support").strip() == shown["path"]


def test_aliases_and_delete(cli, adapter_dir, tiny_base):
    version = content_hash(adapter_dir)[:12]
    cli("publish", adapter_dir, "acme/support", "--base", tiny_base)
    cli("alias", f"acme/support@{version}", "canary")
    cli("alias", "acme/support@canary", "prod")  # promote
    assert "still aliased" in cli("delete", f"acme/support@{version}", code=2)
    cli("unalias", "acme/support", "canary")
    cli("unalias", "acme/support", "prod")
    cli("delete", f"acme/support@{version}")
    assert "does not exist" in cli("resolve", "acme/support", code=2)


def test_bad_input_is_one_message_and_exit_2(cli, adapter_dir, tiny_base):
    out = cli("publish", adapter_dir, "acme/support", "--base", tiny_base, "--score", "em", "--score", "x=y", code=2)
    assert "'em'" in out and "'x=y'" in out
    cli("publish", adapter_dir, "acme/support@prod", "--base", tiny_base, code=2)
    cli("publish", adapter_dir, "Acme/support", "--base", tiny_base, code=2)
    cli("publish", adapter_dir, "acme/support", "--base", tiny_base, "--method", "dora", code=2)
    assert cli("list", "--json") == ""


def test_validate_lists_every_problem(cli, make_adapter, tiny_base):
    assert "ok: servable" in cli("validate", make_adapter(), "--base", tiny_base, "--max-rank", "16")
    out = cli("validate", make_adapter(r=32, lora_alpha=32, use_dora=True), "--max-rank", "16", code=1)
    assert "[rank]" in out and "[dora]" in out
    out = cli("publish", make_adapter(r=32, lora_alpha=32, use_dora=True), "acme/support", "--base", tiny_base,
              "--max-rank", "16", code=2)
    assert "rank 32" in out and "DoRA" in out
