"""A publish killed with SIGKILL at a random moment leaves the whole version or nothing.

The publisher runs in forked children of a clean driver process (crash_publisher.py); each
is killed at a random offset within the measured length of a publish, and after every
kill an independent reader checks the store. Local store: 200 kills; S3 (SeaweedFS): 60.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from s3_server import KEY, REGION, SECRET

DRIVER = Path(__file__).with_name("crash_publisher.py")


def run_driver(url: str, kills: int, seed: int, tmp_path: Path, env: dict | None = None,
               endpoint: str | None = None) -> dict:
    args = [sys.executable, str(DRIVER), url, str(kills), str(seed)] + (["--endpoint", endpoint] if endpoint else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=300,
                          env={**(env or {}), "CRASH_WORK": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_whole_or_nothing(summary: dict, kills: int) -> None:
    assert summary["problems"] == []
    assert summary["kills"] == kills
    assert summary["republished"] == kills  # a later publish of the same files always works
    # The kills landed both before and after the commit point (and so, in between, mid-publish).
    assert summary["visible"] > 0 and summary["absent"] > 0, summary


def test_local_publish_survives_200_random_kills(tmp_path):
    summary = run_driver(str(tmp_path / "store"), 200, seed=1, tmp_path=tmp_path)
    assert_whole_or_nothing(summary, 200)


def test_s3_publish_survives_random_kills(s3_endpoint, tmp_path):
    env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": REGION}
    summary = run_driver(f"s3://adapters/crash-{uuid.uuid4().hex[:8]}", 60, seed=2, tmp_path=tmp_path, env=env,
                         endpoint=s3_endpoint)
    assert_whole_or_nothing(summary, 60)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    monkeypatch.delenv("HTTP_PROXY", raising=False)
