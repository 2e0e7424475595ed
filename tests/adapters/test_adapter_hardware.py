"""`auto` never means bf16 on a CPU without native bf16 (issue 24: 4.5x slower than fp32 there).

Every test forces the CPU's answer (LORAMUX_CPU_FEATURES or a fake /proc/cpuinfo), both ways,
so each path is checked on whatever CPU runs the suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loramux.adapters.errors import InvalidRequest
from loramux.adapters.hardware import ENV_FEATURES, checkpoint_dtype, cpu_features, resolve_dtype

WITHOUT_BF16 = {"avx2 only (EPYC)": "avx2", "avx-512 without bf16": "avx2,avx512f", "nothing known": ""}
WITH_BF16 = {"avx512_bf16 (EPYC, Xeon)": "avx2,avx512f,avx512_bf16", "amx (Xeon)": "avx2,avx512f,amx_bf16"}


def forced(cases: dict[str, str]) -> list:
    """Each forced CPU answer as a param carrying its `cpu_path` mark (listed at the end of a run)."""
    return [pytest.param(v, id=k, marks=pytest.mark.cpu_path(f"dtype auto: {v or 'none'}")) for k, v in cases.items()]


def _base(tmp_path: Path, dtype: str | None, key: str = "dtype", hidden: int | None = None) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "llama", **({key: dtype} if dtype else {}), **({"hidden_size": hidden} if hidden else {})}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("features", forced(WITHOUT_BF16))
@pytest.mark.parametrize("stored", ["float32", "bfloat16", "float16", None])
def test_auto_is_float32_on_a_cpu_without_native_bf16(features, stored, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_FEATURES, features)
    choice = resolve_dtype("auto", _base(tmp_path, stored))
    assert choice.dtype == "float32", choice
    assert str(choice).startswith("dtype float32: this CPU has no native bf16")


@pytest.mark.parametrize("features", forced(WITH_BF16))
def test_auto_is_bfloat16_on_a_cpu_with_native_bf16(features, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_FEATURES, features)
    base = _base(tmp_path, "float32", hidden=576)  # SmolLM2-135M's shape, an fp32 checkpoint
    choice = resolve_dtype("auto", base)
    assert checkpoint_dtype(base) == "float32"
    assert choice.dtype == "bfloat16"
    assert str(choice) == f"dtype bfloat16: this CPU has native bf16 ({features.split(',')[-1]})"


@pytest.mark.parametrize("features", forced(WITH_BF16))
def test_a_model_too_small_for_bf16_to_pay_stays_float32(features, monkeypatch, tiny_base):
    monkeypatch.setenv(ENV_FEATURES, features)
    choice = resolve_dtype("auto", tiny_base)  # hidden 256: measured slower in bf16 on an AVX512-BF16 CPU
    assert choice.dtype == "float32"
    assert str(choice) == (f"dtype float32: the model is too small for bf16 to pay (hidden size 256 < 512), "
                           f"though this CPU has native bf16 ({features.split(',')[-1]})")


def test_a_float16_checkpoint_is_not_rounded_to_bf16(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_FEATURES, WITH_BF16["amx (Xeon)"])
    assert resolve_dtype("auto", _base(tmp_path, "float16", key="torch_dtype")).dtype == "float32"
    assert resolve_dtype("auto", _base(tmp_path / "b", "bfloat16")).dtype == "bfloat16"


def test_an_asked_dtype_is_kept_and_gpu_leaves_auto_to_vllm(monkeypatch, tiny_base, tmp_path):
    monkeypatch.setenv(ENV_FEATURES, "avx2")
    assert str(resolve_dtype("bfloat16", tiny_base)) == "dtype bfloat16: as asked"
    assert resolve_dtype("auto", tiny_base, on_cpu=False).dtype == "auto"
    wide = _base(tmp_path, "float32", hidden=576)
    assert resolve_dtype("auto", wide, features=frozenset({"amx_bf16"})).dtype == "bfloat16"


def test_features_come_from_cpuinfo_flags_unless_forced(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_FEATURES, raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx avx2 fma avx512f avx512_bf16 "
                    "avx512_vnni\nbugs\t\t: sysret_ss_attrs\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    assert cpu_features(info) == {"avx2", "avx512f", "avx512_bf16"}  # only the flags that switch a path
    assert cpu_features(tmp_path / "absent") == frozenset()  # not Linux: nothing native, so float32
    monkeypatch.setenv(ENV_FEATURES, " avx2 , amx_bf16")
    assert cpu_features(info) == {"avx2", "amx_bf16"}
    monkeypatch.setenv(ENV_FEATURES, "avx2,avx512bf16")  # a typo would silently force the other path
    with pytest.raises(InvalidRequest, match="avx512bf16"):
        cpu_features(info)
