"""deploy/docker/Dockerfile.{cpu,gpu}: building needs a registry, so this reads them instead:
multi-stage, every file they copy exists, they install through scripts/install.sh with the
engine's extra from pyproject.toml (cpu or gpu, plus train for the demo), and the image runs as
a non-root user with a HEALTHCHECK on /health."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(m[0].upper(), m[1].strip()) for m in re.findall(r"^\s*([A-Za-z]+)\s+(.*)$", text, flags=re.M)]


@pytest.mark.parametrize("engine", ["cpu", "gpu"])
def test_image_installs_the_engine_extra_through_the_install_script(engine: str):
    steps = instructions(ROOT / "deploy" / "docker" / f"Dockerfile.{engine}")
    args = dict(a.split("=", 1) for i, a in steps if i == "ARG" and "=" in a)
    extras = set(args["EXTRAS"].split(","))
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert engine in extras and extras <= set(declared) and "train" in extras  # the demo trains
    assert ({"cpu", "gpu"} - {engine}).isdisjoint(extras)
    (install,) = [a for i, a in steps if i == "RUN" and "scripts/install.sh" in a]
    assert "EXTRAS=${EXTRAS}" in install
    assert "EXTRAS=${EXTRAS:-" in (ROOT / "scripts" / "install.sh").read_text()  # the script reads it


@pytest.mark.parametrize("engine", ["cpu", "gpu"])
def test_image_copies_files_that_exist_and_runs_unprivileged_with_a_healthcheck(engine: str):
    steps = instructions(ROOT / "deploy" / "docker" / f"Dockerfile.{engine}")
    stages = [a for i, a in steps if i == "FROM"]
    assert len(stages) >= 2, "multi-stage: the build tools stay out of the image"
    for i, a in steps:
        if i == "COPY" and "--from=" not in a:
            *sources, _ = shlex.split(a)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
    copied = {shlex.split(a)[0].rstrip("/") for i, a in steps if i == "COPY" and "--from=" not in a}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    assert set(packages) <= copied, "every package folder goes into the image"
    final = steps[max(k for k, (i, _) in enumerate(steps) if i == "FROM"):]
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    (health,) = [a for i, a in final if i == "HEALTHCHECK"]
    assert "/health" in health and "LORAMUX_PORT" in health
    assert ("ENTRYPOINT", '["loramux"]') in final


def test_build_context_leaves_environments_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".demo", ".git"} <= set(ignored)
