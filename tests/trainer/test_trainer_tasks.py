"""The DEFAULT recipes learn tasks they were not tuned on: >= 95% held-out exact match, base <= 5%.

Three generated tasks (tests/trainer/tasks.py) x LoRA and QLoRA, each trained once per session
(side by side: conftest.py's `pool`) with the shipped recipe and nothing but the data and threads
given: the run picks its own length (epochs from the data size), evaluates while training, stops
early and keeps the best checkpoint.
Each run also reports forgetting (general-text NLL change against the base) in metrics.json.
"""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from tasks import make_task

TASKS = ["intents", "multiturn", "middle"]
METHODS = ["lora", "qlora"]
N_TRAIN, N_EVAL = 240, 40

# One thread: on a small, busy CPU the tiny base trains ~5x faster than with torch's default.
FAST = ["training.threads=1"]


@pytest.fixture(scope="session")
def task_run(pool, tiny_base, tmp_path_factory):
    """(task, method) -> TrainResult; every run starts in `pool` on first use, the longest first (measured)."""
    from loramux.trainer.config import load_config, recipe_path
    from loramux.trainer.data import write_jsonl
    from loramux.trainer.train import train

    runs = {}
    for method, task in [(m, t) for m in ("qlora", "lora") for t in ("multiturn", "middle", "intents")]:
        root = tmp_path_factory.mktemp(f"{task}-{method}")
        rows, held = make_task(task, n_train=N_TRAIN, n_eval=N_EVAL)
        cfg = load_config(recipe_path(method), [
            f"base={tiny_base}", f"data.train={write_jsonl(root / 'train.jsonl', rows)}",
            f"data.eval={write_jsonl(root / 'eval.jsonl', held)}", f"output_dir={root / 'run'}", *FAST])
        runs[task, method] = pool.submit(train, cfg)
    return lambda task, method: runs[task, method].result()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task", TASKS)
def test_default_recipe_learns_a_task_it_was_not_tuned_on(task_run, task, method):
    m = task_run(task, method).metrics
    assert (m["train_examples"], m["eval_examples"]) == (N_TRAIN, N_EVAL)
    assert m["score"] >= 0.95, (m["evals"], m["eval"]["samples"])
    assert m["base_score"] <= 0.05
    # forgetting is measured and recorded for every run (how much worse the base's own text got)
    assert m["forgetting"] == pytest.approx(m["general_nll"] - m["base_general_nll"])
    print(f"\n{task} {method}: score {m['score']:.3f} base {m['base_score']:.3f} steps {m['steps']}/"
          f"{m['plan']['steps']} wall {m['wall_time_s']:.0f}s forgetting {m['forgetting']:+.2f} nats")


@pytest.mark.parametrize("task", TASKS)
def test_length_follows_the_data_and_the_plan_is_kept(task_run, task):
    m = task_run(task, "lora").metrics
    plan = m["plan"]
    # 240 rows are repeated until ~3,000 examples are seen: 13 epochs, not a fixed step count
    assert plan["epochs"] == 13 and plan["steps"] == 13 * plan["steps_per_epoch"]
    assert plan["tokens"] > 0 and plan["estimated_s"] > 0
    assert m["steps"] <= plan["steps"]  # early stopping may end it sooner, never later
    assert len(m["evals"]) >= 3 and all("eval_exact_match" in e for e in m["evals"][:-1])


def test_the_saved_adapter_is_the_best_evaluations_checkpoint(task_run):
    result = task_run("intents", "lora")
    m = result.metrics
    scores = [e["eval_objective"] for e in m["evals"][:-1]]  # the last entry is the final re-evaluation
    assert m["best_eval"]["eval_objective"] == max(scores)
    best = load_file(str(result.output_dir / "checkpoints" / m["best_checkpoint"] / "adapter_model.safetensors"))
    saved = load_file(str(result.artifact / "adapter_model.safetensors"))
    assert saved.keys() == best.keys() and all((saved[k] == best[k]).all() for k in saved)
    written = json.loads((result.output_dir / "metrics.json").read_text())
    assert written["best_checkpoint"] == m["best_checkpoint"] and written["evals"]
