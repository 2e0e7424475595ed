"""`train(config)`: one run of TRL's SFTTrainer, then held-out scores and the run's records.

Layout of `output_dir`: `adapter/` (LoRA/QLoRA, PEFT layout) or `model/` (full),
`checkpoints/checkpoint-N/` (resumable), `tensorboard/`, `metrics.json`, `loss.png`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console

from loramux.adapters.errors import InvalidRequest, LoramuxError
from loramux.trainer.config import TrainConfig
from loramux.trainer.data import Splits, load_splits
from loramux.trainer.defaults import resolve
from loramux.trainer.methods import CONVERTED_INITS, METHODS, bf16_available, has_cuda, quantization_record

CHECKPOINTS = "checkpoints"
INIT_ADAPTER = "init-adapter"
"""PiSSA/OLoRA runs: the adapter as initialised, needed to convert the trained one to plain LoRA."""


@dataclass
class TrainResult:
    output_dir: Path
    artifact: Path
    """The adapter folder (lora/qlora) or full model folder."""
    metrics: dict


def latest_checkpoint(output_dir: Path) -> Path | None:
    """Newest *complete* checkpoint: a kill -9 mid-save leaves one without trainer_state.json."""
    root = Path(output_dir) / CHECKPOINTS
    done = [p for p in root.glob("checkpoint-*") if (p / "trainer_state.json").is_file()
            and p.name.removeprefix("checkpoint-").isdigit()]
    return max(done, key=lambda p: int(p.name.removeprefix("checkpoint-")), default=None)


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def peak_memory_mb() -> float:
    """Peak GPU memory allocated, or the process's peak resident set on CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def param_counts(model) -> tuple[int, int]:
    """(trainable, total); 4-bit weights counted as the parameters they stand for."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def sft_args(cfg: TrainConfig, params_total: int, extra: dict):
    """TRL SFTConfig from our recipe (size defaults already resolved, see defaults.resolve); our defaults
    differ from TRL's where it makes runs faster, and evaluation during training is on (evalloop.py)."""
    from trl import SFTConfig

    from loramux.trainer.evalloop import eval_schedule

    t = cfg.training
    checkpointing = t.gradient_checkpointing if t.gradient_checkpointing is not None else params_total >= 1e9
    bf16 = (t.bf16 if t.bf16 is not None else bf16_available()) and not METHODS[cfg.method].quantized
    return SFTConfig(
        output_dir=str(cfg.output_dir / CHECKPOINTS), max_steps=t.max_steps or -1, num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler, warmup_steps=t.warmup,  # < 1: a ratio (transformers 5)
        weight_decay=t.weight_decay, max_length=t.max_length, packing=t.packing,
        assistant_only_loss=False,  # the masks come with the data (chat_masks.py): TRL must not re-template
        gradient_checkpointing=checkpointing, bf16=bf16,
        seed=t.seed, data_seed=t.seed, logging_steps=t.logging_steps, save_total_limit=t.save_total_limit,
        report_to=["tensorboard"], neftune_noise_alpha=t.neftune_noise_alpha,
        disable_tqdm=True, include_num_input_tokens_seen="non_padding", use_cpu=not has_cuda(),
        dataloader_num_workers=0, per_device_eval_batch_size=max(t.batch_size, 4),
        **eval_schedule(cfg), **extra)


def _loraplus(trainer, cfg: TrainConfig):
    """peft's LoRA+ optimizer (B matrices at `loraplus_lr_ratio` x the rate) in place of the Trainer's own."""
    import torch
    from peft.optimizers import create_loraplus_optimizer

    cls = torch.optim.AdamW
    if trainer.args.optim.startswith("paged_adamw"):
        import bitsandbytes as bnb

        cls = bnb.optim.PagedAdamW32bit
    return create_loraplus_optimizer(trainer.model, cls, lr=cfg.training.learning_rate,
                                     loraplus_lr_ratio=cfg.training.loraplus_lr_ratio,
                                     weight_decay=cfg.training.weight_decay)


def _save_initial(model, path: Path) -> None:
    """The PiSSA/OLoRA adapter before training, saved as peft's conversion expects (init_lora_weights=True)."""
    config = model.peft_config["default"]
    init, config.init_lora_weights = config.init_lora_weights, True
    try:
        model.save_pretrained(str(path))
    finally:
        config.init_lora_weights = init


def _best_eval(state) -> dict | None:
    """The logged evaluation of the kept checkpoint."""
    if not state.best_model_checkpoint:
        return None
    step = int(Path(state.best_model_checkpoint).name.removeprefix("checkpoint-"))
    return next((e for e in state.log_history if e.get("step") == step and "eval_loss" in e), None)


def _dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(rows)


def tokenized(cfg: TrainConfig, splits: Splits, tokenizer) -> tuple[list[dict], list[dict]]:
    """Train and eval rows, tokenized with the base's own chat template and masked here (chat_masks.py), so
    TRL needs no `{% generation %}` markers; a template that cannot be masked fails before the model loads."""
    from loramux.trainer.chat_masks import tokenize

    only = cfg.training.completion_only_loss
    return (tokenize(tokenizer, [e.messages for e in splits.train], assistant_only=only),
            tokenize(tokenizer, [e.messages for e in splits.eval], assistant_only=only))


def quiet() -> None:
    """Our progress bar is the only one: silence datasets' and transformers' bars."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


@dataclass
class Built:
    """A ready SFTTrainer and what the run around it needs."""

    trainer: object
    cfg: TrainConfig
    """The recipe with rate, rank and length resolved for this base and data."""
    length: object
    """evalloop.RunLength: the plan, printed at the start."""
    tokenizer: object
    init_dir: Path | None = None


def build_trainer(cfg: TrainConfig, splits: Splits, console: Console | None = None) -> Built:
    """Load the base for the method, tokenize and pack the data, wire evaluation; nothing trains yet."""
    import torch
    from transformers import AutoTokenizer, PrinterCallback, set_seed
    from trl import SFTTrainer

    from loramux.trainer.evalloop import MIN_GAIN, EarlyStopping, RunLength, SampledMetric, TimeBudget, run_length
    from loramux.trainer.progress import RichProgress

    quiet()
    set_seed(cfg.training.seed)
    tokenizer = AutoTokenizer.from_pretrained(cfg.base)
    train_rows, eval_rows = tokenized(cfg, splits, tokenizer)
    cfg = resolve(cfg, len(splits.train))
    loaded = METHODS[cfg.method].load(cfg)
    total = sum(p.numel() for p in loaded.model.parameters())
    threads = cfg.training.threads or (1 if total < 100e6 and not has_cuda() else None)
    if threads:
        torch.set_num_threads(threads)
    args = sft_args(cfg, total, loaded.trainer_args)
    sample = splits.eval[:min(cfg.eval.sample_size, cfg.data.max_eval_examples)]
    callbacks = [SampledMetric(AutoTokenizer.from_pretrained(cfg.base), sample, cfg.eval.metric,
                               cfg.eval.batch_size, cfg.eval.max_new_tokens)]  # before the callbacks reading it
    if cfg.training.early_stopping_patience:
        callbacks.append(EarlyStopping(cfg.training.early_stopping_patience, MIN_GAIN, cfg.eval.metric))
    if cfg.training.max_minutes:
        callbacks.append(TimeBudget(cfg.training.max_minutes))
    with _env(TENSORBOARD_LOGGING_DIR=str(cfg.output_dir / "tensorboard")):
        trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=_dataset(train_rows),
                             eval_dataset=_dataset(eval_rows), processing_class=tokenizer,
                             peft_config=loaded.peft_config, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # the rich bar replaces transformers' printing
    length = RunLength(run_length(trainer, cfg), console, budget_minutes=cfg.training.max_minutes)
    trainer.add_callback(length)
    trainer.add_callback(RichProgress(f"{cfg.method} {cfg.output_dir.name}", console, metric=cfg.eval.metric))
    if cfg.training.loraplus_lr_ratio:
        trainer.optimizer = _loraplus(trainer, cfg)
    built = Built(trainer, cfg, length, tokenizer)
    if METHODS[cfg.method].adapter and cfg.lora.init in CONVERTED_INITS:
        built.init_dir = cfg.output_dir / INIT_ADAPTER  # the adapter as initialised, for the conversion at save
        _save_initial(trainer.model, built.init_dir)
    return built


def fit(cfg: TrainConfig, splits: Splits, *, resume: bool = False, console: Console | None = None) -> dict:
    """Train and save the artifact; returns the training half of metrics.json."""
    from loramux.trainer.progress import eval_curve, loss_curve

    checkpoint = latest_checkpoint(cfg.output_dir) if resume else None
    if resume and checkpoint is None:
        (console or Console(stderr=True)).print(f"no complete checkpoint in {cfg.output_dir / CHECKPOINTS}; "
                                                "starting from step 0")
    built = build_trainer(cfg, splits, console)
    trainer, cfg, length, tokenizer, init_dir = built.trainer, built.cfg, built.length, built.tokenizer, built.init_dir
    trainable, total = param_counts(trainer.model)
    start = time.perf_counter()
    tokens0 = 0
    if checkpoint is not None:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        tokens0 = state.get("num_input_tokens_seen", 0)
    with warnings.catch_warnings():
        # Should bitsandbytes' packed CPU layout ever reach a training model again (see
        # bnb_cpu.py), it shows only as this warning: stop rather than train a useless adapter.
        warnings.filterwarnings("error", message=".*autograd kernel was not registered.*")
        try:
            result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except UserWarning as e:
            raise LoramuxError(f"training is broken (bitsandbytes 4-bit autograd): {e}; a 4-bit model must "
                               "not run a no-grad forward or generate before training") from None
    wall = time.perf_counter() - start
    tokens = trainer.state.num_input_tokens_seen - tokens0
    eval_loss = trainer.evaluate()["eval_loss"]
    artifact = cfg.output_dir / METHODS[cfg.method].artifact
    if init_dir is not None:
        trainer.model.save_pretrained(str(artifact), path_initial_model_for_weight_conversion=str(init_dir))
    else:
        trainer.save_model(str(artifact))
    if not METHODS[cfg.method].adapter:  # a whole model folder: loadable on its own
        tokenizer.save_pretrained(artifact)
    metrics = {
        "method": cfg.method, "quantization": quantization_record(cfg), "steps": trainer.state.global_step,
        "plan": length.record(), "learning_rate": cfg.training.learning_rate, "lora_r": cfg.lora.r,
        "best_checkpoint": Path(trainer.state.best_model_checkpoint).name if trainer.state.best_model_checkpoint
        else None, "best_eval": _best_eval(trainer.state), "evals": eval_curve(trainer.state.log_history),
        "resumed_from": checkpoint.name if checkpoint else None,
        "train_loss": result.training_loss, "eval_loss": eval_loss,
        "final_train_loss": next((e["loss"] for e in reversed(trainer.state.log_history) if "loss" in e), None),
        "tokens_per_s": tokens / wall if wall > 0 else 0.0, "train_tokens": tokens, "wall_time_s": wall,
        "peak_memory_mb": peak_memory_mb(), "trainable_params": trainable, "total_params": total,
        "trainable_pct": 100.0 * trainable / total, "loss_curve": loss_curve(trainer.state.log_history),
        "optimizer_lrs": sorted({g.get("initial_lr", g["lr"]) for g in trainer.optimizer.param_groups}),
    }
    del trainer, built
    gc.collect()
    return metrics


def evaluate_run(cfg: TrainConfig, splits: Splits, artifact: Path, *, with_base: bool = True) -> dict:
    """Held-out score of the tuned model (and the base), the forgetting score and the general probe, all on
    fresh models loaded once each, one at a time. The base goes first: its probe score decides whether
    the tuned model's is worth measuring (loramux.trainer.probe)."""
    from transformers import AutoTokenizer

    from loramux.trainer import evaluate as ev
    from loramux.trainer.probe import MIN_BASE_SCORE, ProbeReport, general_probe, load_probe

    tokenizer = AutoTokenizer.from_pretrained(cfg.base)
    examples = splits.eval[:cfg.data.max_eval_examples]
    general = ev.general_texts(cfg.data.general)
    opts = {"metric": cfg.eval.metric, "max_new_tokens": cfg.eval.max_new_tokens, "batch_size": cfg.eval.batch_size}
    out: dict = {"metric": cfg.eval.metric}
    base_probe = None
    if with_base:
        probe = load_probe()
        base = ev.load_model(cfg.base)
        out["base_eval"] = ev.score(base, tokenizer, examples, **opts)
        out["base_general_nll"] = ev.mean_nll(base, tokenizer, general)
        base_probe = general_probe(base, tokenizer, probe)
        del base
    full = not METHODS[cfg.method].adapter
    tuned = ev.load_model(cfg.base, adapter=None if full else artifact, full=artifact if full else None)
    out["eval"] = ev.score(tuned, tokenizer, examples, **opts)
    out["general_nll"] = ev.mean_nll(tuned, tokenizer, general)
    tuned_probe = (general_probe(tuned, tokenizer, probe)
                   if base_probe is not None and base_probe.score >= MIN_BASE_SCORE else None)
    del tuned
    if with_base:
        out["forgetting"] = out["general_nll"] - out["base_general_nll"]
        out.update(ProbeReport.of(base_probe, tuned_probe).metrics())
    gc.collect()
    return out


def train(cfg: TrainConfig, *, resume: bool = False, with_base: bool = True,
          console: Console | None = None) -> TrainResult:
    """Fine-tune, save, evaluate; write metrics.json and loss.png into `cfg.output_dir`."""
    from loramux.trainer.progress import plot_loss

    if not (Path(cfg.base) / "config.json").is_file():
        raise InvalidRequest(f"base: no config.json in {cfg.base}", param="base")
    splits = training_splits(cfg)
    cfg = resolve(cfg, len(splits.train))  # rate, rank and length for this base and data, in config.json
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    (cfg.output_dir / "config.json").write_text(cfg.model_dump_json(indent=2) + "\n")
    metrics = fit(cfg, splits, resume=resume, console=console)
    artifact = cfg.output_dir / METHODS[cfg.method].artifact
    metrics.update(evaluate_run(cfg, splits, artifact, with_base=with_base))
    metrics["score"] = metrics["eval"][cfg.eval.metric]
    metrics["base_score"] = metrics["base_eval"][cfg.eval.metric] if with_base else None
    metrics["data_hash"] = splits.data_hash
    metrics["train_examples"], metrics["eval_examples"] = len(splits.train), len(splits.eval)
    metrics["artifact_bytes"] = sum(f.stat().st_size for f in artifact.rglob("*.safetensors"))
    (cfg.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_loss(metrics["loss_curve"], cfg.output_dir / "loss.png",
              f"{cfg.method}: {cfg.eval.metric} {metrics['score']:.2f}")
    return TrainResult(output_dir=cfg.output_dir, artifact=artifact, metrics=metrics)


def training_splits(cfg: TrainConfig) -> Splits:
    """The tenant's splits, with `data.general_mix` general rows added to the training split only."""
    from loramux.trainer.general_mix import mix_into

    splits = load_splits(cfg.data.train, cfg.data.eval, eval_fraction=cfg.data.eval_fraction,
                         seed=cfg.training.seed)
    return replace(splits, train=mix_into(splits.train, cfg.data.general_mix, seed=cfg.training.seed))


def planned_length(cfg: TrainConfig):
    """The run's length (evalloop.Length: steps, epochs, tokens) for this recipe and data, without training."""
    splits = training_splits(cfg)
    built = build_trainer(cfg, splits, Console(stderr=True, quiet=True))
    length = built.length.length
    del built
    gc.collect()
    return length
