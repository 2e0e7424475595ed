"""`loramux base`: `get smollm2` end to end (the run that built the shared cached base), and every
bad input as one typed error line that leaves no folder behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from loramux.cli import app


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def write_gguf(path: Path, arch: str) -> Path:
    """A metadata-only GGUF of architecture `arch` (no tensors): enough for the checks before loading."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("test")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def one_line_error(result, *expected: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit | None)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name)


def test_get_smollm2_through_the_cli(smollm2_base: Path):
    from tests.real_base import build_record

    record = build_record(smollm2_base)  # the subprocess run that built the cached folder
    assert record["argv"][-4:] == ["get", "smollm2", "--out", str(smollm2_base)]
    assert record["returncode"] == 0 and record["stdout"].strip() == str(smollm2_base)
    assert record["stderr"].strip() == "", record["stderr"]  # not a terminal: no spinner, no library bars
    assert leftovers(smollm2_base.parent) == []


def test_bad_inputs_are_one_line_each_and_leave_nothing(tmp_path: Path):
    out = tmp_path / "out"
    one_line_error(invoke("base", "import", tmp_path / "missing.gguf", "--out", out), "missing.gguf", "no such file")
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    one_line_error(invoke("base", "import", text, "--out", out), "not a GGUF file")
    rwkv = write_gguf(tmp_path / "rwkv.gguf", "rwkv6")
    one_line_error(invoke("base", "import", rwkv, "--out", out), "'rwkv6'", "llama")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(rwkv.read_bytes()[:12])
    one_line_error(invoke("base", "import", truncated, "--out", out), "truncated.gguf")
    one_line_error(invoke("base", "import", rwkv, "--out", out, "--dtype", "float8"), "float8")
    one_line_error(invoke("base", "get", "llama-70b", "--out", out), "llama-70b", "smollm2", "tiny")
    one_line_error(invoke("base", "get", "tiny", "--out", out, "--dtype", "bfloat16"), "float32")
    assert not out.exists() and leftovers(tmp_path) == []
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    one_line_error(invoke("base", "get", "smollm2", "--out", full), "not empty")
    one_line_error(invoke("base", "get", "tiny", "--out", text), "File exists")
    assert [p.name for p in full.iterdir()] == ["keep.txt"]


def test_a_failure_midway_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from loramux.trainer import tiny_base

    def half_then_crash(out: Path, **kw) -> Path:
        (Path(out) / "config.json").write_text("{}")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(tiny_base, "build_tiny", half_then_crash)
    result = invoke("base", "build-tiny", "--out", tmp_path / "new")
    assert result.exit_code == 1 and "disk on fire" in result.stderr and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    empty = tmp_path / "mounted"  # an existing empty folder (a volume) stays empty
    empty.mkdir()
    assert invoke("base", "get", "tiny", "--out", empty).exit_code == 1
    assert list(empty.iterdir()) == []


def test_get_tiny_and_build_tiny_build_into_an_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from loramux.trainer import tiny_base

    calls = []

    def fake(out: Path, seed: int = 0, steps: int = 120) -> Path:
        calls.append((seed, steps))
        (Path(out) / "model.safetensors").write_bytes(b"weights")
        (Path(out) / "config.json").write_text("{}")
        return Path(out)

    monkeypatch.setattr(tiny_base, "build_tiny", fake)
    assert invoke("base", "get", "tiny", "--out", tmp_path / "a").stdout.strip() == str(tmp_path / "a")
    mounted = tmp_path / "b"
    mounted.mkdir()
    assert invoke("base", "build-tiny", "--out", mounted, "--seed", "3", "--steps", "7").exit_code == 0
    assert calls == [(0, 120), (3, 7)]
    assert sorted(p.name for p in mounted.iterdir()) == ["config.json", "model.safetensors"]
    assert oct((mounted / "model.safetensors").stat().st_mode & 0o777) != "0o600"
