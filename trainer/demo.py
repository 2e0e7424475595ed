"""The demo tenants' data: small persona tasks, generated deterministically from a seed.

Each persona answers every question in its own fixed way, so a few hundred steps of
LoRA on the tiny base reach ~100% held-out exact match and the demo shows each tenant
answering differently from the base and from each other.
"""

from __future__ import annotations

import multiprocessing
import os
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loramux.trainer.data import write_jsonl

if TYPE_CHECKING:
    from loramux.adapters.manifest import Manifest
    from loramux.adapters.settings import StoreSettings
    from loramux.trainer.tenant import AddTenantResult

_WHO = ["the cat", "a dog", "my friend", "the teacher", "our team", "the robot", "a farmer", "the river",
        "a child", "the bird", "the server", "a tenant", "the model", "your order", "a student"]
_DOES = ["sees", "likes", "builds", "finds", "carries", "watches", "needs", "opens", "helps", "writes",
         "reads", "sends", "keeps"]
_WHAT = ["a red box", "the green door", "three apples", "the long road", "a small boat", "the blue sky",
         "the letter", "a song", "the report", "an invoice", "the ticket", "a refund", "the account"]
_ASK = ["What is {}?", "Why does {} happen?", "Tell me about {}.", "Can you explain {}?", "Where is {}?",
        "Is it true that {}?", "How often {}?"]


@dataclass(frozen=True)
class Persona:
    """A tenant whose adapter always answers with `answer` (and a system prompt-free user turn)."""

    tenant: str
    name: str
    method: str
    answer: str
    seed: int


PERSONAS: dict[str, Persona] = {
    "pirate": Persona("demo", "pirate", "lora", "Arr! Ahoy matey, that be a fine question!", seed=1),
    "robot": Persona("demo", "robot", "qlora", '{"status": "ok", "answer": "beep boop"}', seed=2),
}


@dataclass(frozen=True)
class DemoTenant:
    """What the demo did for one persona: trained and published it, or found it published."""

    persona: Persona
    manifest: Manifest
    trained: bool
    warnings: tuple[str, ...] = ()


def questions(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(_ASK).format(f"{rng.choice(_WHO)} {rng.choice(_DOES)} {rng.choice(_WHAT)}")
            for _ in range(n)]


def persona_rows(persona: Persona, n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": persona.answer}]}
            for q in questions(persona.seed, n)]


def write_demo_data(out_dir: str | Path, persona: str = "pirate", *, n_train: int = 400,
                    n_eval: int = 40) -> tuple[Path, Path]:
    """Write `PERSONA.train.jsonl` and `PERSONA.eval.jsonl` (disjoint questions) and return their paths."""
    p = PERSONAS[persona]
    rows = persona_rows(p, n_train + 4 * n_eval)
    seen, train, held = set(), [], []
    for r in rows:
        q = r["messages"][0]["content"]
        if len(train) < n_train and q not in seen:
            train.append(r)
            seen.add(q)
        elif q not in seen and len(held) < n_eval:
            held.append(r)
            seen.add(q)
    out = Path(out_dir)
    return write_jsonl(out / f"{persona}.train.jsonl", train), write_jsonl(out / f"{persona}.eval.jsonl", held)


def train_demo_tenants(base: str | Path, store: StoreSettings | str, work_dir: str | Path, *, threads: int | None = 1,
                       server: str | None = None, base_id: str | None = None, console=None,
                       report: Callable[[DemoTenant], None] | None = None) -> list:
    """Train, gate and publish every demo persona (LoRA pirate, QLoRA robot); ~1 min each on a CPU.

    Idempotent: a persona whose `prod` version was trained on the same data is skipped, without
    importing torch. `base_id` is the base's served id recorded in the manifests (default: its
    folder name). `report` hears about each persona as it is done (the CLI prints one line).
    Returns the manifests now behind `demo/PERSONA`.
    """
    from loramux.adapters.errors import NotFound
    from loramux.adapters.registry import Resolver
    from loramux.adapters.settings import StoreSettings
    from loramux.trainer.config import load_config, recipe_path
    from loramux.trainer.data import file_hash

    work = Path(work_dir)
    store = StoreSettings.of(store)
    resolver = Resolver(store.open())
    current: dict[str, Manifest] = {}
    todo = {}
    for persona, p in PERSONAS.items():
        train, held = write_demo_data(work / "data", persona)
        try:
            found = resolver.resolve(f"{p.tenant}/{p.name}").manifest
        except NotFound:
            found = None
        if found is not None and found.data_hash == file_hash([train, held]):
            current[persona] = found
            continue
        todo[persona] = load_config(recipe_path(p.method), [
            f"base={base}", f"data.train={train}", f"data.eval={held}", f"output_dir={work / 'runs' / persona}",
            *([f"training.threads={threads}"] if threads else [])])

    manifests = []
    for persona, done in _train(todo, store, base_id, server, threads, console):
        p = PERSONAS[persona]
        trained = done is not None
        manifest = done.manifest if trained else current[persona]
        manifests.append(manifest)
        if report is not None:
            report(DemoTenant(p, manifest, trained, tuple(done.warnings) if trained else ()))
    return manifests


def _add(persona: str, cfg_json: str, store: StoreSettings, base_id: str | None, server: str | None):
    """One persona's add-tenant in a spawned process, quiet: two live progress bars would garble a terminal."""
    from rich.console import Console

    from loramux.trainer.config import TrainConfig
    from loramux.trainer.tenant import add_tenant

    p = PERSONAS[persona]
    return add_tenant(TrainConfig.model_validate_json(cfg_json), tenant=p.tenant, name=p.name, store=store,
                      base_id=base_id, server=server, console=Console(stderr=True, quiet=True))


def _train(todo: dict, store: StoreSettings, base_id: str | None, server: str | None, threads: int | None,
           console) -> Iterator[tuple[str, AddTenantResult | None]]:
    """(persona, result or None when already published), in PERSONAS order.

    Single-threaded runs go side by side, one per core: the tiny base's ops are too small to
    share a core's work, so two at once take the time of the longer one (~1 min, not ~1.5)."""
    side_by_side = threads == 1 and len(todo) > 1 and len(os.sched_getaffinity(0)) > 1
    if console is not None and todo:
        names = [f"{PERSONAS[t].tenant}/{t} ({PERSONAS[t].method}" for t in todo]
        how = ", side by side" if side_by_side else ""
        console.print(f"training {') and '.join(names)}, about a minute on a CPU{how})", highlight=False)
    if not side_by_side:
        from loramux.trainer.tenant import add_tenant  # torch and transformers: only when training

        for persona in PERSONAS:
            p = PERSONAS[persona]
            yield persona, (add_tenant(todo[persona], tenant=p.tenant, name=p.name, store=store, base_id=base_id,
                                       server=server, console=console) if persona in todo else None)
        return
    with ProcessPoolExecutor(len(todo), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {t: pool.submit(_add, t, cfg.model_dump_json(), store, base_id, server) for t, cfg in todo.items()}
        for persona in PERSONAS:
            yield persona, futures[persona].result() if persona in futures else None
