"""Session artifacts built once per test run, however many pytest-xdist workers ask for them.

Each xdist worker is its own session, so a plain session fixture would build the tiny base once per
worker. Here the first worker builds into the run's shared temporary root under a file lock; the
others wait for it and reuse the folder. Without xdist this is a plain `mktemp`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import pytest


def shared_dir(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """`build(folder)` once per run; returns the folder. Consumers must not write into it."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = factory.mktemp(name)
        build(folder)
        return folder
    root = factory.getbasetemp().parent  # shared by the run's workers
    folder, done = root / name, root / f"{name}.done"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            folder.mkdir(exist_ok=True)
            build(folder)
            done.touch()
    return folder
