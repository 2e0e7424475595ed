"""Validation: every problem of an adapter reported at once, before publish and before load."""

from __future__ import annotations

import json
import shutil

import pytest

from loramux.adapters.base_spec import BaseSpec, tokenizer_hash
from loramux.adapters.peft_format import CONFIG_FILE, WEIGHTS_FILE
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
                                    json.loads((tiny_base / "loramux_base.json").read_text()),
                                    tokenizer_hash(tiny_base))
    assert validate_adapter(adapter_dir, base=nf4_base, manifest=manifest).problems == []


def test_lora_outside_the_decoder_layers_is_refused_even_behind_a_regex(make_adapter, copy_of, base_spec):
    path = copy_of(make_adapter(target_modules=["q_proj", "lm_head"]))
    edit_config(path, target_modules=".*(q_proj|lm_head)")
    report = validate_adapter(path, base=base_spec)
    assert checks(report) == ["target_modules"] and "lm_head" in report.errors[0].message


def test_bias_training_is_refused(make_adapter, copy_of, base_spec):
    report = validate_adapter(copy_of(make_adapter(bias="lora_only")), base=base_spec)
    assert checks(report) == ["bias"] and "bias='none'" in report.errors[0].fix


def test_tensors_that_do_not_match_target_modules_are_refused(adapter_dir, copy_of, base_spec):
    path = copy_of(adapter_dir)
    edit_config(path, target_modules=["q_proj", "k_proj"])  # the tensors are q_proj and v_proj
    report = validate_adapter(path, base=base_spec)
    assert checks(report) == ["target_modules"]
    assert "['v_proj'] not in target_modules" in report.errors[0].message
    assert "['k_proj'] without tensors" in report.errors[0].message


def test_lora_a_and_b_of_different_ranks_are_refused(adapter_dir, copy_of):
    from safetensors.numpy import load_file, save_file

    path = copy_of(adapter_dir)
    tensors = load_file(path / WEIGHTS_FILE)
    key = next(k for k in tensors if k.endswith("q_proj.lora_B.weight"))
    tensors[key] = tensors[key][:, :4].copy()
    save_file(tensors, path / WEIGHTS_FILE)
    assert checks(validate_adapter(path)) == ["weights"]


def test_one_error_lists_every_problem_each_with_a_fix(make_adapter, base_spec, copy_of):
    path = copy_of(make_adapter(r=32, lora_alpha=32, use_dora=True, modules_to_save=["lm_head"], bias="all"))
    edit_config(path, target_modules=["q_proj", "v_proj", "fc_mystery"])
    with pytest.raises(AdapterInvalid) as err:
        validate_adapter(path, base=base_spec, max_rank=16).raise_for_errors()
    problems = err.value.report.errors
    assert {p.check for p in problems} >= {"bias", "dora", "modules_to_save", "rank", "target_modules"}
    assert all(p.fix for p in problems)
    lines = err.value.message.splitlines()[1:]
    assert len(lines) == len(problems) and all("-> fix: " in line for line in lines)


def test_every_check_gives_a_fix(adapter_dir, copy_of, tiny_base, base_spec, manifest_for):
    """Damage an adapter in every way at once; each problem found says what to do about it."""
    config = json.loads((tiny_base / "config.json").read_text())
    wider = BaseSpec.from_config({**config, "hidden_size": 512, "num_hidden_layers": 2}, "big")
    path = copy_of(adapter_dir)
    manifest = manifest_for(adapter_dir, method="qlora")
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0x01
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    edit_config(path, r=0, peft_type="LORA")
    report = validate_adapter(path, base=wider, max_rank=4, manifest=manifest)
    assert {"base", "config", "integrity", "rank", "quantization"} <= set(checks(report))
    assert all(p.fix for p in report.problems)


def test_serving_with_another_chat_template_is_refused_naming_both(adapter_dir, tiny_base, base_spec,
                                                                  manifest_for, tmp_path):
    manifest = manifest_for(adapter_dir)
    assert manifest.chat_template == base_spec.chat_template is not None  # recorded at publish
    drifted = tmp_path / "drifted-base"
    shutil.copytree(tiny_base, drifted, ignore=shutil.ignore_patterns("*.safetensors"))
    jinja = drifted / "chat_template.jinja"
    jinja.write_text(jinja.read_text().replace("<|end|>", "</s>"))
    other = BaseSpec.from_dir(drifted, "tiny")
    assert other.files_fingerprint == base_spec.files_fingerprint  # same weights and tokenizer files...
    assert other.chat_template != base_spec.chat_template  # ...another way of rendering prompts
    report = validate_adapter(adapter_dir, base=other, manifest=manifest)
    assert checks(report) == ["chat_template"]
    assert manifest.chat_template in report.errors[0].message and other.chat_template in report.errors[0].message
    assert validate_adapter(adapter_dir, base=base_spec, manifest=manifest).problems == []
