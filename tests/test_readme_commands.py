"""The README's serve command, run as a new user runs it: `make serve`, then the README's example
client code against every demo model. `make test-readme` runs it alone.

Its demo folder is a copy of the run's shared one (tests/conftest.py `demo_folder`), whose tenants
`trainer demo` trained as `make serve` does on a fresh folder and the trainer tests check: here
`make serve` takes the path of every later start (base there, tenants already published) rather
than training them a second time in the same CI run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import free_port, wait_healthy

pytestmark = pytest.mark.readme
ROOT = Path(__file__).resolve().parent.parent
# Library chatter a user cannot act on (issue: quiet start); none of it reaches the terminal.
NOISE = ("Triton is installed", "Failed to load CPU gemm_4bit_forward", "FutureWarning", "NUMA",
         "Writing model shards", "Loading safetensors checkpoint shards", "Traceback")


def readme_python_example() -> str:
    """The first Python block under "Talking to the server"."""
    section = (ROOT / "README.md").read_text().split("## Talking to the server", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_make_serve_then_the_readme_example_answers_from_every_demo_model(demo_folder, tmp_path):
    from loramux.trainer.demo import PERSONAS

    shutil.copytree(demo_folder, tmp_path / "demo")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:  # its own process group: stopping it stops the server it starts
        proc = subprocess.Popen(["make", "-s", "serve", f"DEMO={tmp_path / 'demo'}", f"PORT={port}"], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, log, timeout=900)
        code = readme_python_example().replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        answers = dict(line.split(" -> ", 1) for line in run.stdout.splitlines() if " -> " in line)
        assert set(answers) == {"tiny", "demo/pirate", "demo/robot"}, run.stdout
        for persona in PERSONAS.values():
            assert answers[f"{persona.tenant}/{persona.name}"] == persona.answer, answers
        assert answers["tiny"] not in {p.answer for p in PERSONAS.values()}
        terminal = log.read_text()
        assert "loramux is serving tiny, demo/pirate and demo/robot" in terminal
        assert terminal.count(": already published ") == 2, terminal  # nothing trained twice
        assert not [n for n in NOISE if n in terminal], terminal
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited already (then the error above says why)
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with pytest.raises(httpx.HTTPError):  # Ctrl-C stopped the server too
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
