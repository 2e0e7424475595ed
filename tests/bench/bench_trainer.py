"""trainer vs a plain TRL SFTTrainer + PEFT script on the tiny base and the same persona data.

    .venv/bin/python tests/bench/bench_trainer.py [--threads 1] [--out DIR]

Rows (each run in its own process, so peak memory is its own):
- `trainer lora` / `trainer qlora`: the shipped recipes (packing, completion-only loss, no
  gradient checkpointing on small bases);
- `TRL defaults`: SFTConfig() as TRL ships it (lr 2e-5, batch 8, no packing, gradient
  checkpointing on) with the same LoRA config (r=8, alpha=16, all-linear), stopped after
  `--trl-default-steps` of its 3 epochs (it runs ~20x slower here; the rate is what we compare);
- `TRL defaults, trainer's lr/steps`: the same, with trainer's learning rate, schedule and step
  count, to separate speed from hyperparameters.
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


def run_trainer(base: str, train: str, held: str, out: str, method: str, threads: int) -> dict:
    from loramux.trainer.config import load_config, recipe_path
    from loramux.trainer.train import train as run

    cfg = load_config(recipe_path(method), [f"base={base}", f"data.train={train}", f"data.eval={held}",
                                            f"output_dir={out}", f"training.threads={threads}"])
    m = run(cfg, with_base=False).metrics
    return {"tokens_per_s": m["tokens_per_s"], "peak_memory_mb": m["peak_memory_mb"], "score": m["score"],
            "wall_s": m["wall_time_s"], "steps": m["steps"]}


def run_plain_trl(base: str, train: str, held: str, out: str, threads: int, same_hparams: bool,
                  default_steps: int = -1) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from loramux.trainer import evaluate as ev
    from loramux.trainer.data import read_jsonl
    from loramux.trainer.train import peak_memory_mb

    torch.set_num_threads(threads)
    extra = {"learning_rate": 3e-3, "lr_scheduler_type": "cosine", "warmup_steps": 0.05, "max_steps": 300,
             "per_device_train_batch_size": 1} if same_hparams else {"max_steps": default_steps}
    args = SFTConfig(output_dir=out, report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True,
                     include_num_input_tokens_seen="non_padding", **extra)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), args=args,
                         train_dataset=load_dataset("json", data_files=train, split="train"),
                         processing_class=AutoTokenizer.from_pretrained(base),
                         peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    tokens, steps = trainer.state.num_input_tokens_seen, trainer.state.global_step
    peak = peak_memory_mb()
    trainer.save_model(f"{out}/adapter")
    tok = AutoTokenizer.from_pretrained(base)
    s = ev.score(ev.load_model(Path(base), adapter=Path(f"{out}/adapter")), tok, read_jsonl(held))
    return {"tokens_per_s": tokens / wall, "peak_memory_mb": peak, "score": s["exact_match"], "wall_s": wall,
            "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for every row")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--trl-default-steps", type=int, default=20,
                        help="steps of the TRL-defaults row (-1: its full 3 epochs, ~150 steps)")
    opts = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    from loramux.trainer.tiny_base import build_tiny
    from loramux.trainer.demo import write_demo_data

    root = opts.out or Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    base = root / "base"
    if not (base / "config.json").is_file():
        build_tiny(base, seed=0)
    train, held = write_demo_data(root / "data", "pirate")
    jobs = {
        "trainer lora": (run_trainer, (str(base), str(train), str(held), str(root / "t-lora"), "lora", opts.threads)),
        "trainer qlora": (run_trainer, (str(base), str(train), str(held), str(root / "t-qlora"), "qlora",
                                        opts.threads)),
        "TRL defaults": (run_plain_trl, (str(base), str(train), str(held), str(root / "trl"), opts.threads, False,
                                        opts.trl_default_steps)),
        "TRL defaults, trainer's lr/steps": (run_plain_trl, (str(base), str(train), str(held),
                                                             str(root / "trl-same"), opts.threads, True)),
    }
    table = Table(title=f"tiny base, pirate persona, {opts.threads} thread(s)")
    for c in ("run", "steps", "tokens/s", "peak MiB", "wall s", "exact match"):
        table.add_column(c, justify="left" if c == "run" else "right")
    ctx = multiprocessing.get_context("spawn")
    results = {}
    for name, (fn, args) in jobs.items():
        print(f"running {name} ...", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            r = results[name] = pool.submit(fn, *args).result()
        table.add_row(name, str(r["steps"]), f"{r['tokens_per_s']:,.0f}", f"{r['peak_memory_mb']:,.0f}",
                      f"{r['wall_s']:.1f}", f"{r['score']:.3f}")
    Console().print(table)
    ours, plain = results["trainer lora"], results["TRL defaults"]
    ok = ours["tokens_per_s"] >= plain["tokens_per_s"] and ours["score"] >= plain["score"]
    print(f"trainer lora vs TRL defaults: {ours['tokens_per_s'] / plain['tokens_per_s']:.2f}x tokens/s, "
          f"exact match {ours['score']:.3f} vs {plain['score']:.3f}: {'OK' if ok else 'SLOWER OR WORSE'}")


if __name__ == "__main__":
    main()
