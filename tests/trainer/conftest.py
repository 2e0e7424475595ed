"""Trained adapters shared by the trainer tests: the demo tenants come from the run's shared demo
folder (tests/conftest.py), the other long runs train once per session, side by side in `pool`."""

from __future__ import annotations

from pathlib import Path

import pytest

@pytest.fixture(scope="session")
def pool():
    """The session's long trainings run here, side by side (pool.py)."""
    from pool import Pool

    runs = Pool()
    yield runs
    runs.close()


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    from loramux.trainer.demo import PERSONAS, write_demo_data

    out = tmp_path_factory.mktemp("demo-data")
    return {p: write_demo_data(out, p) for p in PERSONAS}


@pytest.fixture(scope="session")
def store(demo_folder) -> Path:
    """The demo folder's registry (read-only: it is shared with the README test)."""
    return demo_folder / "registry"


def _published(demo_folder: Path, persona: str):
    """demo/PERSONA as `trainer demo` left it: the `prod` manifest and its run's metrics."""
    import json

    from loramux.adapters.registry import Resolver
    from loramux.adapters.store import open_store
    from loramux.trainer.tenant import AddTenantResult

    run = demo_folder / "runs" / persona
    manifest = Resolver(open_store(str(demo_folder / "registry"))).resolve(f"demo/{persona}").manifest
    return AddTenantResult(manifest, json.loads((run / "metrics.json").read_text()), run)


@pytest.fixture(scope="session")
def lora_tenant(demo_folder):
    """demo/pirate: LoRA, trained, gated and published with the shipped recipe."""
    return _published(demo_folder, "pirate")


@pytest.fixture(scope="session")
def qlora_tenant(demo_folder):
    """demo/robot: QLoRA (NF4 base), trained, gated and published with the shipped recipe."""
    return _published(demo_folder, "robot")
