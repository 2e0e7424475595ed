"""kill -9 mid-run, then --resume: the loss curve is the one an uninterrupted run draws."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from loramux.trainer.config import load_config, recipe_path
from loramux.trainer.train import latest_checkpoint, train

FAST = ["training.threads=1"]  # as in conftest.py: one thread is fastest on a busy small CPU

STEPS, EVERY = 60, 10


def _overrides(tiny_base, demo_data, out):
    train_file, held = demo_data["pirate"]
    return [f"base={tiny_base}", f"data.train={train_file}", f"data.eval={held}", f"output_dir={out}",
            f"training.max_steps={STEPS}", f"training.save_steps={EVERY}", "training.logging_steps=1",
            "training.save_total_limit=null", "data.max_eval_examples=4", "eval.sample_size=4",
            "training.early_stopping_patience=null", *FAST]


def test_resume_after_kill_9_gives_the_same_loss_curve(tiny_base, demo_data, tmp_path):
    killed = tmp_path / "killed"
    args = _overrides(tiny_base, demo_data, killed)
    proc = subprocess.Popen([sys.executable, "-m", "loramux.trainer.cli", "train", "--config",
                             str(recipe_path("lora")), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = killed / "checkpoints" / f"checkpoint-{2 * EVERY}" / "trainer_state.json"
    deadline = time.monotonic() + 240
    while not marker.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "metrics.json").exists()
    done_at = int(latest_checkpoint(killed).name.split("-")[1])
    assert 2 * EVERY <= done_at < STEPS

    resumed = train(load_config(recipe_path("lora"), args), resume=True, with_base=False).metrics
    assert resumed["resumed_from"] == f"checkpoint-{done_at}"
    reference = train(load_config(recipe_path("lora"), _overrides(tiny_base, demo_data, tmp_path / "ref")),
                      with_base=False).metrics

    got, want = resumed["loss_curve"], reference["loss_curve"]
    assert got["train_steps"] == want["train_steps"] == list(range(1, STEPS + 1))
    assert got["train_loss"] == pytest.approx(want["train_loss"], abs=1e-4)
    saved = json.loads((killed / "metrics.json").read_text())
    assert saved["steps"] == STEPS
