"""What a run shows while it runs and leaves behind: a rich progress bar, a loss curve.

`RichProgress` is a TrainerCallback (transformers' own printing is switched off); tokens/s
comes from the Trainer's `num_input_tokens_seen`, counted over this session only so a
resumed run does not report the checkpoint's tokens as its own.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import TrainerCallback


class RichProgress(TrainerCallback):
    """Progress bar with step, loss, the latest evaluation's score, tokens/s and ETA."""

    def __init__(self, description: str = "training", console: Console | None = None,
                 metric: str = "exact_match") -> None:
        self.description = description
        self.metric = metric
        self.score = ""
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task = None
        self.loss = float("nan")
        self.t0 = 0.0
        self.tokens0 = 0
        self.tokens_per_s = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[score]}"),
            TextColumn("{task.fields[tps]:,.0f} tok/s"),
            TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=state.max_steps, completed=state.global_step,
                                           loss=float("nan"), tps=0.0, score=self.score)
        self.t0, self.tokens0 = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        dt = time.perf_counter() - self.t0
        if dt > 0:
            self.tokens_per_s = (state.num_input_tokens_seen - self.tokens0) / dt
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, loss=self.loss, tps=self.tokens_per_s)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        """Runs after SampledMetric (callbacks run in order), so the task metric is there."""
        if not metrics:
            return
        parts = [f"eval loss {metrics['eval_loss']:.3f}"] if "eval_loss" in metrics else []
        if f"eval_{self.metric}" in metrics:
            parts.append(f"{self.metric} {metrics[f'eval_{self.metric}']:.2f}")
        self.score = " ".join(parts)
        if self.progress is not None:
            self.progress.update(self.task, score=self.score)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, loss=self.loss, tps=self.tokens_per_s)
            self.progress.stop()
            self.progress = None


def loss_curve(log_history: list[dict]) -> dict[str, list]:
    """Train and eval loss points from the Trainer's log history (survives resumes)."""
    train = [(e["step"], float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], float(e["eval_loss"])) for e in log_history if "eval_loss" in e]
    return {"train_steps": [s for s, _ in train], "train_loss": [v for _, v in train],
            "eval_steps": [s for s, _ in evals], "eval_loss": [v for _, v in evals]}


def eval_curve(log_history: list[dict]) -> list[dict]:
    """Every evaluation during training: step, held-out loss and whatever task metric it logged."""
    return [{k: v for k, v in e.items() if k == "step" or (k.startswith("eval_") and not k.endswith(
        ("_runtime", "_per_second")))} for e in log_history if "eval_loss" in e]


def plot_loss(curve: dict[str, list], out: Path, title: str) -> Path:
    """Write the loss curve as a PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(curve["train_steps"], curve["train_loss"], label="train loss")
    if curve["eval_steps"]:
        ax.plot(curve["eval_steps"], curve["eval_loss"], "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
