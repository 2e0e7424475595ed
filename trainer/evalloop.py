"""Evaluation while training and the run's length, on top of transformers' own machinery.

The Trainer evaluates held-out loss every `eval_steps` (eval_strategy="steps"), keeps the best
checkpoint (load_best_model_at_end) and stops early (EarlyStoppingCallback). `SampledMetric`
adds the task metric on a small held-out sample to those evaluations, and the objective they
rank checkpoints by: the metric first, held-out loss breaking ties (a flat 0% early in a run
still improves through the loss, so patience does not run out before the metric can rise);
`EarlyStopping` also ends a run whose metric is perfect twice in a row.
`RunLength` says up front how many steps and tokens the run will do, then how long it will take;
`TimeBudget` ends a run at `training.max_minutes` the way early stopping would.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

from rich.console import Console
from transformers import EarlyStoppingCallback, TrainerCallback

from loramux.trainer.config import TrainConfig
from loramux.trainer.data import Example

OBJECTIVE = "objective"
"""Key (eval_objective) the best checkpoint and early stopping are decided by."""
LOSS_WEIGHT = 1e-3
"""Loss's weight in the objective: below one example's share of any sample of <= 200, so it only breaks ties."""
MIN_GAIN = 0.01 * LOSS_WEIGHT
"""An evaluation counts as better (early stopping) when the metric rises or the loss drops by 0.01 nats."""
CEILING = 1.0
"""Best possible sampled metric: every metric in evaluate.METRICS scores each example 0 or 1."""


def eval_schedule(cfg: TrainConfig) -> dict:
    """SFTConfig fields for evaluation, checkpointing and best-checkpoint selection."""
    t = cfg.training
    # < 1: a ratio of the run's steps (transformers reads 1.0 as one step, so once per run is 0.999999)
    every = t.eval_steps or t.save_steps or min(1.0 / t.evals_per_run, 0.999999)
    save = t.save_steps or every
    out = {"eval_strategy": "steps", "eval_steps": every, "save_strategy": "steps", "save_steps": save,
           "load_best_model_at_end": t.load_best}
    if t.load_best or t.early_stopping_patience:
        sampled = cfg.eval.sample_size > 0
        out |= {"metric_for_best_model": f"eval_{OBJECTIVE}" if sampled else "eval_loss",
                "greater_is_better": sampled}
    return out


class SampledMetric(TrainerCallback):
    """At each evaluation, greedy-generate `examples` with the training model and score them."""

    def __init__(self, tokenizer, examples: list[Example], metric: str, batch_size: int,
                 max_new_tokens: int | None) -> None:
        self.tokenizer, self.examples, self.metric = tokenizer, examples, metric
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        import torch

        from loramux.trainer import evaluate as ev

        if not self.examples or metrics is None or model is None:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            s = ev.score(model, self.tokenizer, self.examples, metric=self.metric, batch_size=self.batch_size,
                         max_new_tokens=self.max_new_tokens)[self.metric]
        model.train(was_training)
        added = {f"eval_{self.metric}": s, f"eval_{OBJECTIVE}": s - LOSS_WEIGHT * metrics.get("eval_loss", 0.0)}
        metrics.update(added)
        if state.log_history and "eval_loss" in state.log_history[-1]:
            state.log_history[-1].update(added)  # the Trainer logged before callbacks ran


class EarlyStopping(EarlyStoppingCallback):
    """transformers' early stopping, and a stop at the second evaluation in a row with a perfect metric.

    At the ceiling only the loss's tie-break can still improve the objective, and the loss keeps
    creeping down by a few hundredths of a nat, so patience ran on for nothing the metric could show:
    on the test tasks, 30-60% of each run's steps came after its first perfect evaluation. The second
    perfect evaluation confirms the first; the best checkpoint is still picked by the objective."""

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0,
                 metric: str = "exact_match") -> None:
        super().__init__(early_stopping_patience, early_stopping_threshold)
        self.metric, self.perfect_in_a_row = metric, 0

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        super().on_evaluate(args, state, control, metrics, **kwargs)
        self.perfect_in_a_row = self.perfect_in_a_row + 1 if metrics.get(f"eval_{self.metric}") == CEILING else 0
        if self.perfect_in_a_row >= 2:
            control.should_training_stop = True

    def state(self) -> dict:
        out = super().state()
        out["args"]["metric"] = self.metric
        out["attributes"]["perfect_in_a_row"] = self.perfect_in_a_row
        return out


@dataclass
class Length:
    """How long a run will be, known once the data is tokenized and packed."""

    steps: int
    epochs: float
    steps_per_epoch: int
    sequences: int
    tokens: int
    """Training tokens the run will see (non-padding)."""
    eval_every: int

    def line(self) -> str:
        return (f"plan: {self.steps} steps ({self.epochs:.2g} epochs of {self.steps_per_epoch} steps, "
                f"{self.sequences} sequences), ~{self.tokens:,} tokens; evaluating every {self.eval_every} steps")


def run_length(trainer, cfg: TrainConfig) -> Length:
    """Steps and tokens from the packed training set, as the Trainer will count them."""
    t = cfg.training
    ds = trainer.train_dataset
    per_step = t.batch_size * t.grad_accum
    sequences = len(ds)
    per_epoch = max(1, math.ceil(sequences / per_step))
    tokens_epoch = sum(len(ids) for ids in ds["input_ids"])
    steps = t.max_steps or math.ceil(t.epochs * per_epoch)
    every = trainer.args.eval_steps
    every = every if every >= 1 else max(1, math.ceil(every * steps))
    return Length(steps=steps, epochs=steps / per_epoch, steps_per_epoch=per_epoch, sequences=sequences,
                  tokens=round(tokens_epoch * steps / per_epoch), eval_every=int(every))


class RunLength(TrainerCallback):
    """Prints the plan at the start and, once a few steps are measured, about how long the run takes."""

    def __init__(self, length: Length, console: Console | None, measure_steps: int = 20,
                 budget_minutes: float | None = None) -> None:
        self.length, self.console, self.measure_steps = length, console or Console(stderr=True), measure_steps
        self.budget_minutes = budget_minutes
        self.t0, self.step0, self.estimate_s = 0.0, 0, None

    def on_train_begin(self, args, state, control, **kwargs):
        budget = f"; stopping after {self.budget_minutes:g} min at most" if self.budget_minutes else ""
        self.console.print(self.length.line() + budget, highlight=False, soft_wrap=True)
        self.t0, self.step0 = time.perf_counter(), state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        done = state.global_step - self.step0
        if self.estimate_s is None and done >= min(self.measure_steps, state.max_steps - self.step0):
            per_step = (time.perf_counter() - self.t0) / max(done, 1)
            self.estimate_s = per_step * (state.max_steps - self.step0)
            capped = self.budget_minutes and self.estimate_s > 60 * self.budget_minutes
            self.console.print(f"plan: about {_duration(self.estimate_s)} for {state.max_steps - self.step0} steps "
                               + ("(the time budget stops it sooner)" if capped else "(less if it stops early)"),
                               highlight=False, soft_wrap=True)

    def record(self) -> dict:
        return {**asdict(self.length), "estimated_s": self.estimate_s}


class TimeBudget(TrainerCallback):
    """`training.max_minutes`: past the budget, evaluate, save and stop, so the best checkpoint is still chosen."""

    def __init__(self, minutes: float) -> None:
        self.seconds, self.t0 = 60 * minutes, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.t0 >= self.seconds:
            control.should_evaluate = control.should_save = control.should_training_stop = True


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
