"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline tiny Llama base, built once per test session (~25 s)."""
    from loramux.adapters.tiny_base import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny-base"), seed=0)
