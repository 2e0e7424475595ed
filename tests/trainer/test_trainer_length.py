"""The run's length follows the data: small sets repeat to ~3,000 examples, large ones get 3 epochs."""

from __future__ import annotations

import pytest

from tasks import make_task


def test_epochs_rule():
    from loramux.trainer.defaults import auto_epochs

    assert auto_epochs(240, 3000) == 13
    assert auto_epochs(3000, 3000) == 3 and auto_epochs(100_000, 3000) == 3
    assert auto_epochs(20, 3000) == 25  # capped


@pytest.mark.parametrize("n_train", [240, 3000])
def test_a_run_plans_its_steps_and_tokens_from_the_data(tiny_base, tmp_path, n_train):
    from loramux.trainer.config import load_config, recipe_path
    from loramux.trainer.data import write_jsonl
    from loramux.trainer.train import planned_length

    rows, held = make_task("intents", n_train=n_train, n_eval=20)
    cfg = load_config(recipe_path("lora"), [f"base={tiny_base}", f"data.train={write_jsonl(tmp_path / 't.jsonl', rows)}",
                                            f"data.eval={write_jsonl(tmp_path / 'e.jsonl', held)}",
                                            f"output_dir={tmp_path / 'run'}", "training.threads=1"])
    length = planned_length(cfg)
    assert length.epochs == (13 if n_train == 240 else 3)
    assert length.steps == length.epochs * length.steps_per_epoch
    # packing: several ~50-token examples per 256-token sequence
    assert n_train / 8 < length.sequences < n_train / 3
    assert length.eval_every == -(-length.steps // 10)
    override = planned_length(cfg.model_copy(update={"training": cfg.training.model_copy(update={"max_steps": 7})}))
    assert override.steps == 7


def test_evaluating_once_per_run_means_at_the_end():
    from loramux.trainer.config import load_config, recipe_path
    from loramux.trainer.evalloop import eval_schedule

    cfg = load_config(recipe_path("lora"), ["training.evals_per_run=1"])
    every = eval_schedule(cfg)["eval_steps"]
    assert 0.99 < every < 1  # a ratio of the run, not "every step"
    assert eval_schedule(load_config(recipe_path("lora"), ["training.save_steps=10"]))["eval_steps"] == 10
