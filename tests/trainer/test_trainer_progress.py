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


def _evaluations(points: list[tuple[float, float]]) -> list[bool]:
    """should_training_stop after each (exact_match, loss) evaluation, with the run's objective and patience 3."""
    from transformers import TrainerControl

    from loramux.trainer.evalloop import LOSS_WEIGHT, MIN_GAIN, EarlyStopping

    cb, control = EarlyStopping(3, MIN_GAIN, "exact_match"), TrainerControl()
    args, state, stops = SimpleNamespace(greater_is_better=True, metric_for_best_model="eval_objective"), \
        SimpleNamespace(best_metric=None), []
    for em, loss in points:
        objective = em - LOSS_WEIGHT * loss
        cb.on_evaluate(args, state, control, {"eval_exact_match": em, "eval_objective": objective})
        state.best_metric = max(objective, state.best_metric or -1e9)  # as the Trainer does after callbacks
        stops.append(control.should_training_stop)
    return stops


def test_two_perfect_evaluations_in_a_row_end_the_run_even_while_the_loss_still_drops():
    assert _evaluations([(0.3, 1.7), (1.0, 0.81), (1.0, 0.80)]) == [False, False, True]
    assert _evaluations([(1.0, 0.9), (0.97, 0.8), (1.0, 0.7), (0.97, 0.6)]) == [False] * 4  # not in a row
    # a flat 0% still improves through the loss, so patience lasts until the metric can rise
    assert _evaluations([(0.0, 3.0), (0.0, 2.5), (0.0, 2.0), (0.0, 1.5), (0.0, 1.5)]) == [False] * 5
    assert _evaluations([(0.5, 2.0)] * 4) == [False, False, False, True]  # plain patience is kept
