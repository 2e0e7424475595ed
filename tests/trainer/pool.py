"""Side-by-side runs for the trainer tests' session fixtures (conftest.py's `pool`)."""

from __future__ import annotations

import multiprocessing
import os
import traceback
from concurrent.futures import Future, ProcessPoolExecutor


def _call(fn, *args, **kwargs):
    """`fn` in a pool process. Its exception comes back as a RuntimeError with the child's traceback:
    ours do not unpickle (GateFailed needs its metrics), and one that fails to breaks the whole pool."""
    try:
        return fn(*args, **kwargs)
    except Exception:
        raise RuntimeError(traceback.format_exc()) from None


class Pool:
    """One spawned process per core: every test run is single-threaded (training.threads=1), so one
    after the other they leave all cores but one idle. Spawned, as compare.py does: a forked child
    would inherit torch's thread state and the parent's monkeypatches."""

    def __init__(self) -> None:
        self.executor = ProcessPoolExecutor(len(os.sched_getaffinity(0)),
                                            mp_context=multiprocessing.get_context("spawn"))

    def submit(self, fn, *args, **kwargs) -> Future:
        return self.executor.submit(_call, fn, *args, **kwargs)

    def close(self) -> None:
        self.executor.shutdown(cancel_futures=True)
