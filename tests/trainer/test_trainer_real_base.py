"""Training on the real base (SmolLM2-135M-Instruct): a short LoRA run moves the loss and the held-out score.

The full proof (three tasks x LoRA and QLoRA with the default length, >= 95% each) takes minutes per
run on 2 cores, so it is a benchmark (tests/bench/bench_real_base_tasks.py, docs/bench/real_base_tasks.md);
this is the part that fits CI: the recipe's rate and rank for this base, its ChatML template and
default system prompt, prompt/completion rows, a fixed number of steps.
"""

from __future__ import annotations

import pytest

from real_tasks import make_real_task

STEPS = 30


@pytest.fixture(scope="module")
def short_run(smollm2_base, tmp_path_factory):
    from loramux.trainer.config import load_config, recipe_path
    from loramux.trainer.data import write_jsonl
    from loramux.trainer.train import train

    root = tmp_path_factory.mktemp("real-base-run")
    rows, held = make_real_task("extract", n_train=300, n_eval=16)
    cfg = load_config(recipe_path("lora"), [
        f"base={smollm2_base}", f"data.train={write_jsonl(root / 'train.jsonl', rows)}",
        f"data.eval={write_jsonl(root / 'eval.jsonl', held)}", f"output_dir={root / 'run'}",
        f"training.max_steps={STEPS}", "training.logging_steps=5",
        "training.evals_per_run=1", "training.early_stopping_patience=null",
        "training.load_best=false", "eval.sample_size=0"])
    metrics = train(cfg, with_base=False).metrics  # the probe on this base: test_trainer_probe
    metrics["base_score"] = base_score(smollm2_base, root / "eval.jsonl")
    return metrics


def base_score(base, held) -> float:
    """The base's exact match on the held-out file, scored as the run scores its adapter."""
    from transformers import AutoTokenizer

    from loramux.trainer import evaluate as ev
    from loramux.trainer.data import read_jsonl

    return ev.score(ev.load_model(base), AutoTokenizer.from_pretrained(base), read_jsonl(held))["exact_match"]


def test_a_short_run_learns_the_task_from_the_base(short_run):
    from loramux.trainer.defaults import rule_for

    m = short_run
    assert m["learning_rate"] == rule_for(m["total_params"]).lora_lr and m["lora_r"] == 16
    first, last = m["loss_curve"]["train_loss"][0], m["loss_curve"]["train_loss"][-1]
    assert last < first / 2, m["loss_curve"]
    assert m["base_score"] == 0.0 and m["score"] >= 0.5, m["eval"]
