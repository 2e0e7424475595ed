"""Recipes: every shipped YAML loads; overrides apply; every problem is reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from loramux.trainer.config import RECIPES_DIR, ConfigError, TrainConfig, load_config

RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))


def test_recipes_exist_for_every_method():
    methods = {load_config(p).method for p in RECIPES}
    assert {"lora", "qlora", "full"} <= methods


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_loads(recipe: Path):
    cfg = load_config(recipe, ["base=/some/base", "data.train=/some/train.jsonl"])
    assert isinstance(cfg, TrainConfig)
    assert cfg.base == Path("/some/base")
    if cfg.method != "full":
        assert cfg.lora.targets()


def test_overrides_are_typed_and_nested(tmp_path):
    cfg = load_config(RECIPES_DIR / "lora.yaml", ["lora.r=16", "lora.target_modules=[q_proj, v_proj]",
                                                  "training.learning_rate=1e-4", "training.packing=false"])
    assert cfg.lora.r == 16 and cfg.lora.targets() == ["q_proj", "v_proj"]
    assert cfg.training.learning_rate == 1e-4 and cfg.training.packing is False
    assert load_config(RECIPES_DIR / "lora.yaml", ["lora.target_modules=attention"]).lora.targets() == [
        "q_proj", "k_proj", "v_proj", "o_proj"]


def test_all_config_problems_are_reported_together(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: sgd\nlora:\n  r: 0\n  rank: 8\ntraining:\n  max_steps: -1\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad, ["lora.target_modules=everything", "nonsense"])
    msg = e.value.message
    assert str(bad) in msg
    for needle in ("method", "lora.r", "lora.rank", "training.max_steps", "nonsense"):
        assert needle in msg, msg
    assert len(e.value.problems) >= 5


def test_unknown_target_set_is_refused():
    with pytest.raises(ConfigError, match="target_modules"):
        load_config(RECIPES_DIR / "lora.yaml", ["lora.target_modules=everything"])


def test_shipped_lora_recipes_leave_length_rate_and_rank_to_the_rules():
    from loramux.trainer.defaults import resolve

    for name in ("lora", "qlora"):
        cfg = load_config(RECIPES_DIR / f"{name}.yaml", ["base=/some/base"])
        t = cfg.training
        assert (t.epochs, t.max_steps, t.learning_rate, cfg.lora.r, cfg.lora.alpha) == (None, None, None, None, None)
        assert t.load_best and t.early_stopping_patience and cfg.eval.sample_size > 0
        tiny = resolve(cfg, n_train=240, params=5e6).training
        big = resolve(cfg, n_train=240, params=7e9)
        assert (tiny.learning_rate, tiny.epochs) == (3e-3, 13)
        assert (big.training.learning_rate, big.lora.r, big.lora.alpha) == (2e-4, 16, 32)
    full = resolve(load_config(RECIPES_DIR / "full.yaml", ["base=/some/base"]), n_train=5000, params=7e9)
    assert (full.training.learning_rate, full.training.epochs) == (1e-5, 3)


def test_explicit_values_win_over_the_rules():
    from loramux.trainer.defaults import resolve

    cfg = load_config(RECIPES_DIR / "lora.yaml", ["base=/b", "training.learning_rate=1e-4", "lora.r=4",
                                                  "training.epochs=2"])
    got = resolve(cfg, n_train=240, params=5e6)
    assert (got.training.learning_rate, got.lora.r, got.lora.alpha, got.training.epochs) == (1e-4, 4, 8, 2)


def test_new_flags_are_checked_with_every_other_problem():
    with pytest.raises(ConfigError) as e:
        load_config(RECIPES_DIR / "lora.yaml", ["lora.init=svd", "training.loraplus_lr_ratio=0",
                                                "training.neftune_noise_alpha=-1", "eval.sample_size=-1"])
    msg = e.value.message
    for needle in ("lora.init", "training.loraplus_lr_ratio", "training.neftune_noise_alpha", "eval.sample_size"):
        assert needle in msg, msg
    # a schedule the Trainer would refuse after loading the model is refused up front, with the rest
    with pytest.raises(ConfigError) as e:
        load_config(RECIPES_DIR / "lora.yaml", ["training.eval_steps=7", "training.save_steps=10", "lora.init=svd"])
    assert len(e.value.problems) == 2 and "save_steps 10 is not a multiple of eval_steps 7" in e.value.message


def test_lora_only_flags_are_refused_for_full_fine_tuning():
    with pytest.raises(ConfigError) as e:
        load_config(RECIPES_DIR / "full.yaml", ["lora.init=pissa", "lora.use_rslora=true",
                                                "training.loraplus_lr_ratio=16"])
    assert len(e.value.problems) == 3 and all("method full" in p for p in e.value.problems)


def test_a_metric_typo_fails_when_the_config_loads_not_after_training():
    from loramux.trainer.config import recipe_path

    with pytest.raises(ConfigError) as err:
        load_config(recipe_path("lora"), ["eval.metric=exact_mach", "training.seed=x"])
    assert "eval.metric" in str(err.value) and "exact_match" in str(err.value)
    assert "training.seed" in str(err.value)  # with every other problem
