"""The run's length follows the data and the base: small sets repeat to a base-size number of examples
(3,000 on the from-scratch tiny base), large ones get 3 epochs; a time budget ends a run early."""

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


def test_length_and_rate_follow_the_base_size_and_a_recipe_value_wins(tmp_path):
    """Bases trained from scratch (the tiny test base) need thousands of examples; pretrained ones far fewer."""
    from loramux.trainer.config import build_config
    from loramux.trainer.defaults import MIN_EXAMPLES_PRETRAINED, resolve

    cfg = build_config({"base": str(tmp_path), "output_dir": str(tmp_path / "run")})
    tiny, real = resolve(cfg, n_train=300, params=5e6), resolve(cfg, n_train=300, params=135e6)
    assert tiny.training.min_examples == 3000 and tiny.training.epochs == 10
    assert real.training.min_examples == MIN_EXAMPLES_PRETRAINED < 3000
    assert real.training.learning_rate < tiny.training.learning_rate
    own = build_config({"base": str(tmp_path), "output_dir": str(tmp_path / "run"),
                        "training": {"min_examples": 1500, "learning_rate": 1e-5}})
    mine = resolve(own, n_train=300, params=135e6)
    assert mine.training.epochs == 5 and mine.training.learning_rate == 1e-5


def test_a_time_budget_evaluates_saves_and_stops(tiny_base, tmp_path):
    """`training.max_minutes`: the run ends at the budget with an evaluation and the best checkpoint kept."""
    import json

    from loramux.trainer.config import load_config, recipe_path
    from loramux.trainer.data import write_jsonl
    from loramux.trainer.train import train

    rows, held = make_task("intents", n_train=240, n_eval=8)
    cfg = load_config(recipe_path("lora"), [
        f"base={tiny_base}", f"data.train={write_jsonl(tmp_path / 't.jsonl', rows)}",
        f"data.eval={write_jsonl(tmp_path / 'e.jsonl', held)}", f"output_dir={tmp_path / 'run'}",
        "training.threads=1", "training.max_steps=5000", "training.max_minutes=0.05", "eval.sample_size=4"])
    m = train(cfg, with_base=False).metrics
    assert 0 < m["steps"] < 5000 and m["wall_time_s"] < 60
    assert (tmp_path / "run" / "checkpoints" / f"checkpoint-{m['steps']}").is_dir()  # saved where it stopped
    assert m["best_checkpoint"] is not None and m["best_eval"] is not None
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training"]["max_minutes"] == 0.05
