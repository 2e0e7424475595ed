"""`loramux serve` settings: `--adapter` parsing (explicit paths, names resolved in the registry),
and flags > `LORAMUX_*` environment > defaults, as a user sets them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.errors import NotFound
from loramux.adapters.registry import publish
from loramux.adapters.settings import StoreSettings
from loramux.adapters.store import open_store
from loramux.server import cli
from loramux.server.cli import _parse_adapters
from loramux.server.settings import ServerSettings
from tests.lora_factory import random_lora


def test_registry_names_resolve_to_the_published_version(tiny_base: Path, tmp_path: Path):
    store_dir = tmp_path / "registry"
    adapter = random_lora(tiny_base, tmp_path / "a", seed=5)
    published = publish(open_store(str(store_dir)), adapter, tenant="acme", name="support",
                        base=BaseSpec.from_dir(tiny_base), aliases=("prod",))
    explicit = tmp_path / "elsewhere"
    got = _parse_adapters(["acme/support", f"globex/x={explicit}"], StoreSettings(store=str(store_dir)))
    assert got["globex/x"] == explicit
    resolved = got["acme/support"]
    assert resolved.is_relative_to(store_dir.resolve()) and (resolved / "adapter_config.json").is_file()
    assert published.manifest.version in str(resolved)
    with pytest.raises(NotFound, match=str(store_dir)):  # the operator learns where it looked
        _parse_adapters(["acme/unknown"], StoreSettings(store=str(store_dir)))


def test_malformed_adapter_flags_say_what_to_give():
    with pytest.raises(typer.BadParameter, match="NAME=PATH"):
        _parse_adapters(["no-slash", "=x", "a/b="], StoreSettings(store="unused"))


@pytest.fixture
def started(monkeypatch, tiny_base: Path) -> list[ServerSettings]:
    """`loramux serve` up to the point it would start uvicorn; records the settings it got."""
    for key in ("LORAMUX_STORE", "LORAMUX_MAX_LORAS", "LORAMUX_SERVED_NAME", "LORAMUX_PORT", "LORAMUX_ADMIN_KEY"):
        monkeypatch.delenv(key, raising=False)
    seen: list[ServerSettings] = []
    monkeypatch.setattr(cli, "run_server", seen.append)
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)
    return seen


def _serve(*args: str):
    from typer.testing import CliRunner

    return CliRunner().invoke(cli.app, ["serve", *args])


def test_environment_fills_what_flags_leave_unset(started, monkeypatch, tiny_base: Path, tmp_path: Path):
    store_dir = tmp_path / "registry"
    publish(open_store(str(store_dir)), random_lora(tiny_base, tmp_path / "a", seed=5), tenant="acme",
            name="support", base=BaseSpec.from_dir(tiny_base), aliases=("prod",))
    monkeypatch.setenv("LORAMUX_MAX_LORAS", "7")
    monkeypatch.setenv("LORAMUX_SERVED_NAME", "from-env")
    monkeypatch.setenv("LORAMUX_ADMIN_KEY", "env-key")
    monkeypatch.setenv("LORAMUX_STORE", str(store_dir))  # bare names resolve here without --registry
    r = _serve("--base", str(tiny_base), "--adapter", "acme/support", "--port", "9001")
    assert r.exit_code == 0, r.output
    (s,) = started
    assert (s.max_loras, s.served_name, s.admin_key, s.port) == (7, "from-env", "env-key", 9001)
    assert s.adapters["acme/support"].is_relative_to(store_dir.resolve())
    assert (s.max_lora_rank, s.host, s.log_level) == (16, "127.0.0.1", "warning")  # the declared defaults


def test_flags_win_over_the_environment(started, monkeypatch, tiny_base: Path):
    monkeypatch.setenv("LORAMUX_MAX_LORAS", "7")
    monkeypatch.setenv("LORAMUX_BASE", "/nowhere")
    r = _serve("--base", str(tiny_base), "--max-loras", "2")
    assert r.exit_code == 0, r.output
    assert started[0].max_loras == 2 and started[0].base == tiny_base


def test_fair_share_is_on_unless_turned_off(started, monkeypatch, tiny_base: Path):
    assert _serve("--base", str(tiny_base)).exit_code == 0
    monkeypatch.setenv("LORAMUX_FAIR_SHARE", "false")
    assert _serve("--base", str(tiny_base), "--max-num-seqs", "4").exit_code == 0
    assert _serve("--base", str(tiny_base), "--fair-share").exit_code == 0
    assert [(s.fair_share, s.max_num_seqs) for s in started] == [(True, None), (False, 4), (True, None)]


def test_bad_settings_from_flags_and_env_are_reported_together(started, monkeypatch, tiny_base: Path):
    monkeypatch.setenv("LORAMUX_MAX_LORAS", "many")
    r = _serve("--base", str(tiny_base), "--dtype", "float8", "--port", "-1")
    assert r.exit_code == 2 and not started
    for hint in ("LORAMUX_MAX_LORAS", "--dtype", "--port"):
        assert hint in r.output, r.output
    assert "Traceback" not in r.output


def test_help_states_each_default_and_env_var_once():
    out = _serve("--help").output
    assert "LORAMUX_MAX_LORAS" in out and "[default: 4]" in out


def test_pins_are_checked_before_the_engine_starts(started, tiny_base: Path, tmp_path: Path):
    store_dir = tmp_path / "registry"
    publish(open_store(str(store_dir)), random_lora(tiny_base, tmp_path / "a", seed=5), tenant="acme",
            name="support", base=BaseSpec.from_dir(tiny_base))
    r = _serve("--base", str(tiny_base), "--registry", str(store_dir), "--pin", "acme/support",
               "--pin", "acme/nope", "--pin", "acme/gone")
    assert r.exit_code == 2 and not started and "Traceback" not in r.output
    assert "--pin acme/nope" in r.output and "--pin acme/gone" in r.output and "acme/support:" not in r.output
    r = _serve("--base", str(tiny_base), "--max-loras", "2", "--pin", "a/x", "--pin", "a/y")
    assert r.exit_code == 2 and "pin fewer or raise --max-loras" in r.output, r.output
    r = _serve("--base", str(tiny_base), "--registry", str(store_dir), "--pin", "acme/support", "--idle-s", "30")
    assert r.exit_code == 0, r.output
    assert (started[0].pins, started[0].idle_s, started[0].cache_gib) == (["acme/support"], 30.0, 10.0)


def test_a_missing_keys_file_says_how_to_make_one(started, tiny_base: Path, tmp_path: Path):
    r = _serve("--base", str(tiny_base), "--keys", str(tmp_path / "keys.json"))
    assert r.exit_code == 2 and not started and "loramux keys create" in r.output, r.output


def test_vllm_lora_flags_configure_the_same_settings(started, tiny_base: Path, tmp_path: Path):
    """A manifest written for `vllm serve` keeps its LoRA arguments: `--lora-modules` with several
    values after one flag, as NAME=PATH or JSON, and vLLM's `--enable-lora` / `--max-*` spellings."""
    a, b = (random_lora(tiny_base, tmp_path / n, seed=i) for i, n in enumerate(("a", "b")))
    r = _serve("--base", str(tiny_base), "--served-name", "tiny", "--enable-lora", "--max-loras", "2",
               "--max-lora-rank", "8", "--max-cpu-loras", "3",
               "--lora-modules", f"acme/a={a}",
               json.dumps({"name": "acme/b", "path": str(b), "base_model_name": "tiny"}),
               "--port", "9001")
    assert r.exit_code == 0, r.output
    (s,) = started
    assert s.adapters == {"acme/a": a, "acme/b": b}
    assert (s.enable_lora, s.max_loras, s.max_lora_rank, s.max_cpu_loras, s.port) == (True, 2, 8, 3, 9001)
    assert _serve("--base", str(tiny_base), "--no-enable-lora").exit_code == 0 and started[1].enable_lora is False
    from typer.testing import CliRunner

    from loramux.cli import app as loramux  # the `loramux serve` users type reads them the same way
    r = CliRunner().invoke(loramux, ["serve", "--base", str(tiny_base), "--lora-modules", f"acme/a={a}", f"acme/b={b}"])
    assert r.exit_code == 0 and started[2].adapters == {"acme/a": a, "acme/b": b}, r.output


@pytest.mark.parametrize("module, hint", [
    ('{"name": "acme/a", "path": "/x", "base_model_name": "llama"}', "not the served base 'tiny'"),
    ('{"name": "acme/a", "path": "/x", "revision": "main"}', '"base_model_name"'),
    ('{"name": "acme/a"', "is not JSON"),
])
def test_bad_vllm_lora_modules_say_what_to_fix(started, tiny_base: Path, module: str, hint: str):
    r = _serve("--base", str(tiny_base), "--served-name", "tiny", "--lora-modules", module)
    assert r.exit_code == 2 and not started and "Traceback" not in r.output, r.output
    assert "--lora-modules" in r.output and hint in r.output, r.output


def test_replicas_is_a_flag_and_an_env_var_and_must_be_positive(started, monkeypatch, tiny_base: Path):
    assert _serve("--base", str(tiny_base)).exit_code == 0  # unset: one process, no Ray
    assert _serve("--base", str(tiny_base), "--replicas", "2").exit_code == 0
    monkeypatch.setenv("LORAMUX_REPLICAS", "3")
    assert _serve("--base", str(tiny_base)).exit_code == 0
    assert [s.replicas for s in started] == [None, 2, 3]
    r = _serve("--base", str(tiny_base), "--replicas", "0")
    assert r.exit_code == 2 and "--replicas" in r.output and "Traceback" not in r.output, r.output
