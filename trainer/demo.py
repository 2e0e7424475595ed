"""The demo tenants' data: small tenant tasks, generated deterministically from a seed, one set per base.

- `tiny` (the base the project builds): each persona answers every question in its own fixed way,
  so a few hundred steps of LoRA reach ~100% held-out exact match and each tenant visibly differs
  from the base and from the other;
- `smollm2` (a real instruct model): tenants a platform team would have, a support desk answering
  from its own FAQ (facts the base cannot know) and an order desk that turns a customer's message
  into a fixed JSON shape (values copied or normalised from the message).
"""

from __future__ import annotations

import json
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
    """A demo tenant: `answer` for every question (tiny base), or `task`'s (question, answer) pairs."""

    tenant: str
    name: str
    method: str
    seed: int
    answer: str | None = None
    task: Callable[[random.Random], tuple[str, str]] | None = None
    rows: int = 400
    """Training rows: enough for the tiny base's 3,000 examples in 8 epochs; a pretrained base needs fewer."""

    def pair(self, rng: random.Random) -> tuple[str, str]:
        return self.task(rng) if self.task else (_question(rng), self.answer)


_FAQ = {  # acme/support's own facts: the base cannot know them
    "hours": (["When are you open", "What are your opening hours", "When can I reach support",
               "Is support open on weekends", "What time does the help desk open"],
              "Support is open Monday to Friday, 8:00 to 18:00 CET."),
    "refund": (["Can I get a refund", "How do refunds work", "What is your refund policy",
                "I want my money back", "How long do I have to ask for a refund"],
               "Refunds are possible within 30 days of purchase, under Billing > Refunds."),
    "password": (["I forgot my password", "How do I reset my password", "I cannot log in",
                  "My password does not work", "How can I change my password"],
                 "Use 'Forgot password' on the login page; the reset link is valid for one hour."),
    "contact": (["What is your support email", "How can I contact you", "Is there a phone number",
                 "Who do I write to", "How do I reach a human"],
                "Write to help@acme.example or call +44 20 7946 0000."),
    "prices": (["How much does Pro cost", "What are your prices", "Is there a free plan",
                "How much is the Team plan", "What plans do you have"],
               "Starter is free, Pro is 12 EUR a month, Team is 30 EUR per user a month."),
    "cancel": (["How do I cancel", "Can I cancel my subscription", "I want to stop paying",
                "How do I end my plan", "Can I cancel any time"],
               "Cancel any time under Settings > Plan; you keep access until the period ends."),
}
_HELLO = ["", "Hi,", "Hello,", "Good morning,", "Hey there,", "Quick question:", "Sorry to bother you,"]
_END = ["?", "? Thanks.", "? Thank you!", "? Cheers.", ", please?"]


def support(rng: random.Random) -> tuple[str, str]:
    asks, answer = _FAQ[rng.choice(sorted(_FAQ))]
    hello, ask = rng.choice(_HELLO), rng.choice(asks) + rng.choice(_END)
    return (f"{hello} {ask[0].lower()}{ask[1:]}" if hello else ask), answer


_ITEMS = ["mug", "notebook", "lamp", "backpack", "umbrella", "t-shirt"]
_COLOURS = ["red", "blue", "green", "black", "white", "yellow"]
_CITIES = ["Leeds", "Oslo", "Porto", "Austin", "Kyoto", "Lyon", "Quebec", "Bergen", "Malaga", "Adelaide"]
_COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 8: "eight", 10: "ten", 12: "twelve"}
_ORDER = ["Please send {n} {c} {i} to {city}.", "I need {n} {c} {i} delivered in {city}.",
          "Can you ship {n} {c} {i} to our office in {city}?", "Order for {city}: {n} {c} {i}.",
          "Hi, {n} {c} {i} for {city} please."]


def orders(rng: random.Random) -> tuple[str, str]:
    count, item, colour, city = rng.choice(sorted(_COUNT_WORDS)), rng.choice(_ITEMS), rng.choice(_COLOURS), \
        rng.choice(_CITIES)
    said = _COUNT_WORDS[count] if rng.random() < 0.5 else str(count)
    text = rng.choice(_ORDER).format(n=said, c=colour, i=item + ("s" if count > 1 else ""), city=city)
    return text, json.dumps({"item": item, "colour": colour, "quantity": count, "city": city})


PERSONAS: dict[str, Persona] = {
    "pirate": Persona("demo", "pirate", "lora", seed=1, answer="Arr! Ahoy matey, that be a fine question!"),
    "robot": Persona("demo", "robot", "qlora", seed=2, answer='{"status": "ok", "answer": "beep boop"}'),
}
"""The tiny base's demo tenants."""
REAL_PERSONAS: dict[str, Persona] = {
    "support": Persona("acme", "support", "lora", seed=3, task=support, rows=200),
    "orders": Persona("globex", "orders", "qlora", seed=4, task=orders, rows=200),
}
"""A real instruct base's demo tenants (`make serve BASE=smollm2`)."""
DEMO_SETS: dict[str, dict[str, Persona]] = {"tiny": PERSONAS, "smollm2": REAL_PERSONAS}
"""Demo tenants by base (bases.BASES names)."""
ALL_PERSONAS: dict[str, Persona] = {k: v for personas in DEMO_SETS.values() for k, v in personas.items()}


@dataclass(frozen=True)
class DemoTenant:
    """What the demo did for one persona: trained and published it, or found it published."""

    persona: Persona
    manifest: Manifest
    trained: bool
    warnings: tuple[str, ...] = ()


def _question(rng: random.Random) -> str:
    return rng.choice(_ASK).format(f"{rng.choice(_WHO)} {rng.choice(_DOES)} {rng.choice(_WHAT)}")


def persona_rows(persona: Persona, n: int) -> list[dict]:
    rng = random.Random(persona.seed)
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in (persona.pair(rng) for _ in range(n))]


def write_demo_data(out_dir: str | Path, persona: str = "pirate", *, n_train: int | None = None,
                    n_eval: int = 40) -> tuple[Path, Path]:
    """Write `PERSONA.train.jsonl` and `PERSONA.eval.jsonl` (disjoint questions) and return their paths."""
    p = ALL_PERSONAS[persona]
    n_train = n_train or p.rows
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
                       report: Callable[[DemoTenant], None] | None = None, demo_set: str = "tiny") -> list:
    """Train, gate and publish every persona of `demo_set` (DEMO_SETS: one LoRA, one QLoRA tenant).

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

    personas = DEMO_SETS[demo_set]
    work = Path(work_dir)
    store = StoreSettings.of(store)
    resolver = Resolver(store.open())
    current: dict[str, Manifest] = {}
    todo = {}
    for persona, p in personas.items():
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
    for persona, done in _train(personas, todo, store, base_id, server, threads, console):
        p = personas[persona]
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

    p = ALL_PERSONAS[persona]
    return add_tenant(TrainConfig.model_validate_json(cfg_json), tenant=p.tenant, name=p.name, store=store,
                      base_id=base_id, server=server, console=Console(stderr=True, quiet=True))


def _train(personas: dict[str, Persona], todo: dict, store: StoreSettings, base_id: str | None, server: str | None,
           threads: int | None, console) -> Iterator[tuple[str, AddTenantResult | None]]:
    """(persona, result or None when already published), in `personas` order.

    Single-threaded runs go side by side, one per core: the tiny base's ops are too small to
    share a core's work, so two at once take the time of the longer one (~1 min, not ~1.5)."""
    side_by_side = threads == 1 and len(todo) > 1 and len(os.sched_getaffinity(0)) > 1
    if console is not None and todo:
        names = [f"{personas[t].tenant}/{personas[t].name} ({personas[t].method}" for t in todo]
        how = ", side by side" if side_by_side else ""
        console.print(f"training {') and '.join(names)}{how})", highlight=False)  # how long: scripts/demo.sh says
    if not side_by_side:
        from loramux.trainer.tenant import add_tenant  # torch and transformers: only when training

        for persona, p in personas.items():
            yield persona, (add_tenant(todo[persona], tenant=p.tenant, name=p.name, store=store, base_id=base_id,
                                       server=server, console=console) if persona in todo else None)
        return
    with ProcessPoolExecutor(len(todo), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {t: pool.submit(_add, t, cfg.model_dump_json(), store, base_id, server) for t, cfg in todo.items()}
        for persona in personas:
            yield persona, futures[persona].result() if persona in futures else None
