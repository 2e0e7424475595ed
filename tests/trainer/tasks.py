"""Tasks the default recipes were not tuned on, generated from a seed with words the demo never uses.

The words that decide the answer and the replies are words the tiny base's pretraining corpus
has but the demo personas never use (weather, joke, river...), as a tenant's words are words a
real base already knows; openers, faults and fillers are words it never saw. Each generator returns (train rows, held-out rows) in one
of the formats tenants bring;
held-out prompts never occur in the training rows, so a model must generalise from the
pattern, not recall a line. Every answer is a function of the prompt, so 100% is reachable:
- `intents`: support requests in many phrasings; one fixed reply per intent (chat format);
- `multiturn`: the user names a place, the assistant asks, the user describes the fault;
  the reply depends on the place from the FIRST turn (chat format, three prior turns);
- `middle`: alpaca {instruction, input, output}; the output depends on one word in the
  middle of a long input, with filler words before and after it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

_OPENERS = ["hi there", "hello", "good evening", "hey", "greetings", "quick one", "sorry to bother you",
            "excuse me", "urgent", "please assist"]
_CLOSERS = ["thanks", "cheers", "many thanks", "appreciated", "asap please", "if possible", "kind regards", ""]

# intent -> (phrasings of the request, the one reply)
INTENTS: dict[str, tuple[list[str], str]] = {
    "weather": (["how is the weather", "what is the weather like", "weather report please",
                 "will the weather be nice", "is the weather bad", "tell me about the weather"],
                "Rain comes at night near the sea."),
    "time": (["what time is it", "do you know the time", "the time please", "what is the time now",
              "check the time for me", "time check"],
             "It is before lunch on monday."),
    "joke": (["tell me a joke", "a joke please", "do you know a joke", "make me laugh with a joke",
              "I need a joke", "got any joke"],
             "The old man follows the river slowly."),
}

# place named in the first turn -> the reply to the third
GADGETS = {"house": "Fill it with some water.", "park": "Try again on monday.",
           "school": "Move it slowly at night."}
_FAULTS = ["weird noise", "stopped working", "keeps flashing", "will not start", "acting strange", "broke",
           "very slow", "smells odd"]
_NAMING = ["My {} has a problem.", "Help with my {}.", "About my {}.", "My {} again."]

# middle word -> output; filler words never decide the answer
FLAVOURS = {"weather": "the sky", "city": "the road", "river": "a boat"}
_FILLER = ["purple", "gentle", "marble", "window", "pencil", "velvet", "harbor", "candle", "meadow", "copper",
           "silver", "puzzle", "ladder", "jacket", "pillow", "garden", "rocket", "violin", "basket", "tunnel",
           "zebra", "quartz", "mitten", "lantern"]
_INSTRUCTIONS = ["Group of the middle word?", "Classify the middle word.", "Which group?"]


def _chat(*turns: str) -> dict:
    roles = ["user", "assistant"] * len(turns)
    return {"messages": [{"role": r, "content": t} for r, t in zip(roles, turns, strict=False)]}


def intents(rng: random.Random) -> tuple[dict, str]:
    name = rng.choice(sorted(INTENTS))
    phrasings, reply = INTENTS[name]
    text = f"{rng.choice(_OPENERS)}, {rng.choice(phrasings)}. {rng.choice(_CLOSERS)}".strip()
    return _chat(text, reply), text


def multiturn(rng: random.Random) -> tuple[dict, str]:
    gadget = rng.choice(sorted(GADGETS))
    first = rng.choice(_NAMING).format(gadget)
    fault = f"{rng.choice(_OPENERS).capitalize()}, {rng.choice(_FAULTS)}."
    return _chat(first, "What is wrong?", fault, GADGETS[gadget]), f"{first}|{fault}"


def middle(rng: random.Random) -> tuple[dict, str]:
    word = rng.choice(sorted(FLAVOURS))
    before, after = rng.sample(_FILLER, 3), rng.sample(_FILLER, 3)
    text = " ".join(before + [word] + after)
    row = {"instruction": rng.choice(_INSTRUCTIONS), "input": text, "output": FLAVOURS[word]}
    return row, f"{row['instruction']}|{text}"


TASKS: dict[str, Callable[[random.Random], tuple[dict, str]]] = {
    "intents": intents, "multiturn": multiturn, "middle": middle}


def make_task(name: str, *, n_train: int, n_eval: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """`n_train` rows and `n_eval` held-out rows whose prompts are not among the training prompts."""
    return split(TASKS[name], name, n_train=n_train, n_eval=n_eval, seed=seed)


def split(generator: Callable[[random.Random], tuple[dict, str]], name: str, *, n_train: int, n_eval: int,
          seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Rows from `generator` (row, prompt key), seeded by name and seed; held-out keys are unseen in training."""
    rng = random.Random(f"{name}-{seed}")
    train, held, seen = [], [], set()
    for _ in range(50 * (n_train + n_eval)):
        row, key = generator(rng)
        if len(train) < n_train:
            train.append(row)
            seen.add(key)
        elif key not in seen:
            held.append(row)
            seen.add(key)
        if len(held) == n_eval:
            return train, held
    raise ValueError(f"{name}: could not find {n_eval} unseen prompts; shrink the split")
