"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline tiny Llama base, built once per test session (~25 s)."""
    from loramux.trainer.tiny_base import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny-base"), seed=0)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One SeaweedFS S3 gateway for the session (registry and trainer tests share it)."""
    from tests.adapters.s3_server import seaweedfs

    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as endpoint:
        yield endpoint
