"""Logging for every loramux command: JSON lines on stderr, and the libraries' start-up chatter
kept off the terminal at the default level.

What is silenced is what a user cannot act on: vLLM's platform notes ("Triton is installed, but
doesn't include CPU backend"), bitsandbytes' optional-kernel notice, FutureWarnings from
libraries, torch's C++ NUMA-binding warning, and weight-loading progress bars. Child processes
(vLLM's engine core) inherit it through the environment. vLLM logs some of it while importing,
before it configures its loggers, so a spawned child would print it through Python's last-resort
handler: importing this module in the child (multiprocessing re-runs the `loramux` script there)
applies `LORAMUX_QUIET` first. `--log-level info` (or debug) leaves all of it on.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Environment read by the libraries themselves (also in spawned processes), at the default level.
QUIET_ENV = {
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TORCH_CPP_LOG_LEVEL": "ERROR",  # c10's "[W... NUMA binding" and friends
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Writing model shards" and hub bars
    "TRANSFORMERS_VERBOSITY": "error",
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
    "LORAMUX_QUIET": "1",
}
# Python loggers of libraries that note platform facts or optional extras we do not need.
QUIET_LOGGERS = ("vllm", "bitsandbytes", "torchao", "datasets")
# What `--log-level` accepts in every command.
LEVELS = ("debug", "info", "warning", "error")


def _quiet_loggers() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def configure_logging(level: str = "warning") -> bool:
    """JSON records at `level` on stderr; below warning nothing is silenced. Returns whether quiet."""
    from pythonjsonlogger.json import JsonFormatter

    quiet = logging.getLevelName(level.upper()) >= logging.WARNING
    handler = logging.StreamHandler(sys.stderr)  # one JSON object per line, for log pipelines
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)
    if quiet:
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        _quiet_loggers()
    else:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", level.upper())
    return quiet


if os.environ.get("LORAMUX_QUIET") == "1":  # a child process of a quiet loramux command
    _quiet_loggers()
