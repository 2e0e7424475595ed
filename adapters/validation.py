"""Is this adapter servable on this base? Every check runs; all problems come back at once.

Runs before publish (trainer) and before load (server), like vLLM's `PEFTHelper`: the
engine would otherwise fail late, one problem at a time, or — worse — load an adapter
for another base without complaint. Only headers are read: no tensor data, no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.errors import InvalidRequest
from loramux.adapters.manifest import Manifest, Method, content_hash
from loramux.adapters.peft_format import CONFIG_FILE, PICKLED_WEIGHTS, WEIGHTS_FILE, LoraKey, read_config, read_header
from loramux.adapters.shapes import LLAMA_LINEARS


class Problem(BaseModel):
    """One finding: what is wrong and what to do about it. `check` names the rule, so
    callers can branch without reading text."""

    check: str
    message: str
    fix: str | None = None
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"[{self.check}] {self.message}" + (f" -> fix: {self.fix}" if self.fix else "")


class ValidationReport(BaseModel):
    adapter: str
    problems: list[Problem] = []

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> ValidationReport:
        """Raise AdapterInvalid listing every error; returns self (warnings only) otherwise."""
        if self.errors:
            raise AdapterInvalid(self)
        return self


class AdapterInvalid(InvalidRequest):
    """The adapter cannot be served; `report.problems` holds every reason."""

    code = "invalid_adapter"

    def __init__(self, report: ValidationReport) -> None:
        lines = "\n".join(f"- {p}" for p in report.errors)
        n = len(report.errors)
        super().__init__(f"adapter {report.adapter} is not servable ({n} problem{'s' * (n != 1)}):\n{lines}",
                         param="adapter")
        self.report = report


@dataclass
class LoraTensor:
    layer: int
    module: str
    kind: Literal["A", "B"]
    shape: tuple[int, ...]


@dataclass
class Adapter:
    """What the checks look at; `None` where it could not be read (already reported)."""

    path: Path
    config: dict | None = None
    tensors: dict[str, tuple[int, ...]] | None = None
    lora: list[LoraTensor] = field(default_factory=list)


@dataclass(frozen=True)
class Policy:
    """What the serving side requires; every field optional (unknown -> not checked)."""

    base: BaseSpec | None = None
    max_rank: int | None = None
    manifest: Manifest | None = None
    method: Method | None = None  # how it was trained, when there is no manifest yet (publish)


Check = Callable[[Adapter, Policy], Iterator[Problem]]
CHECKS: dict[str, Check] = {}


def check(name: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn
    return register


def _err(check_name: str, message: str, fix: str) -> Problem:
    return Problem(check=check_name, message=message, fix=fix)


_MERGE = "or merge it into its base (`trainer merge --adapter DIR --out MERGED`) and serve the merged model"
_RESAVE = "re-save the adapter with peft's save_pretrained(..., safe_serialization=True)"


def _read(path: Path) -> tuple[Adapter, list[Problem]]:
    """Load the config and the safetensors header, reporting what cannot be read."""
    adapter, problems = Adapter(path=path), []
    try:
        adapter.config = read_config(path)
    except InvalidRequest as e:
        problems.append(_err("config", e.message, _RESAVE))
    if not (path / WEIGHTS_FILE).is_file():
        extra = " (pickled .bin weights are not accepted; save with safe_serialization)" \
            if (path / PICKLED_WEIGHTS).exists() else ""
        problems.append(_err("weights", f"{WEIGHTS_FILE} is missing{extra}", _RESAVE))
        return adapter, problems
    try:
        adapter.tensors = {k: t.shape for k, t in read_header(path).items()}
    except InvalidRequest as e:
        problems.append(_err("weights", e.message,
                             "copy the file again (it was likely truncated in transfer) or " + _RESAVE))
        return adapter, problems
    for key, shape in adapter.tensors.items():
        if (lk := LoraKey.parse(key)) is not None and lk.layer is not None:
            adapter.lora.append(LoraTensor(lk.layer, lk.name, lk.kind, shape))
    return adapter, problems


@check("config")
def _config(a: Adapter, p: Policy) -> Iterator[Problem]:
    if a.config is None:
        return
    if a.config.get("peft_type", "LORA") != "LORA":
        yield _err("config", f"peft_type is {a.config['peft_type']!r}; only LORA adapters are served",
                   "train a LoRA adapter (peft LoraConfig) instead")
    r = a.config.get("r")
    if not isinstance(r, int) or r <= 0:
        yield _err("config", f"rank `r` must be a positive integer, got {r!r}",
                   f"set `r` in {CONFIG_FILE} to the rank the tensors were trained with")
    if a.tensors is not None and not a.lora:
        yield _err("weights", f"{WEIGHTS_FILE} holds no LoRA A/B tensors", _RESAVE)
    ranks: dict[tuple[int, str], dict[str, int]] = {}
    for t in a.lora:
        if len(t.shape) == 2:
            ranks.setdefault((t.layer, t.module), {})[t.kind] = t.shape[0] if t.kind == "A" else t.shape[1]
    broken = sorted(f"layers.{layer}.{m}" for (layer, m), ab in ranks.items()
                    if set(ab) != {"A", "B"} or ab["A"] != ab["B"])
    if broken:
        yield _err("weights", f"lora_A/lora_B missing or of different ranks in {len(broken)} modules,"
                   f" e.g. {broken[0]}", _RESAVE)


@check("integrity")
def _integrity(a: Adapter, p: Policy) -> Iterator[Problem]:
    if p.manifest is None:
        return
    try:
        actual = content_hash(a.path)
    except OSError:  # a missing file is reported by the config/weights checks
        return
    if actual != p.manifest.version:
        yield _err("integrity", f"files hash to {actual[:12]}, not to the published version "
                   f"{p.manifest.short_version}: the stored copy is corrupt",
                   "delete the cached copy so it is fetched again, or republish from the original files")


@check("base")
def _base(a: Adapter, p: Policy) -> Iterator[Problem]:
    if p.base is None:
        return
    retrain = f"retrain the adapter on {p.base.id!r}, or serve it with the base it was trained on"
    if p.manifest is not None and not p.base.matches(p.manifest.base_fingerprint, p.manifest.chat_template):
        yield _err("base", f"trained on base {p.manifest.base_model!r} (fingerprint "
                   f"{p.manifest.base_fingerprint}), serving base is {p.base.id!r} ({p.base.fingerprint})", retrain)
    shapes, seen = p.base.shape.linears(), set()
    for t in a.lora:
        if t.layer >= p.base.shape.layers and ("layer", t.layer) not in seen:
            seen.add(("layer", t.layer))
            yield _err("base", f"adapter has layer {t.layer}; the base has {p.base.shape.layers} layers",
                       retrain)
        if t.module not in shapes or len(t.shape) != 2:
            continue
        fan_in, fan_out = shapes[t.module]
        dim, want = (t.shape[1], fan_in) if t.kind == "A" else (t.shape[0], fan_out)
        if dim != want and (t.module, t.kind) not in seen:
            seen.add((t.module, t.kind))
            side = "in_features" if t.kind == "A" else "out_features"
            yield _err("base", f"{t.module}.lora_{t.kind} has {side} {dim}; the base's {t.module} has {want}",
                       retrain)


@check("chat_template")
def _chat_template(a: Adapter, p: Policy) -> Iterator[Problem]:
    trained = p.manifest.chat_template if p.manifest else None
    serving = p.base.chat_template if p.base else None
    if trained and serving and trained != serving:  # unknown on either side: not checked
        yield _err("chat_template", f"trained with chat template {trained} (base {p.manifest.base_model!r}); "
                   f"serving base {p.base.id!r} renders prompts with chat template {serving}",
                   "serve it with the tokenizer files it was trained with, or retrain it on this base")


@check("rank")
def _rank(a: Adapter, p: Policy) -> Iterator[Problem]:
    ranks = {t.shape[0] if t.kind == "A" else t.shape[-1] for t in a.lora if t.shape}
    declared = a.config.get("r") if a.config else None
    if isinstance(declared, int):
        ranks.add(declared)
        pattern = (a.config.get("rank_pattern") or {}).values()
        ranks.update(v for v in pattern if isinstance(v, int))
    if p.max_rank is not None and ranks and max(ranks) > p.max_rank:
        yield _err("rank", f"rank {max(ranks)} is above the server's cap of {p.max_rank}",
                   f"retrain with r <= {p.max_rank}, or raise the cap (loramux serve --max-lora-rank {max(ranks)})")


@check("dora")
def _dora(a: Adapter, p: Policy) -> Iterator[Problem]:
    in_tensors = any("lora_magnitude_vector" in k for k in a.tensors or {})
    if (a.config or {}).get("use_dora") or in_tensors:
        yield _err("dora", "DoRA adapters (use_dora) are not supported by the engine",
                   f"retrain with use_dora=False, {_MERGE}")


@check("modules_to_save")
def _modules_to_save(a: Adapter, p: Policy) -> Iterator[Problem]:
    listed = (a.config or {}).get("modules_to_save") or []
    in_tensors = sorted({k for k in a.tensors or {} if "modules_to_save" in k})
    if listed or in_tensors:
        what = ", ".join(listed) if listed else f"{len(in_tensors)} tensors"
        yield _err("modules_to_save", f"modules_to_save ({what}) is not supported: the adapter must hold"
                   " LoRA weights only", f"retrain without modules_to_save (keep embeddings and lm_head frozen), {_MERGE}")


@check("target_modules")
def _target_modules(a: Adapter, p: Policy) -> Iterator[Problem]:
    known = set(p.base.shape.linears()) if p.base else set(LLAMA_LINEARS)
    targets = (a.config or {}).get("target_modules") or []
    listed = set(targets) if isinstance(targets, list) else set()  # a str is a regex or "all-linear"
    unknown = sorted((listed | {t.module for t in a.lora}) - known)
    if unknown:
        yield _err("target_modules", f"unknown target modules {unknown}; the base has {sorted(known)}",
                   f"retrain with target_modules among {sorted(known)}")
    stray = sorted(k for k in a.tensors or {} if ".lora_" in k and "lora_magnitude_vector" not in k
                   and getattr(LoraKey.parse(k), "layer", None) is None)
    if stray:  # e.g. lm_head / embed_tokens LoRA, which a regex `target_modules` can hide
        yield _err("target_modules", f"{len(stray)} LoRA tensors outside the decoder layers, e.g. {stray[0]}",
                   "retrain with LoRA on the decoder layers' linear modules only (not embed_tokens/lm_head)")
    in_tensors = {t.module for t in a.lora}
    if listed and a.tensors is not None and in_tensors and in_tensors != listed:
        extra, missing = sorted(in_tensors - listed), sorted(listed - in_tensors)
        what = "; ".join(x for x in (extra and f"tensors for {extra} not in target_modules",
                                     missing and f"target_modules {missing} without tensors") if x)
        yield _err("target_modules", f"the tensors do not match target_modules: {what}",
                   f"re-save the adapter so {CONFIG_FILE} lists exactly the modules it has weights for")


@check("bias")
def _bias(a: Adapter, p: Policy) -> Iterator[Problem]:
    declared = (a.config or {}).get("bias", "none")
    trained = sorted(k for k in a.tensors or {} if k.endswith(".bias"))
    if declared not in (None, "none") or trained:
        what = f"bias={declared!r}" if declared not in (None, "none") else f"{len(trained)} bias tensors"
        yield _err("bias", f"bias training ({what}) is not supported: the engine applies LoRA A/B only",
                   "retrain with bias='none'")


@check("quantization")
def _quantization(a: Adapter, p: Policy) -> Iterator[Problem]:
    method = p.manifest.method if p.manifest else p.method
    if p.base and method == "qlora" and p.base.quantization is None:
        yield Problem(check="quantization", severity="warning",
                      message="trained on a 4-bit base (QLoRA), served on a 16-bit one: outputs"
                      " will differ slightly from those measured at training time",
                      fix="check the eval score on the 16-bit base before promoting it, or serve a 4-bit base")


def validate_adapter(path: str | Path, *, base: BaseSpec | None = None, max_rank: int | None = None,
                     manifest: Manifest | None = None, method: Method | None = None) -> ValidationReport:
    """Run every check in CHECKS on the adapter in `path`; never raises for a bad adapter."""
    path = Path(path)
    adapter, problems = _read(path)
    policy = Policy(base=base, max_rank=max_rank, manifest=manifest, method=method)
    for fn in CHECKS.values():
        problems.extend(fn(adapter, policy))
    label = manifest.served_name if manifest else str(path)
    return ValidationReport(adapter=label, problems=problems)
