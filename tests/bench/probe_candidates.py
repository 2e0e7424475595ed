"""Candidate questions for the shipped general probe (trainer/probes/general.jsonl), with accepted answers.

`make_general_probe.py` runs them through SmolLM2-135M-Instruct and keeps the ones it answers correctly.
Each entry: (kind, question, accepted answer regexes; matched case-insensitively anywhere in the answer).
No accepted answer appears in its own question: an echo of the question must not count as a right answer.
"""

from __future__ import annotations

CAPITALS = [
    ("France", "paris"), ("Japan", "tokyo"), ("Italy", "rome"), ("Germany", "berlin"), ("Spain", "madrid"),
    ("the United Kingdom", "london"), ("Russia", "moscow"), ("China", "beijing"), ("Egypt", "cairo"),
    ("Canada", "ottawa"), ("Australia", "canberra"), ("Greece", "athens"), ("Portugal", "lisbon"),
    ("Ireland", "dublin"), ("Norway", "oslo"), ("Sweden", "stockholm"), ("Poland", "warsaw"),
    ("Austria", "vienna"), ("the Netherlands", "amsterdam"), ("India", "new delhi"), ("South Korea", "seoul"),
    ("Thailand", "bangkok"), ("Kenya", "nairobi"), ("Turkey", "ankara"), ("Cuba", "havana"),
    ("Finland", "helsinki"), ("Denmark", "copenhagen"), ("Argentina", "buenos aires"), ("Peru", "lima"),
    ("Hungary", "budapest"),
]

ARITHMETIC = [
    ("2 + 2", r"\b4\b|\bfour\b"), ("3 + 5", r"\b8\b|\beight\b"), ("10 - 4", r"\b6\b|\bsix\b"),
    ("9 + 10", r"\b19\b|\bnineteen\b"), ("5 times 5", r"\b25\b|twenty-five"), ("12 + 8", r"\b20\b|\btwenty\b"),
    ("7 - 3", r"\b4\b|\bfour\b"), ("2 times 3", r"\b6\b|\bsix\b"), ("15 + 15", r"\b30\b|\bthirty\b"),
    ("20 - 5", r"\b15\b|\bfifteen\b"), ("8 divided by 2", r"\b4\b|\bfour\b"), ("3 times 4", r"\b12\b|\btwelve\b"),
    ("50 + 50", r"\b100\b|hundred"), ("6 + 1", r"\b7\b|\bseven\b"), ("100 - 1", r"\b99\b|ninety-nine"),
]

SCIENCE = [
    ("At what temperature in degrees Celsius does water boil at sea level?", r"\b100\b"),
    ("At what temperature in degrees Celsius does water freeze?", r"(?<![\d.\-])0\s*(°|degrees)|\bzero\b"),
    ("Which planet is closest to the Sun?", "mercury"),
    ("What is the largest planet in our solar system?", "jupiter"),
    ("Which planet is known as the Red Planet?", "mars"),
    ("What is the chemical symbol for gold?", r"\bau\b"),
    ("What is the chemical formula of water?", r"h\s*2\s*o|h₂o"),
    ("What gas do plants absorb from the air for photosynthesis?", r"carbon dioxide|co2|co₂"),
    ("How many legs does a spider have?", r"\b8\b|\beight\b"),
    ("How many legs does an insect have?", r"\b6\b|\bsix\b"),
    ("What star is at the center of our solar system?", r"\bsun\b"),
    ("What is the name of Earth's natural satellite?", r"\bmoon\b"),
    ("Which organ pumps blood through the human body?", r"\bheart\b"),
    ("What pigment makes plants green?", "chlorophyll"),
    ("What is the hardest natural substance?", "diamond"),
    ("What sweet food do bees make?", "honey"),
    ("What is the largest ocean on Earth?", "pacific"),
    ("What is the tallest mountain in the world?", "everest"),
    ("What is the largest mammal on Earth?", "blue whale"),
    ("What force pulls objects toward the Earth?", "gravity"),
    ("What do we call water in its solid form?", r"\bice\b"),
    ("Which gas do humans need to breathe to live?", "oxygen"),
    ("What is the chemical symbol for sodium?", r"\bna\b"),
    ("How many bones does an adult human have?", r"\b206\b"),
]

FACTS = [
    ("How many continents are there on Earth?", r"\b7\b|\bseven\b"),
    ("How many days are there in a week?", r"\b7\b|\bseven\b"),
    ("How many months are there in a year?", r"\b12\b|\btwelve\b"),
    ("How many hours are there in a day?", r"\b24\b|twenty-four"),
    ("How many minutes are there in an hour?", r"\b60\b|\bsixty\b"),
    ("How many days are there in a leap year?", r"\b366\b"),
    ("Who wrote Romeo and Juliet?", "shakespeare"),
    ("Who painted the Mona Lisa?", r"leonardo|da vinci"),
    ("Who was the first president of the United States?", "washington"),
    ("Who wrote the Harry Potter books?", "rowling"),
    ("What language is mainly spoken in Brazil?", "portuguese"),
    ("What is the currency of Japan?", r"\byen\b"),
    ("What is the currency of the United States?", "dollar"),
    ("Which animal says 'meow'?", r"\bcats?\b|kitten"),
    ("Which animal says 'moo'?", r"\bcows?\b|cattle"),
    ("What is the largest country in the world by area?", "russia"),
    ("How many players does a soccer team have on the field?", r"\b11\b|\beleven\b"),
    ("What color is a ripe banana?", "yellow"),
    ("What do you call a baby dog?", "pupp"),
    ("What do you call a baby cat?", "kitten"),
    ("Which season comes after winter?", "spring"),
    ("How many sides does a triangle have?", r"\b3\b|\bthree\b"),
    ("How many sides does a hexagon have?", r"\b6\b|\bsix\b"),
    ("What is the freezing point of water in Fahrenheit?", r"\b32\b"),
    ("In which country are the pyramids of Giza?", "egypt"),
    ("What is the longest river in Africa?", r"\bnile\b"),
    ("On which continent is Kenya?", "africa"),
    ("Which instrument has black and white keys?", "piano"),
]

INSTRUCTIONS = [
    ("Reply with one word: what color is the sky on a clear day?", r"\bblue\b"),
    ("Reply with one word: what color is grass?", r"\bgreen\b"),
    ("Reply with one word: what color is snow?", r"\bwhite\b"),
    ("Reply with one word: what is the opposite of hot?", r"\bcold\b"),
    ("Reply with only a number: how many wheels does a bicycle have?", r"\b2\b|\btwo\b"),
    ("Reply with only a number: how many legs does a dog have?", r"\b4\b|\bfour\b"),
    ("List the first three days of the week.", r"(monday.*tuesday.*wednesday|sunday.*monday.*tuesday)"),
    ("List the first three months of the year.", r"january.*february.*march"),
    ("Count from 1 to 5.", r"1\D+2\D+3\D+4\D+5"),
    ("List the three primary colors of paint.", r"(?=.*red)(?=.*blue)(?=.*yellow)"),
    ("Spell the word 'cat' backwards.", r"\bt-?a-?c\b"),
    ("Repeat the word 'banana' exactly once.", "banana"),
    ("Complete the sentence: The sun rises in the ...", r"\beast\b"),
    ("Complete the sentence: Roses are red, violets are ...", r"\bblue\b"),
    ("Name a fruit that is red.", r"apple|strawberr|cherr|raspberr|tomato|watermelon|pomegranate"),
    ("Name an animal that can fly.", r"bird|eagle|bat|butterfl|pigeon|owl|parrot|sparrow|hawk|bee|crow"),
]

ANTONYMS = [("cold", "hot|warm"), ("big", r"small|little|tiny"), ("up", r"\bdown\b"), ("happy", r"\bsad|unhappy"),
            ("fast", r"\bslow"), ("light", r"\bdark|heavy"), ("day", r"\bnight\b"), ("wet", r"\bdry\b"),
            ("full", r"\bempty\b"), ("early", r"\blate\b"), ("top", r"\bbottom\b"), ("win", r"\blos[es]")]

TRANSLATIONS = [
    ("hello", "Spanish", "hola"), ("thank you", "French", "merci"), ("cat", "Spanish", "gato"),
    ("water", "Spanish", "agua"), ("yes", "German", r"\bja\b"), ("goodbye", "Spanish", r"adi[oó]s"),
    ("dog", "French", "chien"), ("one", "Spanish", r"\buno\b"), ("red", "Spanish", r"\brojo\b"),
    ("bread", "French", r"\bpain\b"), ("thank you", "Spanish", "gracias"), ("house", "Spanish", r"\bcasa\b"),
]

GRAMMAR = [
    ("What is the plural of 'mouse'?", r"\bmice\b"), ("What is the plural of 'child'?", "children"),
    ("What is the past tense of 'go'?", r"\bwent\b"), ("What is the past tense of 'eat'?", r"\bate\b"),
    ("What is the plural of 'tooth'?", r"\bteeth\b"),
]


def candidates() -> list[dict]:
    """About 150 rows: {id, kind, question, accept}."""
    rows = [("capital", f"What is the capital of {c}?", a) for c, a in CAPITALS]
    rows += [("arithmetic", f"What is {e}?", a) for e, a in ARITHMETIC]
    rows += [("science", q, a) for q, a in SCIENCE]
    rows += [("fact", q, a) for q, a in FACTS]
    rows += [("instruction", q, a) for q, a in INSTRUCTIONS]
    rows += [("antonym", f"What is the opposite of '{w}'?", a) for w, a in ANTONYMS]
    rows += [("translation", f"How do you say '{w}' in {lang}?", a) for w, lang, a in TRANSLATIONS]
    rows += [("grammar", q, a) for q, a in GRAMMAR]
    return [{"id": f"{kind}-{i:03d}", "kind": kind, "question": q, "accept": [a]}
            for i, (kind, q, a) in enumerate(rows)]


# Prompts for the general-mix data (trainer/probes/general_mix.jsonl): other questions than the probe's, so
# the probe stays held out. Their answers are the base's own (self-distillation: replaying what the base
# says keeps it saying it), written by make_general_probe.py.
_ANIMALS = ["elephants", "dolphins", "penguins", "owls", "octopuses", "giraffes", "bees", "sharks", "horses",
            "ants", "koalas", "camels", "frogs", "eagles", "turtles", "wolves", "rabbits", "whales", "parrots",
            "tigers"]
_THINGS = ["a volcano", "a rainbow", "photosynthesis", "a computer", "the internet", "a library", "a calendar",
           "an umbrella", "a bridge", "a thermometer", "a map", "electricity", "a recipe", "a museum",
           "a telescope", "a battery", "a dictionary", "a passport", "a vaccine", "an orchestra", "a glacier",
           "a desert", "a compass", "a microscope", "a bicycle", "recycling", "a password", "a newspaper",
           "an airport", "a farm"]
_WORDS = ["happy", "big", "quick", "smart", "angry", "begin", "tired", "beautiful", "difficult", "small",
          "loud", "rich", "funny", "brave", "calm"]
_SENTENCE_WORDS = ["river", "friend", "morning", "garden", "music", "window", "travel", "kitchen", "rain",
                   "school", "coffee", "mountain", "book", "ocean", "holiday"]
_SUMS = [(14, 23), (31, 12), (45, 27), (8, 9), (60, 25), (17, 4), (33, 33), (70, 11), (26, 19), (5, 38),
         (41, 7), (13, 13), (90, 9), (22, 48), (64, 16)]
_COUNTRIES = ["Chile", "Colombia", "Belgium", "Switzerland", "Vietnam", "Indonesia", "the Philippines",
              "Nigeria", "Morocco", "Iran", "Israel", "the Czech Republic", "Ukraine", "New Zealand", "Venezuela"]
_TIPS = ["sleeping better", "saving money", "learning a new language", "staying focused", "drinking more water",
         "keeping a plant alive", "writing a good email", "making friends", "cooking rice", "running faster",
         "studying for an exam", "reducing stress", "packing for a trip", "keeping a room tidy",
         "remembering names"]
_COLORS = ["the sun", "a lemon", "an orange", "coal", "a tomato", "milk", "the ocean", "a carrot", "chocolate",
           "a cloud"]


def mix_prompts() -> list[str]:
    """About 150 general prompts for the general-mix data."""
    return ([f"Tell me a fun fact about {a}." for a in _ANIMALS]
            + [f"Explain what {t} is in one sentence." for t in _THINGS]
            + [f"Give me a synonym for '{w}'." for w in _WORDS]
            + [f"Write a short sentence using the word '{w}'." for w in _SENTENCE_WORDS]
            + [f"What is {a} plus {b}?" for a, b in _SUMS]
            + [f"What is the capital city of {c}?" for c in _COUNTRIES]
            + [f"Give me one tip for {t}." for t in _TIPS]
            + [f"What color is {c}?" for c in _COLORS])
