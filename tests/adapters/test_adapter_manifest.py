"""Content addressing and base fingerprints."""

from __future__ import annotations

import json
import shutil

import pytest

from loramux.adapters.base_spec import BaseSpec, tokenizer_hash
from loramux.adapters.errors import InvalidRequest
from loramux.adapters.manifest import Manifest, content_hash
from loramux.adapters.peft_format import CONFIG_FILE, WEIGHTS_FILE


def test_the_version_depends_on_the_bytes_only(adapter_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(adapter_dir, copy)
    (copy / "README.md").write_text("a model card is not part of the version")
    assert content_hash(copy) == content_hash(adapter_dir)
    data = bytearray((copy / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 1
    (copy / WEIGHTS_FILE).write_bytes(bytes(data))
    assert content_hash(copy) != content_hash(adapter_dir)


def test_the_manifest_describes_the_adapter(make_adapter, base_spec):
    path = make_adapter(r=4, lora_alpha=8, target_modules=["v_proj", "q_proj", "down_proj"])
    m = Manifest.create(path, tenant="acme", name="support", base=base_spec, method="qlora",
                        data_hash="sha256:abc", eval_scores={"exact_match": 1.0})
    assert (m.rank, m.alpha, m.target_modules) == (4, 8.0, ["down_proj", "q_proj", "v_proj"])
    assert (m.base_model, m.base_fingerprint) == ("tiny", base_spec.fingerprint)
    assert m.version == content_hash(path)
    assert m.served_name == f"acme/support@{m.version[:12]}"
    assert Manifest.model_validate_json(m.to_json()) == m


def test_a_manifest_needs_a_readable_adapter_config(tmp_path, base_spec):
    (tmp_path / CONFIG_FILE).write_text("not json")
    with pytest.raises(InvalidRequest):
        Manifest.create(tmp_path, tenant="acme", name="support", base=base_spec)


def test_the_base_fingerprint_follows_the_model_not_the_library(tiny_base, base_spec, tmp_path):
    config = json.loads((tiny_base / "config.json").read_text())
    identity = json.loads((tiny_base / "loramux_base.json").read_text())
    tok, template = tokenizer_hash(tiny_base), base_spec.chat_template
    relabelled = {**config, "transformers_version": "9.9.9", "_name_or_path": "/elsewhere", "dtype": "bfloat16"}
    assert BaseSpec.from_config(relabelled, "tiny", identity, tok, template).fingerprint == base_spec.fingerprint
    wider = {**config, "intermediate_size": 1024}
    assert BaseSpec.from_config(wider, "tiny", identity, tok, template).fingerprint != base_spec.fingerprint
    other_seed = {**identity, "seed": identity["seed"] + 1}  # same shape, different weights
    assert BaseSpec.from_config(config, "tiny", other_seed, tok, template).fingerprint != base_spec.fingerprint


def test_base_spec_reads_shapes_and_quantization(tiny_base, base_spec):
    assert base_spec.shape.linears()["k_proj"] == (256, 128)  # 2 kv heads of 64
    assert base_spec.quantization is None
    config = json.loads((tiny_base / "config.json").read_text())
    quantized = {**config, "quantization_config": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}}
    spec = BaseSpec.from_config(quantized, "tiny")
    assert spec.quantization == "nf4"
    assert spec.fingerprint == BaseSpec.from_config(config, "tiny").fingerprint  # quantization is not identity
    with pytest.raises(InvalidRequest):
        BaseSpec.from_dir(tiny_base / "nowhere")


def test_the_manifest_records_dtype_quantization_and_the_loramux_version(make_adapter, base_spec):
    from importlib.metadata import version

    path = make_adapter()
    m = Manifest.create(path, tenant="acme", name="support", base=base_spec, method="qlora",
                        quantization={"quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"})
    assert (m.dtype, m.loramux_version, m.schema_version) == ("float32", version("loramux"), 2)
    assert m.quantization.model_dump() == {"bits": 4, "quant_type": "nf4", "double_quant": True,
                                           "compute_dtype": "bfloat16"}
    assert Manifest.create(path, tenant="acme", name="support", base=base_spec, method="qlora").quantization.bits == 4
    assert Manifest.create(path, tenant="acme", name="support", base=base_spec).quantization is None
    with pytest.raises(InvalidRequest):
        Manifest.create(path, tenant="acme", name="support", base=base_spec, quantization={"bits": 4})
    for field in ("tenant", "name", "base_model", "base_fingerprint", "method", "rank", "alpha", "target_modules",
                  "dtype", "data_hash", "eval_scores", "created_at", "loramux_version", "quantization"):
        assert field in json.loads(m.to_json())


def test_the_base_fingerprint_covers_the_tokenizer(tiny_base, base_spec, tmp_path):
    copy = tmp_path / "base"
    shutil.copytree(tiny_base, copy)
    assert BaseSpec.from_dir(copy, "tiny").fingerprint == base_spec.fingerprint
    (copy / "tokenizer.json").write_text((copy / "tokenizer.json").read_text().replace("<|end|>", "<|eot|>"))
    changed = BaseSpec.from_dir(copy, "tiny")
    assert changed.fingerprint != base_spec.fingerprint
    assert changed.config_fingerprint == base_spec.config_fingerprint  # same config.json


def test_the_base_fingerprint_covers_the_chat_template(tiny_base, base_spec, tmp_path):
    copy = tmp_path / "base"
    shutil.copytree(tiny_base, copy, ignore=shutil.ignore_patterns("*.safetensors"))
    jinja = copy / "chat_template.jinja"
    jinja.write_text(jinja.read_text().replace("<|end|>", "</s>"))
    changed = BaseSpec.from_dir(copy, "tiny")
    assert changed.fingerprint != base_spec.fingerprint and changed.chat_template != base_spec.chat_template
    assert changed.files_fingerprint == base_spec.files_fingerprint  # same config, identity and tokenizer files
    # a manifest's fingerprint still names the weights when its own template hash comes along
    assert changed.matches(base_spec.fingerprint, base_spec.chat_template) and not changed.matches(base_spec.fingerprint)
    assert base_spec.matches(base_spec.files_fingerprint)  # recorded before the template joined the fingerprint


def test_a_schema_1_manifest_still_loads_and_matches_its_base(adapter_dir, base_spec):
    from loramux.adapters.validation import validate_adapter

    old = {"schema_version": 1, "tenant": "acme", "name": "support", "version": content_hash(adapter_dir),
           "base_model": "tiny", "base_fingerprint": base_spec.config_fingerprint, "method": "lora", "rank": 8,
           "alpha": 16.0, "target_modules": ["q_proj", "v_proj"], "data_hash": None, "eval_scores": {},
           "created_at": "2025-01-01T00:00:00Z"}
    m = Manifest.model_validate_json(json.dumps(old))
    assert (m.dtype, m.loramux_version, m.quantization) == (None, None, None)
    assert validate_adapter(adapter_dir, base=base_spec, manifest=m).problems == []
