"""What a run shows: the plan up front, then about how long; the bar carries the latest evaluation."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from loramux.trainer.evalloop import Length, RunLength
from loramux.trainer.progress import RichProgress


def _console():
    buf = io.StringIO()
    return Console(file=buf, width=200, force_terminal=False), buf


def test_plan_is_printed_first_then_the_time_estimate():
    console, buf = _console()
    cb = RunLength(Length(steps=40, epochs=13, steps_per_epoch=3, sequences=3, tokens=9000, eval_every=4),
                   console, measure_steps=2)
    state = SimpleNamespace(global_step=0, max_steps=40)
    cb.on_train_begin(None, state, None)
    assert buf.getvalue().strip() == ("plan: 40 steps (13 epochs of 3 steps, 3 sequences), ~9,000 tokens; "
                                      "evaluating every 4 steps")
    for step in (1, 2, 3):
        state.global_step = step
        cb.on_step_end(None, state, None)
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("plan: about ") and "for 40 steps" in lines[1]
    assert cb.record()["steps"] == 40 and cb.record()["estimated_s"] >= 0


def test_progress_bar_shows_the_latest_evaluation():
    console, buf = _console()
    bar = RichProgress("lora run", console, metric="exact_match")
    state = SimpleNamespace(global_step=0, max_steps=10, num_input_tokens_seen=0)
    bar.on_train_begin(None, state, None)
    bar.on_evaluate(None, state, None, metrics={"eval_loss": 1.25, "eval_exact_match": 0.5})
    bar.on_evaluate(None, state, None, metrics={"eval_loss": 0.75, "eval_exact_match": 0.875})
    assert bar.progress.tasks[0].fields["score"] == "eval loss 0.750 exact_match 0.88"
    bar.on_train_end(None, state, None)
    assert "exact_match 0.88" in buf.getvalue()
