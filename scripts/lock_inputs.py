"""The fingerprint of what a lock was compiled from: pyproject's dependency tables and the lock script.

`scripts/lock.sh` writes it into each lock's header; tests/test_lock.py recomputes it, so a
dependency edited in pyproject.toml without `make lock` fails CI instead of installing something
the lock never saw. Other pyproject edits (pytest markers, package lists) need no new lock.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {"cpu": ROOT / "locks" / "cpu.txt", "gpu": ROOT / "locks" / "gpu.txt"}
HEADER = "# lock-inputs: "


def inputs_hash(root: Path = ROOT) -> str:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    doc = {key: project.get(key) for key in ("requires-python", "dependencies", "optional-dependencies")}
    blob = json.dumps(doc, sort_keys=True) + (root / "scripts" / "lock.sh").read_text()
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def recorded_hash(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if line.startswith(HEADER):
            return line.removeprefix(HEADER).strip()
    return None


if __name__ == "__main__":
    print(inputs_hash(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT))
