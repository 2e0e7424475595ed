"""A tiny Llama-architecture base model and BPE tokenizer, built offline and reproducibly.

There is no model hub here, so tests, benchmarks and the demo build their base from
text generated from a seed. Same seed, same library versions -> byte-identical files.
torch, transformers and tokenizers are imported lazily: `import loramux.trainer`
must stay light.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

SPECIAL_TOKENS = ["<|pad|>", "<|begin_of_text|>", "<|end_of_text|>",
                  "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

# `{% generation %}` marks assistant text, so TRL can compute loss on completions only. Tools and
# tool calls render as Hermes-style `<tool_call>{"name": ..., "arguments": ...}</tool_call>`, the
# format of vLLM's `hermes` tool parser. Tools are listed by name and description only: their
# schemas in JSON would fill most of the tiny context.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}{{ '<|system|>\nYou may call these tools; write each call as <tool_call>{\"name\": ..., "
    "\"arguments\": {...}}</tool_call>\n' }}"
    "{% for tool in tools %}{{ tool['function']['name'] + ': ' + (tool['function']['description'] or '') + '\n' }}"
    "{% endfor %}{{ '<|end|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] or '' }}"
    "{% for call in message['tool_calls'] or [] %}{{ '<tool_call>' + ({'name': call['function']['name'], "
    "'arguments': call['function']['arguments']} | tojson) + '</tool_call>' }}{% endfor %}"
    "{{ '<|end|>' }}{% endgeneration %}"
    "{% else %}{{ (message['content'] or '') + '<|end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "our team", "the robot",
             "a farmer", "the river", "this city", "the old man", "a child", "the bird",
             "the server", "a tenant", "the model", "your order", "the weather", "a student"]
_VERBS = ["sees", "likes", "builds", "finds", "carries", "watches", "answers", "needs",
          "opens", "moves", "helps", "follows", "writes", "reads", "sends", "keeps"]
_OBJECTS = ["a red box", "the green door", "three apples", "the long road", "a small boat",
            "the blue sky", "some water", "the letter", "a new plan", "the big house",
            "the report", "an invoice", "the ticket", "a refund", "the account", "a song"]
_TAILS = ["today", "every morning", "at night", "in the park", "near the sea", "again",
          "with care", "before lunch", "after school", "on monday", "quickly", "slowly"]
_QUESTIONS = ["What is the capital of France?", "How are you?", "Tell me a joke.",
              "What time is it?", "Where is my order?", "Can you help me?",
              "What is two plus two?", "Who are you?", "Say hello.", "Describe the sea."]


@dataclass(frozen=True)
class TinyBaseConfig:
    """Shape of the tiny base: a few million parameters, Llama architecture."""

    vocab_size: int = 2048
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    initializer_range: float = 0.02


def corpus(seed: int, sentences: int = 4000) -> list[str]:
    """Deterministic English-like text (and chat turns) for the tokenizer."""
    rng = random.Random(seed)
    lines = []
    for i in range(sentences):
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."
        if i % 3 == 0:
            s = s.capitalize()
        if i % 5 == 0:
            s += f" It costs {rng.randint(0, 999)} dollars and {rng.randint(0, 99)} cents!"
        if i % 7 == 0:
            s = f"Q: {rng.choice(_QUESTIONS)} A: {s}"
        lines.append(s)
    return lines


def build_tokenizer(seed: int, cfg: TinyBaseConfig):
    """Byte-level BPE trained on `corpus(seed)`, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end|>",
        pad_token="<|pad|>", chat_template=CHAT_TEMPLATE, model_max_length=cfg.max_position_embeddings)


def _pretrain(model, tokenizer, seed: int, steps: int, batch: int = 8, seq: int = 64) -> None:
    """A few hundred next-token steps on `corpus(seed)`: "barely trained", but it makes
    peaked, English-like predictions, so greedy outputs are stable and adapters visibly
    change them. Plain loop on purpose: one optimizer, no data pipeline, deterministic."""
    import torch

    text = " ".join(corpus(seed + 1, sentences=6000))
    ids = torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=gen)
        x = torch.stack([ids[s:s + seq] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()


def build_tiny(out: Path, seed: int = 0, cfg: TinyBaseConfig = TinyBaseConfig(),
               steps: int = 120) -> Path:
    """Write a tiny Llama + tokenizer to `out`, pretrained for `steps`, and return it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(seed, cfg)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = LlamaConfig(
        **asdict(cfg), rms_norm_eps=1e-5, tie_word_embeddings=False, torch_dtype="float32",
        bos_token_id=ids["<|begin_of_text|>"], eos_token_id=[ids["<|end|>"], ids["<|end_of_text|>"]],
        pad_token_id=ids["<|pad|>"])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float reductions then do not depend on the machine's core count
    try:
        _pretrain(model, tokenizer, seed, steps)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                     pad_token_id=config.pad_token_id, do_sample=False).save_pretrained(out)
    (out / "loramux_base.json").write_text(json.dumps({"kind": "tiny", "seed": seed, "steps": steps, **asdict(cfg)},
                                                       indent=2, sort_keys=True) + "\n")
    return out
