"""Trained adapters shared by the trainer tests: each trains once per session (~1 min each)."""

from __future__ import annotations

from pathlib import Path

import pytest

# One thread: on a small, busy CPU the tiny base trains ~5x faster than with torch's default.
FAST = ["training.threads=1"]


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    from loramux.trainer.demo import PERSONAS, write_demo_data

    out = tmp_path_factory.mktemp("demo-data")
    return {p: write_demo_data(out, p) for p in PERSONAS}


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store")


def _add(tiny_base, demo_data, store, tmp_path_factory, persona: str, method: str):
    from loramux.trainer.config import load_config, recipe_path
    from loramux.trainer.tenant import add_tenant

    train, held = demo_data[persona]
    out = tmp_path_factory.mktemp(f"run-{method}")
    cfg = load_config(recipe_path(method), [f"base={tiny_base}", f"data.train={train}", f"data.eval={held}",
                                            f"output_dir={out}", *FAST])
    return add_tenant(cfg, tenant="demo", name=persona, store=str(store))


@pytest.fixture(scope="session")
def lora_tenant(tiny_base, demo_data, store, tmp_path_factory):
    """demo/pirate: LoRA, trained, gated and published with the shipped recipe."""
    return _add(tiny_base, demo_data, store, tmp_path_factory, "pirate", "lora")


@pytest.fixture(scope="session")
def qlora_tenant(tiny_base, demo_data, store, tmp_path_factory):
    """demo/robot: QLoRA (NF4 base), trained, gated and published with the shipped recipe."""
    return _add(tiny_base, demo_data, store, tmp_path_factory, "robot", "qlora")
