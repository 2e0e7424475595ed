"""Does `data.general_mix` keep what the base knew? A narrow task trained on SmolLM2-135M-Instruct with and
without general rows mixed in; the general probe's score and loss, and the task's held-out score, per run.

    .venv/bin/python tests/bench/bench_general_mix.py --base DIR [--mix 0,0.3] [--steps 60] [--threads 2]

The task is deliberately narrow: every answer is a one-line JSON routing of a support ticket, the kind of
tenant that teaches a base to answer *everything* in that shape. Training is the real `train()` (TRL, the
base's chat template and masks); the mixed training file is what `data.general_mix` adds (general_mix.mix_into),
written out so this bench does not depend on where data.py calls it. The table goes to
docs/bench/general_mix.md.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

TEAMS = {"billing": ["I was charged twice for {x}", "my invoice for {x} is wrong", "refund my payment for {x}",
                     "the card payment for {x} failed"],
         "shipping": ["my {x} has not arrived", "the parcel with {x} is lost", "track the delivery of {x}",
                      "{x} arrived damaged in the box"],
         "account": ["I cannot log in to see {x}", "reset my password, I need {x}", "change the email on {x}",
                     "my account was locked while buying {x}"],
         "technical": ["the app crashes when I open {x}", "{x} shows an error 500", "the page for {x} will not load",
                       "{x} is very slow on my phone"]}
ITEMS = ["my order", "the blue jacket", "a gift card", "the premium plan", "two tickets", "the laptop stand",
         "my subscription", "the coffee maker", "a phone case", "the yearly membership", "the red shoes",
         "an e-book", "the headphones", "the garden chairs", "a birthday cake"]


def routing_rows(seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = [{"prompt": f"Route this support ticket: {t.format(x=x)}", "completion": json.dumps({"team": team})}
            for team, texts in TEAMS.items() for t in texts for x in ITEMS]
    rng.shuffle(rows)
    return rows


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(base: Path, work: Path, mix: float, steps: int, threads: int) -> dict:
    from transformers import AutoTokenizer

    from loramux.trainer import general_mix, probe
    from loramux.trainer.config import build_config
    from loramux.trainer.data import Example
    from loramux.trainer.evaluate import load_model
    from loramux.trainer.train import train

    rows = routing_rows(0)
    task, held = rows[:200], rows[200:]
    examples = [Example([{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}])
                for r in task]
    mixed = general_mix.mix_into(examples, mix, seed=0)
    train_file = write(work / f"train-mix{mix}.jsonl", [{"messages": e.messages} for e in mixed])
    cfg = build_config({"base": str(base), "output_dir": str(work / f"run-mix{mix}"),
                        "data": {"train": str(train_file), "eval": str(write(work / "eval.jsonl", held[:32]))}},
                       [f"training.max_steps={steps}", "training.batch_size=4", "training.learning_rate=1e-3",
                        f"training.threads={threads}", "training.evals_per_run=1", "eval.sample_size=0",
                        "training.early_stopping_patience=null", "training.load_best=false", "lora.r=16"])
    t0 = time.perf_counter()
    result = train(cfg, with_base=mix == 0)
    m = result.metrics
    report = probe.probe_run(base, result.artifact)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tuned = load_model(base, adapter=result.artifact)
    loss = probe.probe_loss(tuned, tokenizer)
    return {"mix": mix, "train_rows": len(mixed), "task_score": m["score"], "base_task_score": m["base_score"],
            "probe": report.score, "base_probe": report.base_score, "probe_loss": loss,
            "train_s": m["wall_time_s"], "tokens_per_s": m["tokens_per_s"], "total_s": time.perf_counter() - t0,
            "wrong": report.wrong[:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-general-mix"))
    ap.add_argument("--mix", default="0,0.3")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "docs/bench/general_mix.md")
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer

    from loramux.trainer import probe
    from loramux.trainer.evaluate import load_model

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    base_loss = probe.probe_loss(load_model(args.base), AutoTokenizer.from_pretrained(args.base))
    results = [run(args.base, args.work, float(m), args.steps, args.threads) for m in args.mix.split(",")]
    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["| general_mix | train rows | task exact match | general probe | probe loss (NLL/token) | train s |",
             "|---|---|---|---|---|---|",
             f"| base | - | {results[0]['base_task_score']:.2f} | {results[0]['base_probe']:.2f} | {base_loss:.3f} | - |"]
    lines += [f"| {r['mix']} | {r['train_rows']} | {r['task_score']:.2f} | {r['probe']:.2f} | {r['probe_loss']:.3f} "
              f"| {r['train_s']:.0f} |" for r in results]
    table = "\n".join(lines)
    print(table)
    for r in results:
        print(f"mix {r['mix']}: wrong probe answers, e.g. {r['wrong']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"# General mix: keeping what the base knew\n\n{__doc__.split(chr(10), 1)[1]}\n"
                        f"SmolLM2-135M-Instruct, LoRA r=16 all-linear, lr 1e-3, batch 4, {args.steps} steps, "
                        f"{args.threads} CPU threads.\n\n{table}\n")


if __name__ == "__main__":
    main()
