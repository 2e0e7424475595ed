"""Quiet start: the libraries' notes a user cannot act on stay off the terminal at the default
log level, in our process and in spawned children (vLLM's engine core), and show with info."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

NOISE = {
    "vllm": "Triton is installed, but doesn't include CPU backend",
    "bitsandbytes": "Failed to load CPU gemm_4bit_forward from kernels-community",
    "warnings": "FutureWarning: a library's deprecation notice",
}

SCRIPT = textwrap.dedent('''
    import logging, multiprocessing, sys, warnings
    from loramux.adapters.logs import configure_logging  # as the `loramux` script imports it


    def child():
        import vllm.triton_utils.importing  # logs the Triton note while importing, before vLLM's log setup


    if __name__ == "__main__":
        configure_logging(sys.argv[1])
        import vllm.triton_utils.importing
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: no kernels")
        warnings.warn("a library's deprecation notice", FutureWarning)
        logging.getLogger("loramux.server").warning("adapter acme/x: a warning a user can act on")
        p = multiprocessing.get_context("spawn").Process(target=child)
        p.start(); p.join()
        sys.exit(p.exitcode)
''')


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("quiet") / "start.py"
    path.write_text(SCRIPT)
    return path


def _stderr(script: Path, level: str) -> str:
    done = subprocess.run([sys.executable, str(script), level], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith(("VLLM_LOGGING", "TORCH_CPP", "LORAMUX_QUIET", "PYTHONWARN"))})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_default_level_keeps_library_notes_off_the_terminal(script: Path):
    err = _stderr(script, "warning")
    for source, line in NOISE.items():
        assert line not in err, f"{source} noise at the default level:\n{err}"
    assert "a warning a user can act on" in err  # our own warnings still show


def test_info_level_shows_them_in_the_process_and_its_children(script: Path):
    err = _stderr(script, "info")
    for source, line in NOISE.items():
        assert line in err, f"{source} note hidden at info:\n{err}"
    assert err.count(NOISE["vllm"]) >= 2, err  # once here, once from the spawned child
