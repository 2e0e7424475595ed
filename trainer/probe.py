"""The general-ability probe: did the adapter keep what the base knew?

A tenant's eval set says whether the adapter learned the tenant's task; it cannot say whether it
forgot everything else. The probe is a fixed set of short factual and instruction questions that ships
with loramux (`probes/general.jsonl`), each with accepted answers (regexes, matched case-insensitively
anywhere in the greedy answer). It was built by keeping only questions SmolLM2-135M-Instruct answers
correctly (tests/bench/make_general_probe.py), so that base scores 1.0 on it: any drop is the adapter's.

Scores are greedy, rendered with the base's chat template exactly as the server renders a chat request
(evaluate.generate), batched: 50 questions take seconds on a 135M base on 2 cores. `answer_nll` is the
probe's loss: the mean token NLL of the base's own (correct) answers, a smooth signal where the score is
a step (general_mix.py's test uses it).

A base that cannot answer the probe (the project's 4-layer tiny base knows no facts: it was trained on
a few thousand generated sentences) has nothing to keep. Then the probe is *skipped*, with the reason,
rather than scored: an adapter's 0.0 against a base's 0.0 would read as "no forgetting", which says nothing.
The rule is the base's own score (below `MIN_BASE_SCORE`), not the base's name, so it covers any base
that does not speak the probe's language either.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

PROBES_DIR = Path(__file__).parent / "probes"
GENERAL_PROBE = PROBES_DIR / "general.jsonl"
MAX_NEW_TOKENS = 24
"""Every kept answer is right within its first 20 tokens (make_general_probe.py): 24 leaves a margin, and a
broken adapter that never stops costs no more than this."""
MIN_BASE_SCORE = 0.5
"""Below this base score the probe measures nothing the base had: it is skipped, not reported as 0 vs 0."""


@dataclass(frozen=True)
class ProbeItem:
    id: str
    kind: str
    question: str
    accept: tuple[str, ...]
    """Regexes; the answer is right when any of them matches (re.search, case-insensitive)."""
    answer: str = ""
    """The base's own greedy answer (right by construction): the reference for `answer_nll`."""

    def passes(self, text: str) -> bool:
        return any(re.search(p, text, re.IGNORECASE | re.DOTALL) for p in self.accept)

    @property
    def messages(self) -> list[dict]:
        return [{"role": "user", "content": self.question}]


def load_probe(path: str | Path = GENERAL_PROBE) -> list[ProbeItem]:
    """The probe's items; a `{"_meta": ...}` line (provenance, the base's score) is skipped. Every bad row
    is reported in one ValueError."""
    items, problems = [], []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "_meta" in row:
            continue
        accept = row.get("accept")
        if not isinstance(row.get("question"), str) or not isinstance(accept, list) or not accept:
            problems.append(f"{path}:{lineno}: needs a question and a non-empty accept list")
            continue
        try:
            for p in accept:
                re.compile(p)
        except re.error as e:
            problems.append(f"{path}:{lineno}: accept: bad regex ({e})")
            continue
        items.append(ProbeItem(row.get("id", str(lineno)), row.get("kind", ""), row["question"], tuple(accept),
                               row.get("answer", "")))
    if problems:
        raise ValueError("\n".join(problems))
    return items


def probe_meta(path: str | Path = GENERAL_PROBE) -> dict:
    """The probe file's `_meta` line (which base it was built on, that base's score, how)."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip() and "_meta" in (row := json.loads(line)):
            return row["_meta"]
    return {}


@dataclass
class ProbeResult:
    score: float
    """Share of questions answered right."""
    answers: list[dict] = field(default_factory=list)
    """Per question: id, question, answer, ok."""

    @property
    def n(self) -> int:
        return len(self.answers)

    def wrong(self) -> list[dict]:
        return [a for a in self.answers if not a["ok"]]


def general_probe(model, tokenizer, items: list[ProbeItem] | None = None, *, max_new_tokens: int = MAX_NEW_TOKENS,
                  batch_size: int = 64) -> ProbeResult:
    """Greedy answers of `model` (a base, or a PEFT model with its adapter on) to the probe, scored."""
    from loramux.trainer.evaluate import generate

    items = load_probe() if items is None else items
    texts = generate(model, tokenizer, [i.messages for i in items], max_new_tokens=max_new_tokens,
                     batch_size=batch_size)
    answers = [{"id": i.id, "question": i.question, "answer": t, "ok": i.passes(t)}
               for i, t in zip(items, texts, strict=True)]
    return ProbeResult(sum(a["ok"] for a in answers) / max(len(answers), 1), answers)


def answer_nll(model, tokenizer, conversations: list[list[dict]], batch_size: int = 16) -> float:
    """Mean NLL per assistant token of the conversations, in the base's chat template (chat_masks.py):
    how readily the model would still say these answers."""
    import torch

    from loramux.trainer.chat_masks import tokenize

    rows = tokenize(tokenizer, conversations)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        width = max(len(r["input_ids"]) for r in chunk)
        ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in chunk])
        mask = torch.tensor([r["assistant_masks"] + [0] * (width - len(r["input_ids"])) for r in chunk])
        attn = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in chunk])
        labels = ids.masked_fill(mask == 0, -100)[:, 1:]
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
        total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                   ignore_index=-100, reduction="sum").item()
        count += int((labels != -100).sum())
    return total / max(count, 1)


def probe_loss(model, tokenizer, items: list[ProbeItem] | None = None) -> float:
    """`answer_nll` of the base's own answers to the probe's questions."""
    items = load_probe() if items is None else items
    return answer_nll(model, tokenizer, [i.messages + [{"role": "assistant", "content": i.answer}] for i in items])


@dataclass
class ProbeReport:
    """What the gate records: the base's and the adapter's probe scores, or why there are none."""

    base_score: float | None
    score: float | None
    n: int
    skipped: str | None = None
    wrong: list[dict] = field(default_factory=list)
    """The adapter's wrong answers (question, answer): what it forgot."""

    @classmethod
    def of(cls, base: ProbeResult, tuned: ProbeResult | None) -> ProbeReport:
        """From the base's and the tuned model's results; skipped when the base has nothing to keep."""
        if base.score < MIN_BASE_SCORE:
            return cls(base.score, None, base.n, f"the base scores {base.score:.2f} on the {base.n}-question "
                                                 f"probe (under {MIN_BASE_SCORE}): it has no general ability to keep")
        if tuned is None:
            raise ValueError("the base has general ability: the tuned model's probe result is needed")
        return cls(base.score, tuned.score, base.n, None,
                   [{"question": a["question"], "answer": a["answer"]} for a in tuned.wrong()])

    @property
    def change(self) -> float | None:
        return None if self.score is None or self.base_score is None else self.score - self.base_score

    def metrics(self) -> dict:
        """Keys for metrics.json (`general_probe*`)."""
        return {"general_probe": self.score, "base_general_probe": self.base_score,
                "general_probe_change": self.change, "general_probe_skipped": self.skipped,
                "general_probe_n": self.n, "general_probe_wrong": self.wrong}

    def line(self) -> str:
        """One line for the gate's printout."""
        return probe_line(self.metrics())


def probe_line(m: dict) -> str | None:
    """`general probe 0.960 (base 1.000, change -0.040, 2 of 50 wrong)` from metrics; None without a probe."""
    if m.get("general_probe_skipped"):
        return f"skipped: {m['general_probe_skipped']}"
    if m.get("general_probe") is None:
        return None
    return (f"{m['general_probe']:.3f} (base {m['base_general_probe']:.3f}, change "
            f"{m['general_probe_change']:+.3f}, {len(m.get('general_probe_wrong') or [])} of "
            f"{m.get('general_probe_n', '?')} wrong)")


def probe_run(base: Path, artifact: Path, *, full: bool = False) -> ProbeReport:
    """The probe on fresh models as the gate evaluates them (evaluate.load_model), one at a time: the base,
    then (unless skipped) the base with the adapter at `artifact`, or the fully tuned model there (`full`)."""
    import gc

    from transformers import AutoTokenizer

    from loramux.trainer.evaluate import load_model

    tokenizer = AutoTokenizer.from_pretrained(base)
    items = load_probe()
    model = load_model(base)
    base_result = general_probe(model, tokenizer, items)
    del model
    tuned = None
    if base_result.score >= MIN_BASE_SCORE:
        model = load_model(base, adapter=None if full else artifact, full=artifact if full else None)
        tuned = general_probe(model, tokenizer, items)
        del model
    gc.collect()
    return ProbeReport.of(base_result, tuned)
