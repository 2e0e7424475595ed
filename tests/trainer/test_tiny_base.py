"""The offline tiny base: reproducible bytes, loadable by transformers, a usable chat template."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from loramux.trainer.tiny_base import TinyBaseConfig, build_tiny


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path):
    small = TinyBaseConfig(num_hidden_layers=1)
    a = build_tiny(tmp_path / "a", seed=3, cfg=small, steps=3)
    b = build_tiny(tmp_path / "b", seed=3, cfg=small, steps=3)
    c = build_tiny(tmp_path / "c", seed=4, cfg=small, steps=3)
    files = sorted(p.name for p in a.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors
    assert not filecmp.cmp(a / "model.safetensors", c / "model.safetensors", shallow=False)


def test_cli_builds_the_base(tmp_path: Path):
    out = tmp_path / "base"
    r = subprocess.run([sys.executable, "-m", "loramux.cli", "base", "build-tiny", "--out", str(out),
                        "--seed", "1", "--steps", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and (out / "model.safetensors").is_file()


def test_transformers_loads_it_and_it_learnt_some_text(tiny_base: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tiny_base
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < n_params < 20_000_000
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|assistant|>\n") and "hi<|end|>" in chat
    ids = tok("The cat sees", return_tensors="pt").input_ids
    text = tok.decode(model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:])
    assert any(w in text.split() for w in ("the", "a", "every", "It")), text  # learnt the corpus a little
