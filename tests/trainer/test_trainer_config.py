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
