"""The default recipes on a real base: three tasks they were not tuned on, LoRA and QLoRA, through the CLI.

    .venv/bin/python tests/bench/bench_real_base_tasks.py [--base DIR] [--tasks triage,booking,extract]
        [--methods lora,qlora] [--rows 300] [--held 50] [--out docs/bench/real_base_tasks.md]

Each row is one `loramux trainer add-tenant` exactly as a user runs it: the shipped recipe for the
method, the tenant's train and held-out files, nothing else (rate, rank and length come from the
base's size and the data; evaluation while training, early stopping, best checkpoint). The tasks are
tests/trainer/real_tasks.py (a chat task, a multi-turn chat task, a prompt/completion task), the base
SmolLM2-135M-Instruct imported by `loramux base get smollm2` (cached, tests/real_base.py) unless
--base is given. Columns: held-out exact match of the base and the adapter, the general probe (50
questions the base answers) before and after, the run's plan (epochs, steps, tokens), training
tokens/s and wall time, and the whole command's wall time (training, evaluation, probe, publish).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORMATS = {"triage": "chat", "booking": "chat, 2 user turns", "extract": "prompt/completion"}


def add_tenant(base: Path, work: Path, task: str, method: str, rows: int, held: int) -> dict:
    from real_tasks import make_real_task

    from loramux.trainer.data import write_jsonl

    train_rows, held_rows = make_real_task(task, n_train=rows, n_eval=held)
    data = write_jsonl(work / f"{task}.train.jsonl", train_rows)
    evals = write_jsonl(work / f"{task}.eval.jsonl", held_rows)
    run = work / "runs" / f"{task}-{method}"
    if (run / "bench.json").is_file():  # done by an earlier call with this --work: rerun only what is missing
        return json.loads((run / "metrics.json").read_text()) | json.loads((run / "bench.json").read_text())
    argv = [sys.executable, "-m", "loramux.cli", "trainer", "add-tenant", "--tenant", "bench", "--name",
            f"{task}-{method}", "--data", str(data), "--eval", str(evals), "--base", str(base), "--method", method,
            "--output-dir", str(run), "--registry", str(work / "registry")]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=None, text=True)  # progress shows
    wall = time.perf_counter() - start
    if not (run / "metrics.json").is_file():
        raise SystemExit(f"{task} {method}: add-tenant failed ({done.returncode}) without metrics:\n{done.stdout}")
    record = {"command_s": wall, "published": done.returncode == 0}
    (run / "bench.json").write_text(json.dumps(record))
    return json.loads((run / "metrics.json").read_text()) | record


def markdown(rows: list[tuple[str, str, dict]], header: str) -> str:
    cols = ["task", "format", "method", "exact match base → adapter", "general probe base → adapter",
            "lr", "r", "epochs", "steps", "train tokens", "tokens/s", "train s", "command s", "published"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for task, method, m in rows:
        plan = m.get("plan") or {}
        probe = (f"{m['base_general_probe']:.2f} → {m['general_probe']:.2f}" if m.get("general_probe") is not None
                 else "not measured")
        cells = [task, FORMATS[task], method, f"{m['base_score']:.2f} → {m['score']:.2f}", probe,
                 f"{m['learning_rate']:g}", str(m["lora_r"]), f"{plan.get('epochs', 0):.2g}", str(m["steps"]),
                 f"{m['train_tokens']:,}", f"{m['tokens_per_s']:,.0f}", f"{m['wall_time_s']:.0f}",
                 f"{m['command_s']:.0f}", "yes" if m["published"] else "no (gate)"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=None, help="base folder; default: the cached SmolLM2 import")
    parser.add_argument("--tasks", default="triage,booking,extract")
    parser.add_argument("--methods", default="lora,qlora")
    parser.add_argument("--rows", type=int, default=300, help="training rows per task")
    parser.add_argument("--held", type=int, default=50, help="held-out rows per task")
    parser.add_argument("--work", type=Path, default=None, help="folder for data, runs and the registry")
    parser.add_argument("--out", type=Path, default=None, help="write the table as markdown here too")
    opts = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    from loramux.adapters.hardware import cpu_features

    sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "trainer")]  # tests.real_base; real_tasks and its tasks
    if opts.base is None:
        from tests.real_base import smollm2_folder

        opts.base = smollm2_folder()
    work = opts.work or Path(tempfile.mkdtemp(prefix="bench-real-tasks-"))
    work.mkdir(parents=True, exist_ok=True)
    done = []
    for task in opts.tasks.split(","):
        for method in opts.methods.split(","):
            print(f"== {task} {method}", file=sys.stderr, flush=True)
            done.append((task, method, add_tenant(opts.base, work, task, method, opts.rows, opts.held)))
    header = (f"`{opts.base.name}`, {opts.rows} training rows and {opts.held} held-out rows per task, "
              f"CPU features: {', '.join(sorted(cpu_features())) or 'none of note'}")
    table = Table(title=header)
    md = markdown(done, header)
    names = md.splitlines()[2].strip("| ").split(" | ")
    for c in names:
        table.add_column(c)
    for line in md.splitlines()[4:]:
        table.add_row(*line.strip("| ").split(" | "))
    Console().print(table)
    if opts.out:
        opts.out.write_text(md)


if __name__ == "__main__":
    main()
