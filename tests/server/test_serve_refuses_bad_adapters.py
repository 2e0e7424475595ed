"""`loramux serve` refuses to start on an adapter it could not serve, naming file and problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loramux.server.cli", "serve", *args],
                          capture_output=True, text=True, timeout=120)


def test_not_an_adapter_directory(tiny_base: Path, tmp_path: Path):
    missing = tmp_path / "nothing-here"
    r = serve("--base", str(tiny_base), "--adapter", f"acme/support={missing}")
    assert r.returncode != 0
    assert str(missing) in r.stderr and "PEFT adapter" in r.stderr
    assert "Traceback" not in r.stderr


def test_corrupt_adapter_names_each_file_and_problem(tiny_base: Path, tmp_path: Path):
    bad_config = tmp_path / "bad-config"
    bad_config.mkdir()
    (bad_config / "adapter_config.json").write_text("{this is not json")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "adapter_config.json").write_text(
        '{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}')
    (truncated / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00")
    r = serve("--base", str(tiny_base), "--adapter", f"acme/a={bad_config}", "--adapter", f"acme/b={truncated}")
    assert r.returncode != 0
    assert "acme/a" in r.stderr and "acme/b" in r.stderr  # both reported at once
    assert "adapter_config.json" in r.stderr and "safetensors" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_names_and_flags(tiny_base: Path, tmp_path: Path):
    r = serve("--base", str(tiny_base), "--adapter", "no-equals-sign")
    assert r.returncode != 0 and "NAME=PATH" in r.stderr
    r = serve("--base", str(tiny_base), "--adapter", "acme/absent", "--registry", str(tmp_path / "reg"))
    assert r.returncode == 2 and "acme/absent" in r.stderr and str(tmp_path / "reg") in r.stderr
    r = serve("--base", str(tmp_path), "--adapter", f"../x={tmp_path}")
    assert r.returncode != 0 and "config.json" in r.stderr


def test_registry_adapter_on_a_base_with_another_chat_template(tiny_base: Path, tmp_path: Path):
    """The registry's manifest travels with the fetched version, so serve checks the template it trained with."""
    import shutil

    from loramux.adapters.base_spec import BaseSpec
    from loramux.adapters.registry import publish
    from loramux.adapters.store import open_store
    from tests.lora_factory import random_lora

    registry = tmp_path / "registry"
    publish(open_store(str(registry)), random_lora(tiny_base, tmp_path / "a", seed=3), tenant="acme",
            name="support", base=BaseSpec.from_dir(tiny_base), aliases=("prod",))
    drifted = tmp_path / "drifted"
    shutil.copytree(tiny_base, drifted)
    jinja = drifted / "chat_template.jinja"
    jinja.write_text(jinja.read_text().replace("<|end|>", "</s>"))
    r = serve("--base", str(drifted), "--registry", str(registry), "--adapter", "acme/support")
    assert r.returncode == 2 and "acme/support" in r.stderr and "chat template" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
