"""The training recipe: one pydantic model per concern, loaded from YAML plus `key=value` overrides.

Every field has a docstring because `trainer train --help`, the example recipes and the
error messages all point at these names. Loading reports every problem in one error
(file, field, what is wrong), like torchtune's ConfigError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loramux.adapters.errors import InvalidRequest
from loramux.adapters.shapes import TARGET_SETS
from loramux.trainer.methods import METHODS

Method = Literal["lora", "qlora", "full"]


class ConfigError(InvalidRequest):
    """A recipe or its overrides are invalid; `problems` lists each as 'where: what'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        n = len(problems)
        super().__init__(f"{source}: {n} problem{'s' * (n != 1)}:\n" + "\n".join(f"- {p}" for p in problems),
                         param="config")
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class LoraSettings(_Strict):
    r: int | None = Field(None, gt=0, le=1024)
    """Rank of the update matrices; null = by base size (16, see defaults.py). 32-64 for new knowledge."""
    alpha: float | None = None
    """Scaling numerator: the update is multiplied by alpha / r (alpha / sqrt(r) with rsLoRA); null = 2r."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA input; 0 keeps runs bit-for-bit reproducible across resumes."""
    target_modules: str | list[str] = "all-linear"
    """`attention`, `mlp`, `all-linear` or a list of module names (q_proj, v_proj, ...)."""
    use_rslora: bool = False
    """rsLoRA: scale by alpha / sqrt(r) instead of alpha / r, so higher ranks keep learning (peft `use_rslora`)."""
    init: Literal["default", "gaussian", "pissa", "olora"] = "default"
    """Initialisation (peft `init_lora_weights`): default (B = 0), gaussian, or PiSSA / OLoRA, which start from
    the base weights' principal directions and converge faster; those are converted to a plain LoRA adapter
    of rank 2r at save, so the served base stays the original one."""

    def targets(self) -> list[str]:
        """The module names this setting stands for."""
        if isinstance(self.target_modules, str):
            if self.target_modules not in TARGET_SETS:
                raise InvalidRequest(f"lora.target_modules: unknown set {self.target_modules!r}; "
                                     f"use one of {sorted(TARGET_SETS)} or a list", param="lora.target_modules")
            return list(TARGET_SETS[self.target_modules])
        return list(self.target_modules)


class QuantSettings(_Strict):
    """bitsandbytes 4-bit settings, used by `method: qlora` only."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type: NF4 (the QLoRA paper's choice) or FP4."""
    double_quant: bool = True
    """Quantize the quantization constants too (saves ~0.4 bits/param)."""
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Dtype of the matmuls: auto = bfloat16 on a GPU that has it, else float32."""
    paged_optimizer: bool = True
    """Use bitsandbytes' paged AdamW where the platform has one (CUDA); plain AdamW elsewhere."""


class DataSettings(_Strict):
    train: Path | None = None
    """Training JSONL: chat {messages}, {prompt, completion} or alpaca {instruction, input, output}."""
    eval: Path | None = None
    """Held-out JSONL in the same formats; when unset, `eval_fraction` of `train` is held out."""
    eval_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    """Share of `train` held out for evaluation when no eval file is given."""
    max_eval_examples: int = Field(200, gt=0)
    """Cap on evaluated examples: generation is the slow part of evaluation."""
    general: Path | None = None
    """Text the base already handles (JSONL with `text`), for the forgetting score; built-in if unset."""
    general_mix: float = Field(0.0, ge=0.0, lt=1.0)
    """Share of the training rows that are general conversations mixed in (rehearsal), so the adapter keeps
    what the base knew: shipped questions answered by SmolLM2-135M-Instruct itself, other questions than the
    general probe's (loramux.trainer.general_mix). 0 = the tenant's data only; 0.2-0.3 is rehearsal's usual
    range (tests/bench/bench_general_mix.py measures it). Training rows only: the gate's eval split stays the
    tenant's own."""


class TrainingSettings(_Strict):
    epochs: float | None = Field(None, gt=0)
    """Passes over the training data; null = 3, or more on small data so that at least `min_examples`
    examples are seen (at most 25). Early stopping usually ends the run sooner: evaluation runs
    `evals_per_run` times and training stops once the score stops improving."""
    min_examples: int | None = Field(None, ge=0)
    """With `epochs: null`, small data sets are repeated until the run has seen this many examples; null = by
    base size (defaults.py: 3,000 on bases trained from scratch, fewer on pretrained ones)."""
    max_minutes: float | None = Field(None, gt=0)
    """Time budget: once this many minutes have trained, evaluate, save and stop (the best checkpoint is kept,
    as at any other stop); null = no budget. The run's plan line says how long the length alone will take."""
    max_steps: int | None = Field(None, gt=0)
    """Optimizer steps to run; overrides `epochs` when set."""
    batch_size: int = Field(1, gt=0)
    """Packed sequences per step (each holds up to `max_length` tokens)."""
    grad_accum: int = Field(1, gt=0)
    """Gradient accumulation steps."""
    learning_rate: float | None = Field(None, gt=0)
    """Peak learning rate; null = by method and base size (defaults.py: 2e-4 for LoRA on 7B-class bases)."""
    loraplus_lr_ratio: float | None = Field(None, gt=0)
    """LoRA+: B matrices learn this many times faster than A (paper: 16); null = off (peft's LoRA+ optimizer)."""
    neftune_noise_alpha: float | None = Field(None, gt=0)
    """NEFTune: noise on the input embeddings while training (paper: 5); null = off."""
    lr_scheduler: str = "cosine"
    """Any transformers scheduler name (linear, cosine, constant...)."""
    warmup: float = Field(0.05, ge=0)
    """Warm-up: a fraction of the run's steps when < 1, else a step count."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    max_length: int = Field(256, gt=8)
    """Tokens per packed sequence (and truncation length without packing)."""
    packing: bool = True
    """Pack several examples per sequence (TRL's best-fit decreasing): no compute wasted on padding."""
    completion_only_loss: bool = True
    """Loss on the assistant's tokens only, not on the prompt."""
    gradient_checkpointing: bool | None = None
    """Recompute activations in backward; None = on for bases of 1B+ params, where activations dominate."""
    bf16: bool | None = None
    """bfloat16 mixed precision; None = on where the GPU supports it (never on CPU, where it is slower)."""
    seed: int = 0
    """Seed for weights init, data order and dropout: same seed, same run."""
    logging_steps: int = Field(10, gt=0)
    """Log loss (progress bar, TensorBoard, metrics.json) every N steps."""
    evals_per_run: int = Field(10, gt=0)
    """Evaluate (held-out loss and the task metric on `eval.sample_size` examples) this many times per run."""
    eval_steps: int | None = Field(None, gt=0)
    """Evaluate every N steps instead; null = from `evals_per_run` (or `save_steps` when that is set)."""
    early_stopping_patience: int | None = Field(3, gt=0)
    """Stop after this many evaluations without a better score, or at the second perfect one in a row;
    null = run every step."""
    load_best: bool = True
    """Save the checkpoint with the best evaluation score (task metric, then held-out loss), not the last."""
    save_steps: int | None = Field(None, gt=0)
    """Write a resumable checkpoint every N steps; null = at every evaluation (must be a multiple of eval_steps
    when `load_best` is on)."""
    save_total_limit: int | None = 2
    """Keep only the newest N checkpoints."""
    threads: int | None = None
    """CPU threads for torch; None = 1 for bases under 100M params on CPU (their ops are too small to
    split across threads: 1 thread ran the tiny base 5x faster on a busy 2-core machine), else torch's default."""


    @model_validator(mode="after")
    def _checkpoint_at_every_best(self):
        """The Trainer would refuse this mid-setup; say it now, with the other problems, in our names."""
        if self.load_best and self.eval_steps and self.save_steps and self.save_steps % self.eval_steps:
            raise ValueError(f"save_steps {self.save_steps} is not a multiple of eval_steps {self.eval_steps}; with "
                             "load_best the best evaluation must have a checkpoint")
        return self


class EvalSettings(_Strict):
    metric: str = "exact_match"
    """Score on the held-out set: exact_match or contains (see loramux.trainer.evaluate.METRICS)."""

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        from loramux.trainer.evaluate import METRICS

        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; use one of {sorted(METRICS)}")
        return v
    max_new_tokens: int | None = None
    """Greedy decoding budget; None = longest reference answer plus 8 tokens."""
    batch_size: int = Field(32, gt=0)
    """Prompts generated together."""
    sample_size: int = Field(32, ge=0)
    """Held-out examples generated at each evaluation during training (the progress bar's score and the
    early-stopping signal); 0 = held-out loss only."""


class TrainConfig(_Strict):
    """One training run: base, data, method and its knobs, where outputs go."""

    base: Path = Path("base")
    """Base model folder (Hugging Face layout: config.json, safetensors, tokenizer)."""
    method: Method = "lora"
    """lora | qlora (4-bit base, LoRA on top) | full (every weight; for small bases)."""
    output_dir: Path = Path("runs/latest")
    """Adapter (or full model), checkpoints, TensorBoard logs, metrics.json and loss.png go here."""
    data: DataSettings = Field(default_factory=DataSettings)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    quant: QuantSettings = Field(default_factory=QuantSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    node = tree
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def parse_overrides(overrides: list[str]) -> tuple[dict, list[str]]:
    """`a.b=value` strings (values parsed as YAML) as a nested dict, plus problems found."""
    tree: dict = {}
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r}: expected KEY=VALUE (e.g. lora.r=16)")
            continue
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.strip(), value)
    return tree, problems


def _merge(into: dict, extra: dict) -> dict:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
    return into


def build_config(raw: dict, overrides: list[str] = (), source: str = "config") -> TrainConfig:
    """Validate `raw` plus overrides; every problem reported at once as a ConfigError."""
    extra, problems = parse_overrides(list(overrides))
    merged = _merge(raw, extra)
    try:
        config = TrainConfig.model_validate(merged)
    except ValidationError as e:
        problems += [f"{'.'.join(map(str, err['loc'])) or '(top)'}: {err['msg']}" for err in e.errors()]
        config = None
    if config is not None and isinstance(config.lora.target_modules, str) \
            and config.lora.target_modules not in TARGET_SETS:
        problems.append(f"lora.target_modules: unknown set {config.lora.target_modules!r}; "
                        f"use one of {sorted(TARGET_SETS)} or a list of module names")
    if config is not None and not METHODS[config.method].adapter:
        problems += [f"{name}: applies to LoRA adapters; method {config.method} trains every weight "
                     f"(use one of {[m.name for m in METHODS.values() if m.adapter]})"
                     for name, on in (("lora.init", config.lora.init != "default"),
                                      ("lora.use_rslora", config.lora.use_rslora),
                                      ("training.loraplus_lr_ratio", config.training.loraplus_lr_ratio))
                     if on]
    if problems:
        raise ConfigError(source, problems)
    return config



def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML recipe (paths in it are relative to the YAML's folder) and apply overrides."""
    if path is None:
        return build_config({}, overrides, source="overrides")
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(str(path), [f"cannot read: {e}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), ["top level must be a mapping of field: value"])
    config = build_config(raw, overrides, source=str(path))
    return config.model_copy(update={"base": _rel(path, config.base), "output_dir": _rel(path, config.output_dir),
                                     "data": config.data.model_copy(update={
                                         k: _rel(path, getattr(config.data, k))
                                         for k in ("train", "eval", "general")})})


def _rel(recipe: Path, value: Path | None) -> Path | None:
    """Paths written in a recipe are relative to the recipe; overrides are relative to the cwd."""
    if value is None or value.is_absolute() or value.exists():
        return value
    candidate = recipe.parent / value
    return candidate if candidate.exists() else value


RECIPES_DIR = Path(__file__).parent / "recipes"


def recipe_path(name: str) -> Path:
    """A shipped recipe by name (`lora`, `qlora`, `full`, ...) or a path as given."""
    shipped = RECIPES_DIR / f"{name}.yaml"
    return shipped if shipped.is_file() else Path(name)
