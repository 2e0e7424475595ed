"""trainer vs a plain TRL SFTTrainer + PEFT script on the tiny base and the same task data.

    .venv/bin/python tests/bench/bench_trainer.py [--threads 1] [--steps 300] [--out DIR]

Data: the `intents` task of tests/trainer/tasks.py (240 training rows, 40 held out). Rows (each
run in its own process, so peak memory is its own):
- defaults vs defaults:
  - `trainer lora|qlora, defaults`: the shipped recipes as a user runs them (length from the data,
    evaluation while training, early stopping, best checkpoint);
  - `plain TRL, TRL defaults`: SFTConfig() as TRL ships it (lr 2e-5, batch 8, no packing, 3 epochs)
    with the same LoRA (r=16, alpha=32, all-linear), stopped after `--trl-default-steps` (it is
    ~20x slower here; the rate is what we compare, its score is that of a cut-short run);
- same work: `trainer lora, N steps` (one evaluation, at the end) vs `plain TRL, same settings, N
  steps`: same data, threads, packing, max_length, completion-only loss, rate, schedule and steps,
  and trainer's fp32 on CPU without gradient checkpointing (TRL's defaults turn on bf16 autocast,
  ~10x slower on CPUs, and checkpointing).
tokens/s counts non-padding tokens for every row; the score is held-out exact match of the
saved adapter on a fresh fp32 base (the same evaluation code for every row).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

LORA = {"r": 16, "lora_alpha": 32, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}


def run_trainer(base: str, train: str, held: str, out: str, method: str, threads: int, steps: int = 0) -> dict:
    from loramux.trainer.config import load_config, recipe_path
    from loramux.trainer.train import train as run

    fixed = [f"training.max_steps={steps}", "training.evals_per_run=1", "training.early_stopping_patience=null",
             "training.load_best=false"] if steps else []
    cfg = load_config(recipe_path(method), [f"base={base}", f"data.train={train}", f"data.eval={held}",
                                            f"output_dir={out}", f"training.threads={threads}", *fixed])
    m = run(cfg, with_base=False).metrics
    return {"tokens_per_s": m["tokens_per_s"], "peak_memory_mb": m["peak_memory_mb"], "score": m["score"],
            "wall_s": m["wall_time_s"], "steps": m["steps"]}


def run_plain_trl(base: str, train: str, held: str, out: str, threads: int, same_as_trainer: bool,
                  steps: int) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from loramux.trainer import evaluate as ev
    from loramux.trainer.data import read_jsonl
    from loramux.trainer.train import peak_memory_mb

    torch.set_num_threads(threads)
    extra = {"learning_rate": 3e-3, "lr_scheduler_type": "cosine", "warmup_steps": 0.05,
             "per_device_train_batch_size": 1, "packing": True, "max_length": 256,
             "assistant_only_loss": True, "bf16": False, "gradient_checkpointing": False} if same_as_trainer else {}
    args = SFTConfig(output_dir=out, report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True,
                     include_num_input_tokens_seen="non_padding", max_steps=steps, **extra)
    rows = [{"messages": e.messages} for e in read_jsonl(train)]  # the same chat rows trainer trains on
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(base),
                         peft_config=LoraConfig(**LORA))
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    tokens, done = trainer.state.num_input_tokens_seen, trainer.state.global_step
    peak = peak_memory_mb()
    trainer.save_model(f"{out}/adapter")
    tok = AutoTokenizer.from_pretrained(base)
    s = ev.score(ev.load_model(Path(base), adapter=Path(f"{out}/adapter")), tok, read_jsonl(held))
    return {"tokens_per_s": tokens / wall, "peak_memory_mb": peak, "score": s["exact_match"], "wall_s": wall,
            "steps": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for every row")
    parser.add_argument("--steps", type=int, default=300, help="steps of the same-work rows")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rows", default="", help="run only the rows whose names contain this text")
    parser.add_argument("--trl-default-steps", type=int, default=20,
                        help="steps of the TRL-defaults row (-1: its full 3 epochs, ~90 steps)")
    opts = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    sys.path.insert(0, str(Path(__file__).parents[1] / "trainer"))
    from tasks import make_task

    from loramux.trainer.data import write_jsonl
    from loramux.trainer.tiny_base import build_tiny

    root = opts.out or Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    base = root / "base"
    if not (base / "config.json").is_file():
        build_tiny(base, seed=0)
    rows, held_rows = make_task("intents", n_train=240, n_eval=40)
    train, held = write_jsonl(root / "data" / "train.jsonl", rows), write_jsonl(root / "data" / "eval.jsonl", held_rows)
    d = (str(base), str(train), str(held))
    n, t = opts.steps, opts.threads
    jobs = {
        "trainer lora, defaults": (run_trainer, (*d, str(root / "t-lora"), "lora", t)),
        "trainer qlora, defaults": (run_trainer, (*d, str(root / "t-qlora"), "qlora", t)),
        "plain TRL, TRL defaults": (run_plain_trl, (*d, str(root / "trl"), t, False, opts.trl_default_steps)),
        f"trainer lora, {n} steps": (run_trainer, (*d, str(root / "t-fixed"), "lora", t, n)),
        f"plain TRL, same settings, {n} steps": (run_plain_trl, (*d, str(root / "trl-same"), t, True, n)),
    }
    table = Table(title=f"tiny base, intents task (240 rows), {t} thread(s)")
    for c in ("run", "steps", "tokens/s", "peak MiB", "wall s", "exact match"):
        table.add_column(c, justify="left" if c == "run" else "right")
    ctx = multiprocessing.get_context("spawn")
    results = {}
    for name, (fn, args) in jobs.items():
        if opts.rows not in name:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            r = results[name] = pool.submit(fn, *args).result()
        table.add_row(name, str(r["steps"]), f"{r['tokens_per_s']:,.0f}", f"{r['peak_memory_mb']:,.0f}",
                      f"{r['wall_s']:.1f}", f"{r['score']:.3f}")
    Console().print(table)
    if len(results) < len(jobs):
        return
    ours, plain = results[f"trainer lora, {n} steps"], results[f"plain TRL, same settings, {n} steps"]
    print(f"same work: trainer {ours['tokens_per_s'] / plain['tokens_per_s']:.2f}x the plain script's tokens/s; "
          f"defaults: trainer {results['trainer lora, defaults']['score']:.3f} vs TRL defaults "
          f"{results['plain TRL, TRL defaults']['score']:.3f} exact match")


if __name__ == "__main__":
    main()
