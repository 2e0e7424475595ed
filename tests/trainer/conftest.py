"""Trained adapters shared by the trainer tests: each trains once per session, side by side in `pool`."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import pytest

# One thread: on a small, busy CPU the tiny base trains ~5x faster than with torch's default.
FAST = ["training.threads=1"]


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
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="session")
def demo_tenants(pool, tiny_base, demo_data, store, tmp_path_factory) -> dict[str, Future]:
    """demo/robot (QLoRA) and demo/pirate (LoRA), started together when a test first needs either."""
    from loramux.trainer.config import load_config, recipe_path
    from loramux.trainer.tenant import add_tenant

    runs = {}
    for persona, method in (("robot", "qlora"), ("pirate", "lora")):  # the longer run first
        train, held = demo_data[persona]
        out = tmp_path_factory.mktemp(f"run-{method}")
        cfg = load_config(recipe_path(method), [f"base={tiny_base}", f"data.train={train}", f"data.eval={held}",
                                                f"output_dir={out}", *FAST])
        runs[persona] = pool.submit(add_tenant, cfg, tenant="demo", name=persona, store=str(store))
    return runs


@pytest.fixture(scope="session")
def lora_tenant(demo_tenants):
    """demo/pirate: LoRA, trained, gated and published with the shipped recipe."""
    return demo_tenants["pirate"].result()


@pytest.fixture(scope="session")
def qlora_tenant(demo_tenants):
    """demo/robot: QLoRA (NF4 base), trained, gated and published with the shipped recipe."""
    return demo_tenants["robot"].result()
