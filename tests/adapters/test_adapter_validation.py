"""Validation: every problem of an adapter reported at once, before publish and before load."""

from __future__ import annotations

import json
import shutil

import pytest

from loramux.adapters.base_spec import BaseSpec, tokenizer_hash
from loramux.adapters.manifest import CONFIG_FILE, WEIGHTS_FILE
from loramux.adapters.validation import AdapterInvalid, validate_adapter


def edit_config(path, **changes):
    config = json.loads((path / CONFIG_FILE).read_text())
    (path / CONFIG_FILE).write_text(json.dumps({**config, **changes}))


@pytest.fixture
def copy_of(tmp_path):
    def copy(src):
        out = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(src, out)
        return out
    return copy


def checks(report):
    return sorted({p.check for p in report.problems})


def test_a_plain_lora_adapter_passes(adapter_dir, base_spec, manifest_for):
    report = validate_adapter(adapter_dir, base=base_spec, max_rank=16, manifest=manifest_for(adapter_dir))
    assert report.problems == []
    assert report.raise_for_errors() is report


def test_every_problem_is_reported_in_one_error(make_adapter, base_spec, copy_of):
    path = copy_of(make_adapter(r=32, lora_alpha=32, use_dora=True, modules_to_save=["lm_head"]))
    edit_config(path, target_modules=["q_proj", "v_proj", "fc_mystery"])
    with pytest.raises(AdapterInvalid) as err:
        validate_adapter(path, base=base_spec, max_rank=16).raise_for_errors()
    assert checks(err.value.report) == ["dora", "modules_to_save", "rank", "target_modules"]
    assert err.value.status_code == 400 and err.value.code == "invalid_adapter"
    for word in ("DoRA", "modules_to_save", "rank 32", "fc_mystery"):
        assert word in err.value.message


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing", "pickle"])
def test_unreadable_weights_are_reported(adapter_dir, copy_of, damage, base_spec):
    path = copy_of(adapter_dir)
    weights = path / WEIGHTS_FILE
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        weights.write_bytes(b"\xff" * 64)
    else:
        weights.unlink()
        if damage == "pickle":
            (path / "adapter_model.bin").write_bytes(b"pickle")
    report = validate_adapter(path, base=base_spec)
    assert checks(report) == ["weights"]
    assert ("safe_serialization" in report.errors[0].message) == (damage == "pickle")


def test_a_broken_config_does_not_hide_other_problems(adapter_dir, copy_of, base_spec):
    path = copy_of(adapter_dir)
    (path / CONFIG_FILE).write_text("{ not json")
    (path / WEIGHTS_FILE).write_bytes(b"nope")
    assert checks(validate_adapter(path, base=base_spec)) == ["config", "weights"]


def test_a_non_lora_peft_type_is_refused(adapter_dir, copy_of):
    path = copy_of(adapter_dir)
    edit_config(path, peft_type="IA3")
    assert checks(validate_adapter(path)) == ["config"]


def test_bytes_changed_after_publish_are_caught(adapter_dir, copy_of, manifest_for):
    manifest = manifest_for(adapter_dir)
    path = copy_of(adapter_dir)
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0x01  # still a readable safetensors file
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    report = validate_adapter(path, manifest=manifest)
    assert checks(report) == ["integrity"]


def test_an_adapter_for_another_base_is_refused(adapter_dir, tiny_base, base_spec, manifest_for):
    config = json.loads((tiny_base / "config.json").read_text())
    wider = BaseSpec.from_config({**config, "hidden_size": 512, "num_hidden_layers": 2}, "big")
    report = validate_adapter(adapter_dir, base=wider, manifest=manifest_for(adapter_dir))
    assert checks(report) == ["base"]
    messages = " ".join(p.message for p in report.errors)
    assert "fingerprint" in messages and "in_features 256" in messages and "layer 2" in messages


def test_qlora_on_a_16_bit_base_is_a_warning_only(adapter_dir, tiny_base, base_spec, manifest_for):
    manifest = manifest_for(adapter_dir, method="qlora")
    report = validate_adapter(adapter_dir, base=base_spec, manifest=manifest)
    assert report.ok and [p.check for p in report.warnings] == ["quantization"]
    config = json.loads((tiny_base / "config.json").read_text())
    nf4_base = BaseSpec.from_config({**config, "quantization_config": {"load_in_4bit": True}}, "tiny",
                                    json.loads((tiny_base / "loramux_base.json").read_text()))
    assert validate_adapter(adapter_dir, base=nf4_base, manifest=manifest).problems == []


def test_lora_outside_the_decoder_layers_is_refused_even_behind_a_regex(make_adapter, copy_of, base_spec):
    path = copy_of(make_adapter(target_modules=["q_proj", "lm_head"]))
    edit_config(path, target_modules=".*(q_proj|lm_head)")
    report = validate_adapter(path, base=base_spec)
    assert checks(report) == ["target_modules"] and "lm_head" in report.errors[0].message
