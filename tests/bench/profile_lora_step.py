"""Where a step's time goes with LoRA on CPU: the profile behind bench_lora_throughput's ratios.

    .venv/bin/python tests/bench/profile_lora_step.py [--adapters 16] [--requests 16] [--max-tokens 64]

Each case runs in its own process with vLLM's engine in-process (no engine-core process), so
timers wrapped around its functions see every step: the model runner's `execute_model` (input
preparation and the forward), vLLM's per-step LoRA bookkeeping (`set_active_loras`, which
includes the punica wrapper's `update_metadata` and loramux's grouping), the LoRA ops
themselves (loramux's grouped ops, or vLLM's punica methods), and sampling. `--requests`
requests of `--max-tokens` greedy tokens go in together after a warm-up, so nearly every
step is a decode step of the whole batch. Prints ms per step for:

  LoRA off           the base alone, torch.compile on
  LoRA on, unused    base requests to a LoRA engine
  N adapters         one request per adapter, round robin, every adapter resident

each with loramux's grouped ops and with vLLM's own.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

console = Console(stderr=True)
PROMPT = "the cat sees the robot and a dog near the sea every morning my friend builds the red box"
# what each timer covers, in the order the table shows them
PARTS = {
    "wall": "step, wall",
    "execute": "model runner: inputs + forward",
    "bookkeeping": "of which LoRA bookkeeping",
    "lora": "of which LoRA ops",
    "sample": "sampling",
}


class Timers:
    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._open: dict[str, int] = defaultdict(int)  # re-entrant: count the outermost call only

    def wrap(self, owner, attr: str, part: str) -> None:
        fn = getattr(owner, attr)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if self._open[part]:
                return fn(*args, **kwargs)
            self._open[part] += 1
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total[part] += time.perf_counter() - started
                self.calls[part] += 1
                self._open[part] -= 1

        setattr(owner, attr, timed)

    def reset(self) -> None:
        self.total.clear()
        self.calls.clear()


def instrument(timers: Timers, ops: str) -> None:
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner
    from vllm.v1.worker.lora_model_runner_mixin import LoRAModelRunnerMixin

    timers.wrap(CPUModelRunner, "execute_model", "execute")
    timers.wrap(CPUModelRunner, "sample_tokens", "sample")
    timers.wrap(LoRAModelRunnerMixin, "set_active_loras", "bookkeeping")
    if ops == "grouped":  # the custom op's eager body runs these, also inside the compiled graph
        from loramux.server.engine import grouped_lora

        for name in ("lora_linear", "shrink", "expand"):
            timers.wrap(grouped_lora, name, "lora")
    else:  # torch.compile is off with vLLM's ops: the punica methods run eagerly
        from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

        for name in ("add_lora_linear", "add_lora_logits", "add_lora_embedding"):
            timers.wrap(PunicaWrapperCPU, name, "lora")


def child(case: dict) -> dict:
    """Run one case in this process; returns ms per step for each part."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["LORAMUX_LORA_OPS"] = case["ops"]
    from loramux.server.engine.vllm_engine import EngineConfig, prepare_process

    prepare_process(EngineConfig(base=Path(case["base"]), served_name="tiny"))
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    adapters = case["adapters"]
    lora = case["lora"]
    llm = LLM(model=case["base"], dtype="float32", enable_lora=lora, max_loras=max(len(adapters), 1),
              max_lora_rank=16, max_num_seqs=max(case["requests"], 16), seed=0)
    timers = Timers()
    instrument(timers, case["ops"])
    requests = [LoRARequest(f"a{i}", i + 1, path) for i, path in enumerate(adapters)]
    picks = [requests[k % len(requests)] if requests else None for k in range(case["requests"])]
    params = SamplingParams(max_tokens=case["max_tokens"], temperature=0, ignore_eos=True)
    prompts = [PROMPT] * case["requests"]
    llm.generate(prompts, params, lora_request=picks, use_tqdm=False)  # warm-up: loads every adapter
    timers.reset()
    started = time.perf_counter()
    llm.generate(prompts, params, lora_request=picks, use_tqdm=False)
    wall = time.perf_counter() - started
    steps = max(timers.calls["execute"], 1)
    timers.total["wall"] = wall
    out = {part: 1000 * timers.total[part] / steps for part in PARTS}
    out["steps"] = steps
    out["tok_s"] = case["requests"] * case["max_tokens"] / wall
    return out


def run_case(case: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(case)], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"case {case['name']} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, help="base model folder (default: build the tiny base)")
    p.add_argument("--adapters", type=int, default=16)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--ops", default="grouped,vllm")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    with tempfile.TemporaryDirectory(prefix="loramux-profile-") as tmp:
        from tests.bench.bench_lora_throughput import make_adapters
        from loramux.trainer.tiny_base import build_tiny

        base = args.base or build_tiny(Path(tmp) / "base", seed=0)
        paths = [str(p) for p in make_adapters(base, Path(tmp) / "adapters", args.adapters)]
        common = {"base": str(base), "requests": args.requests, "max_tokens": args.max_tokens}
        cases = [{"name": "LoRA off", "ops": "grouped", "lora": False, "adapters": []}]
        for ops in args.ops.split(","):
            cases += [{"name": f"LoRA on, unused ({ops})", "ops": ops, "lora": True, "adapters": []},
                      {"name": f"{args.adapters} adapters ({ops})", "ops": ops, "lora": True, "adapters": paths}]
        results = []
        for case in cases:
            console.print(f"profiling {case['name']}", highlight=False)
            results.append((case["name"], run_case(common | case)))
    table = Table(title=f"ms per step; {args.requests} requests x {args.max_tokens} tokens, decoded together")
    table.add_column("case")
    for part in PARTS.values():
        table.add_column(part, justify="right")
    table.add_column("steps", justify="right")
    table.add_column("tok/s", justify="right")
    for name, r in results:
        table.add_row(name, *[f"{r[part]:.2f}" for part in PARTS], str(r["steps"]), f"{r['tok_s']:.0f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
