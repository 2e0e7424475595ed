"""`data.general_mix`: general rows mixed into a tenant's training data, so the adapter keeps what the base knew.

A narrow task trained alone pulls every answer toward the task's format (an adapter that routes tickets
starts routing "What is the capital of France?"). Replaying general conversations alongside it is the
usual cure (rehearsal). The rows are the shipped `probes/general_mix.jsonl`: general questions answered by
SmolLM2-135M-Instruct itself (self-distillation: the base's own answers are what "keep what the base knew"
means). They are other questions than the probe's (`probes/general.jsonl`), so the probe stays held out.
On another base they still teach "answer general questions plainly", though not in that base's own words.

Rows are chat conversations (data.Example), masked and templated like the tenant's own. They go into the
training split only: never into the eval split, whose score is the tenant's gate.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from loramux.trainer.data import Example

GENERAL_MIX = Path(__file__).parent / "probes" / "general_mix.jsonl"


def general_conversations(path: str | Path = GENERAL_MIX) -> list[list[dict]]:
    """The shipped general conversations (user question, assistant answer)."""
    return [json.loads(line)["messages"] for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip()]


def mix_count(n_task: int, fraction: float) -> int:
    """General rows to add so they are `fraction` of the mixed training set (0 <= fraction < 1)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.general_mix must be in [0, 1), got {fraction}")
    return round(n_task * fraction / (1.0 - fraction))


def general_examples(n_task: int, fraction: float, *, seed: int = 0,
                     path: str | Path = GENERAL_MIX) -> list[Example]:
    """Extra training examples: `mix_count(n_task, fraction)` general conversations, shuffled by `seed`;
    the shipped set is cycled (each pass reshuffled) when more are needed than it holds."""
    need = mix_count(n_task, fraction)
    pool = general_conversations(path)
    rng = random.Random(seed)
    out: list[Example] = []
    while len(out) < need:
        order = list(range(len(pool)))
        rng.shuffle(order)
        out += [Example([dict(m) for m in pool[i]]) for i in order[:need - len(out)]]
    return out


def mix_into(train: list[Example], fraction: float, *, seed: int = 0) -> list[Example]:
    """`train` with general examples added and the whole shuffled (seeded): the call data.load_splits needs."""
    if not fraction:
        return train
    mixed = list(train) + general_examples(len(train), fraction, seed=seed)
    random.Random(seed).shuffle(mixed)
    return mixed
