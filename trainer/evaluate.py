"""Held-out scores: greedy generation against reference answers, and a forgetting score.

Always evaluates a freshly loaded unquantized model: the base alone, or the base with the
saved adapter, which is exactly what the server will run, in the dtype the server's `auto`
picks on this CPU (bf16 only with native bf16, else fp32; see loramux.adapters.hardware).
This also keeps any no-grad forward off a 4-bit training model (the bitsandbytes CPU trap,
see methods.py). The adapter's files, and so its manifest's dtype, are what training wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from loramux.trainer.data import Example


def _norm(text: str) -> str:
    return " ".join(text.split())


# Metric name -> (prediction, reference) -> 1.0 / 0.0. Add entries, never if/elif chains.
METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": lambda pred, ref: float(_norm(pred) == _norm(ref)),
    "contains": lambda pred, ref: float(_norm(ref) in _norm(pred)),
}


def load_model(base: Path, adapter: Path | None = None, full: Path | None = None, dtype: str = "auto"):
    """Model for evaluation on CPU: the base, the base + a LoRA adapter, or a fully tuned model,
    in `dtype` (`auto`: the server's choice for this CPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    from loramux.adapters.hardware import resolve_dtype

    chosen = resolve_dtype(dtype, full or base)
    model = AutoModelForCausalLM.from_pretrained(full or base, dtype=getattr(torch, chosen.dtype))
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.eval()


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The prompt as `POST /v1/chat/completions` renders it (server/engine/vllm_engine.py `render_chat`): the
    base's chat template with the generation prompt, then tokenized without added special tokens. Training
    renders the same template (chat_masks.py), so the gate scores what the server's users get. Every data
    format is chat here, prompt-completion rows included (a user turn, data.py); `POST /v1/completions`
    sends its text untemplated, so it matches only a prompt already rendered with this template."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def generate(model, tokenizer, prompts: list[list[dict]], *, max_new_tokens: int, batch_size: int = 32) -> list[str]:
    """Greedy completions of chat prompts, batched with left padding."""
    import torch

    tokenizer.padding_side = "left"
    outputs = []
    for i in range(0, len(prompts), batch_size):
        texts = [render_prompt(tokenizer, p) for p in prompts[i:i + batch_size]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        outputs += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return outputs


def score(model, tokenizer, examples: list[Example], *, metric: str = "exact_match",
          max_new_tokens: int | None = None, batch_size: int = 32) -> dict:
    """Mean metric over `examples`, plus a few (prompt, prediction, reference) samples."""
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    if max_new_tokens is None:
        max_new_tokens = max(len(tokenizer(e.answer, add_special_tokens=False)["input_ids"]) for e in examples) + 8
    preds = generate(model, tokenizer, [e.prompt for e in examples], max_new_tokens=max_new_tokens,
                     batch_size=batch_size)
    hits = [METRICS[metric](p, e.answer) for p, e in zip(preds, examples, strict=True)]
    samples = [{"prompt": e.prompt[-1]["content"], "prediction": p, "reference": e.answer}
               for p, e in zip(preds[:3], examples[:3], strict=False)]
    return {metric: sum(hits) / len(hits), "n": len(hits), "samples": samples}


def mean_nll(model, tokenizer, texts: list[str], batch_size: int = 16) -> float:
    """Mean token negative log-likelihood of plain text (lower = handles it better)."""
    import torch

    tokenizer.padding_side = "right"
    total, count = 0.0, 0
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        with torch.no_grad():
            logits = model(**enc).logits[:, :-1].float()
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                ignore_index=-100, reduction="sum")
        total += nll.item()
        count += int((target != -100).sum())
    return total / max(count, 1)


def general_texts(path: Path | None, n: int = 64) -> list[str]:
    """Text the base already handles: the given JSONL (`text` field) or built-in English-like lines."""
    if path is not None:
        import json

        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        return [r["text"] for r in rows][:n]
    from loramux.trainer.tiny_base import corpus

    return corpus(seed=12345, sentences=n)
