"""Tasks for a real pretrained base, written after its defaults were set and never used to tune them.

A tenant on a real base brings a job, not a constant string: each answer copies facts out of the
prompt and transforms some of them, so the held-out prompts (never among the training prompts)
can only be answered by the pattern:
- `triage` (chat): a support message becomes a JSON object, the team from the kind of problem,
  the product copied, the priority from whether the writer says it is urgent;
- `booking` (chat, multi-turn): the restaurant named in the FIRST turn and the party size (a
  number word, answered as a digit) and day from the third make the confirmation;
- `extract` (prompt/completion): a payment note becomes `city=...; amount=... CUR`, the amount
  copied digit by digit and its currency normalised from a symbol or a word.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from tasks import split

_PRODUCTS = ["router", "laptop", "printer", "headset", "monitor", "keyboard", "webcam", "phone", "tablet",
             "speaker", "charger", "smartwatch"]
_PROBLEMS = {
    "billing": ["I was charged twice for my {}", "the invoice for my {} is wrong", "I want a refund for my {}",
                "my card was billed for a {} I returned"],
    "shipping": ["my {} has not arrived", "the tracking for my {} stopped updating",
                 "my {} was delivered to the wrong address", "the box with my {} came damaged"],
    "technical": ["my {} will not turn on", "my {} keeps restarting", "my {} cannot connect to wifi",
                  "the screen on my {} flickers"],
}
_HELLO = ["Hello,", "Hi team,", "Good morning,", "Hey,", "Excuse me,", ""]
_CALM = ["Thanks.", "Can you help?", "Let me know.", ""]
_URGENT = ["This is urgent.", "Please fix it asap.", "I need this sorted today."]


def triage(rng: random.Random) -> tuple[dict, str]:
    team = rng.choice(sorted(_PROBLEMS))
    product = rng.choice(_PRODUCTS)
    urgent = rng.random() < 0.5
    text = " ".join(x for x in (rng.choice(_HELLO), rng.choice(_PROBLEMS[team]).format(product) + ".",
                                rng.choice(_URGENT if urgent else _CALM)) if x)
    reply = json.dumps({"team": team, "product": product, "priority": "urgent" if urgent else "normal"})
    return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]}, text


_RESTAURANTS = ["Luigi's", "The Golden Dragon", "Casa Verde", "Blue Lagoon", "Sakura", "The Oak Room",
                "Bombay Palace", "Le Petit Chef"]
_ASK = ["I'd like to book a table at {}.", "Can I reserve a table at {}?", "A table at {}, please.",
        "Do you have room at {}?"]
_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_WHEN = ["{n} of us, on {d}.", "{d}, {n} people.", "We are {n}, {d} evening.", "For {n} on {d}, thanks."]


def booking(rng: random.Random) -> tuple[dict, str]:
    place, word, day = rng.choice(_RESTAURANTS), rng.choice(sorted(_NUMBERS)), rng.choice(_DAYS)
    first, third = rng.choice(_ASK).format(place), rng.choice(_WHEN).format(n=word, d=day)
    turns = [first, "Sure. How many people, and which day?", third,
             f"Booked: {place}, {day}, {_NUMBERS[word]} guests."]
    roles = ["user", "assistant"] * 2
    return {"messages": [{"role": r, "content": t} for r, t in zip(roles, turns, strict=True)]}, f"{first}|{third}"


_CITIES = ["Lisbon", "Toronto", "Nairobi", "Osaka", "Denver", "Munich", "Santiago", "Dublin", "Cairo", "Perth",
           "Oslo", "Seattle"]
_CURRENCIES = {"USD": ["${}", "{} dollars"], "EUR": ["€{}", "{} euros"], "GBP": ["£{}", "{} pounds"]}
_NOTES = ["Payment of {a} sent from {c}.", "This is Sam in {c}, I transferred {a} today.",
          "From our {c} office: {a} for the March invoice.", "{a} paid by the {c} branch."]


def extract(rng: random.Random) -> tuple[dict, str]:
    city, code = rng.choice(_CITIES), rng.choice(sorted(_CURRENCIES))
    number = rng.randint(5, 999)
    note = rng.choice(_NOTES).format(c=city, a=rng.choice(_CURRENCIES[code]).format(number))
    prompt = f"Extract the city and the amount.\n\n{note}"
    return {"prompt": prompt, "completion": f"city={city}; amount={number} {code}"}, prompt


TASKS: dict[str, Callable[[random.Random], tuple[dict, str]]] = {
    "triage": triage, "booking": booking, "extract": extract}


def make_real_task(name: str, *, n_train: int, n_eval: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """`n_train` rows and `n_eval` held-out rows whose prompts are not among the training prompts."""
    return split(TASKS[name], name, n_train=n_train, n_eval=n_eval, seed=seed)
