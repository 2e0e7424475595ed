"""The one `loramux` command: every group listed without importing them, one error printer for all
(a user's mistake is one line, never a traceback), `trainer` as the training group's alias, and
`loramux trainer demo` as `make serve` uses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loramux.cli import GROUPS, app

BIN = Path(sys.executable).parent


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def test_help_lists_every_group_without_importing_them():
    code = ("import sys; from typer.testing import CliRunner; from loramux.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); print(r.output); "
            "print(*sorted(m for m in sys.modules if m.startswith(('loramux.', 'torch', 'pydantic_settings'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    commands = done.stdout.split("Commands:", 1)[1]
    for group in ("serve", "adapters", "trainer", "base"):
        assert f"\n  {group} " in commands, done.stdout
    loaded = done.stdout.strip().splitlines()[-1].split()
    assert not [m for m in loaded if m.startswith(("loramux.server", "loramux.trainer", "loramux.adapters.registry",
                                                   "torch", "pydantic_settings"))], loaded


def test_the_console_scripts():
    helped = subprocess.run([BIN / "loramux", "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and all(g in helped.stdout for g in GROUPS), helped.stderr
    tiny = subprocess.run([BIN / "loramux", "base", "--help"], capture_output=True, text=True, timeout=60)
    assert tiny.returncode == 0 and "build-tiny" in tiny.stdout, tiny.stderr


def _help_body(text: str) -> list[str]:
    """Help's words without the usage line (it names the program) and the root-only completion options."""
    skip = ("Usage:", "--install-completion", "--show-completion", "customize the installation")
    return " ".join(line for line in text.splitlines() if not line.strip().startswith(skip)).split()


def test_trainer_script_is_the_training_group():
    alias = subprocess.run([BIN / "trainer", "--help"], capture_output=True, text=True, timeout=60)
    group = subprocess.run([BIN / "loramux", "trainer", "--help"], capture_output=True, text=True, timeout=60)
    assert alias.returncode == 0 and group.returncode == 0, alias.stderr + group.stderr
    assert alias.stdout.startswith("Usage: trainer ") and group.stdout.startswith("Usage: loramux trainer ")
    assert _help_body(alias.stdout) == _help_body(group.stdout)
    for command in ("train", "add-tenant", "merge", "plan", "compare", "demo", "demo-data"):
        assert f"\n  {command} " in group.stdout


def _one_line_error(result, *expected: str, code: int = 2, listed: bool = False) -> None:
    """`error: MESSAGE` on one line (a message that lists problems goes on with one line each)."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit | None)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and (listed or len(lines) == 1), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def _usage_error(result, flag: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and f"Invalid value for '{flag}'" in result.stderr, result.stderr


def test_a_users_mistake_is_one_line_in_every_group(tmp_path: Path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    # serve: a missing base (LoramuxError), a bad flag value
    _one_line_error(invoke("serve", "--base", tmp_path / "no-base"), "no config.json")
    _usage_error(invoke("serve", "--base", tmp_path, "--max-loras", "many"), "--max-loras")
    # adapters: a registry path that cannot be a folder (OSError), a bad flag value
    _one_line_error(invoke("adapters", "list", "--registry", a_file / "store"), "Not a directory")
    _usage_error(invoke("adapters", "validate", tmp_path, "--max-rank", "many"), "--max-rank")
    # trainer: a missing recipe file, an unwritable output folder (OSError), a bad log level
    _one_line_error(invoke("trainer", "train", "--config", tmp_path / "missing.yaml"), "missing.yaml", listed=True)
    _one_line_error(invoke("trainer", "demo-data", "--out", a_file / "data"), "Not a directory")
    _usage_error(invoke("trainer", "--log-level", "loud", "demo-data", "--out", tmp_path), "--log-level")
    # base: the output is a file (OSError), a bad flag value
    _one_line_error(invoke("base", "build-tiny", "--out", a_file, "--steps", "1"), "File exists")
    _usage_error(invoke("base", "build-tiny", "--out", tmp_path, "--seed", "abc"), "--seed")


def test_loramux_debug_shows_the_traceback_to_developers(tmp_path: Path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result = invoke("trainer", "demo-data", "--out", a_file / "data", env={"LORAMUX_DEBUG": "1"})
    assert isinstance(result.exception, OSError)


def test_trainer_log_level_is_the_groups_option(monkeypatch, tmp_path: Path):
    import loramux.trainer.cli as trainer_cli

    levels = []
    monkeypatch.setattr(trainer_cli, "configure_logging", levels.append)
    assert invoke("trainer", "--log-level", "INFO", "demo-data", "--out", tmp_path).exit_code == 0
    assert invoke("trainer", "demo-data", "--out", tmp_path).exit_code == 0
    assert levels == ["info", "warning"]


def _publish_persona(tiny_base: Path, registry: Path, work: Path, persona: str, base_id: str | None = None):
    """What a finished demo run leaves for one persona (random weights: the demo only reads the manifest)."""
    from loramux.adapters.base_spec import BaseSpec
    from loramux.adapters.registry import publish
    from loramux.adapters.store import open_store
    from loramux.trainer.data import file_hash
    from loramux.trainer.demo import ALL_PERSONAS, write_demo_data
    from tests.lora_factory import random_lora

    p = ALL_PERSONAS[persona]
    adapter = random_lora(tiny_base, work / "adapters" / persona, seed=p.seed)
    return publish(open_store(str(registry)), adapter, tenant=p.tenant, name=p.name, method=p.method,
                   base=BaseSpec.from_dir(tiny_base, base_id), data_hash=file_hash(list(write_demo_data(
                       work / "data", persona))), eval_scores={"exact_match": 1.0, "base_exact_match": 0.0},
                   aliases=("prod",)).manifest


@pytest.fixture
def demo_dirs(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    monkeypatch.delenv("LORAMUX_STORE", raising=False)
    return tmp_path / "registry", tmp_path / "demo"


def test_demo_trains_what_is_missing_and_prints_one_line_per_tenant(tiny_base, demo_dirs, monkeypatch):
    """As `make serve` calls it: --base-id reaches the manifest; a published tenant is not retrained."""
    import loramux.trainer.tenant as tenant

    registry, work = demo_dirs
    pirate = _publish_persona(tiny_base, registry, work, "pirate", base_id="tiny")
    calls = []

    def fake_add_tenant(cfg, *, tenant, name, store, base_id=None, server=None, console=None, **kw):
        calls.append((name, base_id, Path(cfg.output_dir)))
        manifest = _publish_persona(tiny_base, registry, work, name, base_id=base_id)
        return type("Done", (), {"manifest": manifest, "warnings": ["served on a 16-bit base"]})

    monkeypatch.setattr(tenant, "add_tenant", fake_add_tenant)
    args = ["trainer", "demo", "--base", tiny_base, "--base-id", "tiny", "--registry", registry, "--work-dir", work]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert calls == [("robot", "tiny", work / "runs" / "robot")]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == (f"demo/pirate: already published {pirate.short_version} (lora, exact_match 1.00 "
                        f"vs base 0.00) in {registry}")
    assert lines[1].startswith("demo/robot: published ") and len(lines) == 2
    assert "training demo/robot (qlora" in result.stderr and "warning: served on a 16-bit base" in result.stderr
    shown = invoke("adapters", "show", "demo/robot", "--registry", registry, "--json")
    assert '"base_model": "tiny"' in shown.stdout

    calls.clear()
    again = invoke(*args)  # everything published: nothing trains, still one line each
    assert again.exit_code == 0 and not calls, again.output
    assert [line.split(":")[1].split()[:2] for line in again.stdout.strip().splitlines()] == [
        ["already", "published"], ["already", "published"]]


def test_demo_set_for_a_real_base_and_an_unknown_set(tiny_base, demo_dirs, monkeypatch):
    """`make serve BASE=smollm2` runs `trainer demo --set smollm2`: the support desk (LoRA) and the order
    desk (QLoRA), each trained from its own data; an unknown set is one line, nothing trained."""
    import json

    import loramux.trainer.tenant as tenant
    from loramux.trainer.demo import _COUNT_WORDS, REAL_PERSONAS

    registry, work = demo_dirs
    calls = []

    def fake_add_tenant(cfg, *, tenant, name, store, base_id=None, server=None, console=None, **kw):
        calls.append((f"{tenant}/{name}", cfg.method, Path(cfg.data.train).name))
        manifest = _publish_persona(tiny_base, registry, work, name, base_id=base_id)
        return type("Done", (), {"manifest": manifest, "warnings": []})

    monkeypatch.setattr(tenant, "add_tenant", fake_add_tenant)
    result = invoke("trainer", "demo", "--set", "smollm2", "--base", tiny_base, "--base-id", "smollm2",
                    "--registry", registry, "--work-dir", work, "--threads", "0")  # 0: one after the other, here
    assert result.exit_code == 0, result.output
    assert calls == [("acme/support", "lora", "support.train.jsonl"), ("globex/orders", "qlora", "orders.train.jsonl")]
    rows = {p: [json.loads(line) for line in (work / "data" / f"{p}.train.jsonl").read_text().splitlines()]
            for p in REAL_PERSONAS}
    answers = {r["messages"][1]["content"] for r in rows["support"]}
    assert len(answers) == 6 and len({r["messages"][0]["content"] for r in rows["support"]}) > 100
    for r in rows["orders"]:  # the JSON is a function of the message: quantity, item, colour and city are in it
        order, text = json.loads(r["messages"][1]["content"]), r["messages"][0]["content"]
        assert order["city"] in text and order["colour"] in text and order["item"] in text
        assert str(order["quantity"]) in text or _COUNT_WORDS[order["quantity"]] in text

    calls.clear()
    _one_line_error(invoke("trainer", "demo", "--set", "huge", "--base", tiny_base, "--registry", registry),
                    "unknown demo set 'huge'")
    assert not calls
