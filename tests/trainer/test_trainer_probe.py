"""The general-ability probe: the shipped set, its score on the real base, a broken adapter, the tiny base
(skipped), the gate's report (metrics, printout, manifest), and the general-mix data and option."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest

from loramux.trainer import general_mix, probe
from loramux.trainer.config import ConfigError, build_config


def test_the_shipped_probe_parses_and_has_fifty_answered_items():
    items = probe.load_probe()
    meta = probe.probe_meta()
    assert len(items) >= 50 and meta["items"] == len(items) and meta["base_score"] == 1.0
    assert len({i.id for i in items}) == len(items) and len({i.question for i in items}) == len(items)
    for i in items:
        assert i.accept and i.answer and i.passes(i.answer), i  # the base's own answer is right
        # an answer that only echoes the question never counts
        assert not i.passes(i.question), i
    assert len({i.kind for i in items}) >= 5  # capitals, arithmetic, science, instructions, ...


def test_general_mix_rows_are_other_questions_than_the_probe():
    rows = general_mix.general_conversations()
    assert len(rows) >= 80
    assert all([m["role"] for m in r] == ["user", "assistant"] and r[1]["content"].strip() for r in rows)
    asked = {r[0]["content"].strip().lower() for r in rows}
    assert not asked & {i.question.strip().lower() for i in probe.load_probe()}


def test_general_mix_count_and_cycling():
    assert general_mix.mix_count(100, 0.0) == 0 and general_mix.mix_count(75, 0.25) == 25
    assert general_mix.mix_count(100, 0.5) == 100
    with pytest.raises(ValueError):
        general_mix.mix_count(10, 1.0)
    pool = len(general_mix.general_conversations())
    many = general_mix.general_examples(pool, 0.75, seed=1)  # 3x the pool: cycled, not cut short
    assert len(many) == 3 * pool
    assert general_mix.general_examples(pool, 0.75, seed=1) == many  # seeded
    task = general_mix.general_examples(30, 0.0)
    assert general_mix.mix_into(task, 0.0) is task
    mixed = general_mix.mix_into([*general_mix.general_examples(30, 0.5, seed=2)], 0.5, seed=3)
    assert len(mixed) == 60


def test_recipe_option_general_mix():
    assert build_config({}).data.general_mix == 0.0
    assert build_config({}, ["data.general_mix=0.25"]).data.general_mix == 0.25
    with pytest.raises(ConfigError) as e:
        build_config({}, ["data.general_mix=1.0"])
    assert "data.general_mix" in e.value.message


def test_a_run_trains_on_the_mix_and_gates_on_the_tenants_own_eval(tmp_path):
    from loramux.trainer.data import write_jsonl
    from loramux.trainer.train import training_splits

    rows = [{"prompt": f"route ticket {i}", "completion": f"queue {i % 3}"} for i in range(30)]
    held = rows[:6]
    data = [f"data.train={write_jsonl(tmp_path / 'train.jsonl', rows)}",
            f"data.eval={write_jsonl(tmp_path / 'eval.jsonl', held)}"]
    plain = training_splits(build_config({}, data))
    mixed = training_splits(build_config({}, [*data, "data.general_mix=0.25"]))
    assert len(plain.train) == 30 and len(mixed.train) == 40  # 10 general rows are a quarter of 40
    assert mixed.eval == plain.eval and mixed.data_hash == plain.data_hash
    general = {c[0]["content"] for c in general_mix.general_conversations()}
    assert sum(e.messages[0]["content"] in general for e in mixed.train) == 10


def test_probe_line_formats_scores_skips_and_nothing():
    m = probe.ProbeReport(1.0, 0.94, 50, None, [{"question": "q", "answer": "a"}] * 3).metrics()
    assert probe.probe_line(m) == "0.940 (base 1.000, change -0.060, 3 of 50 wrong)"
    skipped = probe.ProbeReport.of(probe.ProbeResult(0.0, [{"ok": False}] * 50), None).metrics()
    assert skipped["general_probe"] is None and probe.probe_line(skipped).startswith("skipped: the base scores 0.00")
    assert probe.probe_line({}) is None


def test_tiny_base_probe_is_skipped_without_loading_the_adapter(tiny_base, tmp_path):
    """The tiny base knows no facts: the probe says so instead of reporting 0 vs 0 as 'no forgetting'."""
    report = probe.probe_run(tiny_base, tmp_path / "no-adapter-here")  # never loaded: the base was skipped
    assert report.skipped and report.score is None and report.base_score < probe.MIN_BASE_SCORE
    assert "no general ability" in report.line()


# --- the real base ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2(smollm2_base):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_base)
    model = AutoModelForCausalLM.from_pretrained(smollm2_base, dtype=torch.float32).eval()
    return model, tokenizer


def test_the_real_base_answers_the_probe(smollm2):
    model, tokenizer = smollm2
    t0 = time.perf_counter()
    result = probe.general_probe(model, tokenizer)
    took = time.perf_counter() - t0
    assert result.score >= 0.95, result.wrong()
    print(f"base probe: {result.score:.3f} on {result.n} questions in {took:.1f} s")


def _broken_adapter(model, out, scale: float):
    """A LoRA with large random B (and A): the base's knowledge drowned in noise."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, scale)
    peft.save_pretrained(out)
    peft.unload()  # the shared model loses its LoRA layers again
    return out


def test_a_broken_adapter_scores_lower(smollm2, tmp_path):
    from peft import PeftModel

    model, tokenizer = smollm2
    items = probe.load_probe()
    adapter = _broken_adapter(model, tmp_path / "broken", scale=4.0)  # far past any CPU's rounding
    tuned = PeftModel.from_pretrained(model, adapter).eval()
    try:
        broken = probe.general_probe(tuned, tokenizer, items)
        broken_loss = probe.probe_loss(tuned, tokenizer, items[:16])
    finally:
        tuned.unload()
    assert broken.score <= 0.5, broken.answers[:3]
    assert broken_loss > probe.probe_loss(model, tokenizer, items[:16]) + 1.0


def test_add_tenant_reports_and_records_the_probe(smollm2_base, tmp_path, monkeypatch):
    """The gate's numbers: metrics (and metrics.json), the printed summary, the manifest's eval scores; a
    `max_general_drop` gate refuses an adapter that forgot. Training is stubbed (a prepared adapter): the
    probe, the gate and publishing are real."""
    import torch
    from rich.console import Console
    from transformers import AutoModelForCausalLM

    from loramux.trainer import cli, tenant
    from loramux.trainer.train import TrainResult

    base = tmp_path / "base"
    shutil.copytree(smollm2_base, base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    run = tmp_path / "run"
    _broken_adapter(model, run / "adapter", scale=4.0)
    del model
    items = probe.load_probe()[:10]  # ten questions keep this wiring test short; the probe is tested above
    monkeypatch.setattr(probe, "load_probe", lambda path=probe.GENERAL_PROBE: items)
    metrics = {"score": 0.9, "base_score": 0.1, "metric": "exact_match", "eval_loss": 0.5, "forgetting": 0.1,
               "eval_examples": 20, "data_hash": "sha256:" + "0" * 64, "tokens_per_s": 1.0,
               "peak_memory_mb": 1.0, "wall_time_s": 1.0, "trainable_params": 1, "trainable_pct": 0.1}
    monkeypatch.setattr(tenant, "train", lambda cfg, **kw: TrainResult(run, run / "adapter", dict(metrics)))
    cfg = build_config({"base": str(base), "output_dir": str(run)})

    with pytest.raises(tenant.GateFailed) as e:
        tenant.add_tenant(cfg, tenant="acme", name="forgot", store=str(tmp_path / "store"),
                          gate=tenant.Gate(max_general_drop=0.0))
    assert "general probe" in e.value.message and e.value.metrics["general_probe"] < 1.0

    done = tenant.add_tenant(cfg, tenant="acme", name="kept", store=str(tmp_path / "store"))
    m = done.metrics
    assert m["base_general_probe"] == 1.0 and m["general_probe"] < 1.0 and m["general_probe_n"] == 10
    assert m["general_probe_change"] == pytest.approx(m["general_probe"] - 1.0)
    assert len(m["general_probe_wrong"]) == round((1 - m["general_probe"]) * 10)
    assert json.loads((run / "metrics.json").read_text())["general_probe"] == m["general_probe"]
    scores = done.manifest.eval_scores
    assert scores["general_probe"] == m["general_probe"] and scores["base_general_probe"] == 1.0
    console = Console(record=True, width=200)
    console.print(cli._summary(m))
    assert re.search(r"general probe\s+0\.\d{3} \(base 1\.000, change -[01]\.\d{3}, \d+ of 10 wrong\)",
                     console.export_text())
