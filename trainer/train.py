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
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from loramux.adapters.errors import InvalidRequest, LoramuxError
from loramux.trainer.config import TrainConfig
from loramux.trainer.data import Splits, load_splits
from loramux.trainer.methods import METHODS, bf16_available, has_cuda, quantization_record

CHECKPOINTS = "checkpoints"


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
    """TRL SFTConfig from our recipe; our defaults differ from TRL's where it makes runs faster."""
    from trl import SFTConfig

    t = cfg.training
    checkpointing = t.gradient_checkpointing if t.gradient_checkpointing is not None else params_total >= 1e9
    bf16 = (t.bf16 if t.bf16 is not None else bf16_available()) and cfg.method != "qlora"
    return SFTConfig(
        output_dir=str(cfg.output_dir / CHECKPOINTS), max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler, warmup_steps=t.warmup,  # < 1: a ratio (transformers 5)
       
        weight_decay=t.weight_decay, max_length=t.max_length, packing=t.packing,
        assistant_only_loss=t.completion_only_loss, gradient_checkpointing=checkpointing, bf16=bf16,
        seed=t.seed, data_seed=t.seed, logging_steps=t.logging_steps, save_steps=t.save_steps,
        save_strategy="steps", save_total_limit=t.save_total_limit, report_to=["tensorboard"],
        disable_tqdm=True, include_num_input_tokens_seen="non_padding", use_cpu=not has_cuda(),
        dataloader_num_workers=0, eval_strategy="no", per_device_eval_batch_size=max(t.batch_size, 4),
        **extra)


def _dataset(examples):
    from datasets import Dataset

    return Dataset.from_list([{"messages": e.messages} for e in examples])


def quiet() -> None:
    """Our progress bar is the only one: silence datasets' and transformers' bars."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def fit(cfg: TrainConfig, splits: Splits, *, resume: bool = False, console: Console | None = None) -> dict:
    """Train and save the artifact; returns the training half of metrics.json."""
    import torch
    from transformers import AutoTokenizer, PrinterCallback, set_seed
    from trl import SFTTrainer

    from loramux.trainer.progress import RichProgress, loss_curve

    quiet()
    set_seed(cfg.training.seed)
    checkpoint = latest_checkpoint(cfg.output_dir) if resume else None
    if resume and checkpoint is None:
        (console or Console(stderr=True)).print(f"no complete checkpoint in {cfg.output_dir / CHECKPOINTS}; "
                                                "starting from step 0")
    tokenizer = AutoTokenizer.from_pretrained(cfg.base)
    loaded = METHODS[cfg.method](cfg)
    total = sum(p.numel() for p in loaded.model.parameters())
    threads = cfg.training.threads or (1 if total < 100e6 and not has_cuda() else None)
    if threads:
        torch.set_num_threads(threads)
    args = sft_args(cfg, total, loaded.trainer_args)
    with _env(TENSORBOARD_LOGGING_DIR=str(cfg.output_dir / "tensorboard")):
        trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=_dataset(splits.train),
                             eval_dataset=_dataset(splits.eval), processing_class=tokenizer,
                             peft_config=loaded.peft_config,
                             callbacks=[RichProgress(f"{cfg.method} {cfg.output_dir.name}", console)])
    trainer.remove_callback(PrinterCallback)  # the rich bar replaces transformers' printing
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
    artifact = cfg.output_dir / ("model" if cfg.method == "full" else "adapter")
    trainer.save_model(str(artifact))
    if cfg.method == "full":
        tokenizer.save_pretrained(artifact)
    metrics = {
        "method": cfg.method, "quantization": quantization_record(cfg), "steps": trainer.state.global_step,
        "resumed_from": checkpoint.name if checkpoint else None,
        "train_loss": result.training_loss, "eval_loss": eval_loss,
        "final_train_loss": next((e["loss"] for e in reversed(trainer.state.log_history) if "loss" in e), None),
        "tokens_per_s": tokens / wall if wall > 0 else 0.0, "train_tokens": tokens, "wall_time_s": wall,
        "peak_memory_mb": peak_memory_mb(), "trainable_params": trainable, "total_params": total,
        "trainable_pct": 100.0 * trainable / total, "loss_curve": loss_curve(trainer.state.log_history),
    }
    del trainer, loaded
    gc.collect()
    return metrics


def evaluate_run(cfg: TrainConfig, splits: Splits, artifact: Path, *, with_base: bool = True) -> dict:
    """Held-out score of the tuned model (and the base), and the forgetting score, all on fresh fp32 models."""
    from transformers import AutoTokenizer

    from loramux.trainer import evaluate as ev

    tokenizer = AutoTokenizer.from_pretrained(cfg.base)
    examples = splits.eval[:cfg.data.max_eval_examples]
    general = ev.general_texts(cfg.data.general)
    opts = {"metric": cfg.eval.metric, "max_new_tokens": cfg.eval.max_new_tokens, "batch_size": cfg.eval.batch_size}
    full = cfg.method == "full"
    tuned = ev.load_model(cfg.base, adapter=None if full else artifact, full=artifact if full else None)
    out = {"metric": cfg.eval.metric, "eval": ev.score(tuned, tokenizer, examples, **opts),
           "general_nll": ev.mean_nll(tuned, tokenizer, general)}
    del tuned
    if with_base:
        base = ev.load_model(cfg.base)
        out["base_eval"] = ev.score(base, tokenizer, examples, **opts)
        out["base_general_nll"] = ev.mean_nll(base, tokenizer, general)
        out["forgetting"] = out["general_nll"] - out["base_general_nll"]
        del base
    gc.collect()
    return out


def train(cfg: TrainConfig, *, resume: bool = False, with_base: bool = True,
          console: Console | None = None) -> TrainResult:
    """Fine-tune, save, evaluate; write metrics.json and loss.png into `cfg.output_dir`."""
    from loramux.trainer.progress import plot_loss

    if not (Path(cfg.base) / "config.json").is_file():
        raise InvalidRequest(f"base: no config.json in {cfg.base}", param="base")
    splits = load_splits(cfg.data.train, cfg.data.eval, eval_fraction=cfg.data.eval_fraction,
                         seed=cfg.training.seed)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    (cfg.output_dir / "config.json").write_text(cfg.model_dump_json(indent=2) + "\n")
    metrics = fit(cfg, splits, resume=resume, console=console)
    artifact = cfg.output_dir / ("model" if cfg.method == "full" else "adapter")
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
