"""Assistant-only masks on real chat templates (chat_masks.py): the exact tokens in the loss.

Each template is the real one, copied as jinja (or read from TRL's copies of the originals),
on the tiny base's BPE tokenizer with the template's special tokens added: offline and fast.
Every test renders the same two-turn conversation and compares the decoded masked tokens.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from loramux.trainer.chat_masks import ChatTemplateError, Masker, _trim, _trl_template, masker

CONVERSATION = [{"role": "user", "content": "What is two plus two?"},
                {"role": "assistant", "content": "It is 4."},
                {"role": "user", "content": "And three plus three?"},
                {"role": "assistant", "content": "It is 6."}]

# HuggingFaceTB/SmolLM2-135M-Instruct: ChatML with a default system prompt.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# meta-llama/Meta-Llama-3-8B-Instruct (TRL ships a patched training copy of this one).
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
# mistralai/Mistral-7B-Instruct-v0.2 and Mixtral-8x7B-Instruct-v0.1.
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")
# mistralai/Mistral-7B-Instruct-v0.1: a space after each answer's </s>, never generated, never in the loss.
MISTRAL_V01 = MISTRAL.replace("message['content'] + eos_token}}", "message['content'] + eos_token + ' ' }}")
# Qwen3-style: earlier turns lose their reasoning once a later user turn follows; not prefix-preserving.
DROPS_REASONING = (
    "{% for message in messages %}{% set content = message['content'] %}"
    "{% if message['role'] == 'assistant' and not loop.last %}{% set content = content.split('</think>')[-1] | trim %}"
    "{% endif %}{{ '<|im_start|>' + message['role'] + '\n' + content + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# A plain-text template whose prompt ends in a space that BPE merges into the answer's first word.
SPACE_PROMPT = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n' }}"
    "{% else %}{{ 'Assistant: ' + message['content'] + eos_token + '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}")

CHATML = ["<|im_start|>", "<|im_end|>"]
LLAMA = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def trl_template(name: str) -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The tiny base's tokenizer (no model: ~1 s), saved once; each test loads a copy."""
    from loramux.trainer.tiny_base import TinyBaseConfig, build_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(0, TinyBaseConfig()).save_pretrained(out)
    return out


@pytest.fixture
def tokenizer(tokenizer_dir):
    def make(template: str, specials: list[str] = (), **tokens: str):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        tok.add_special_tokens({"additional_special_tokens": list(specials), **tokens})
        tok.chat_template = template
        return tok
    return make


def masked_text(tok, row: dict) -> str:
    return tok.decode([i for i, m in zip(row["input_ids"], row["assistant_masks"], strict=True) if m])


CASES = {  # name -> (template, special tokens, token roles, method, masked text)
    "smollm2": (SMOLLM2, CHATML, {"eos_token": "<|im_end|>"}, "prefix", "It is 4.<|im_end|>It is 6.<|im_end|>"),
    "llama3": (LLAMA3, LLAMA, {"eos_token": "<|eot_id|>"}, "prefix", "It is 4.<|eot_id|>It is 6.<|eot_id|>"),
    "llama3.1": (trl_template("llama3_1"), LLAMA, {"eos_token": "<|eot_id|>"}, "prefix",
                 "It is 4.<|eot_id|>It is 6.<|eot_id|>"),
    "qwen2.5": (trl_template("qwen2_5"), CHATML, {"eos_token": "<|im_end|>"}, "prefix",
                "It is 4.<|im_end|>It is 6.<|im_end|>"),
    "mistral": (MISTRAL, [], {"bos_token": "<s>", "eos_token": "</s>"}, "prefix", "It is 4.</s>It is 6.</s>"),
    "mistral-v0.1": (MISTRAL_V01, [], {"bos_token": "<s>", "eos_token": "</s>"}, "prefix",
                     "It is 4.</s>It is 6.</s>"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_assistant_turn_and_its_end_token_and_nothing_else_is_masked(name, tokenizer):
    template, specials, roles, method, expected = CASES[name]
    tok = tokenizer(template, specials, **roles)
    mask = masker(tok)
    row = mask(CONVERSATION)
    assert dict(mask.used) == {method: 1}
    assert masked_text(tok, row) == expected
    full = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert tok.decode(row["input_ids"]) == full  # the served rendering, token for token
    if name in ("llama3", "qwen2.5"):  # TRL's patched copy, trimmed, marks the same tokens
        assert _trim(tok, mask._marked(CONVERSATION, _trl_template(tok))) == row


def test_trl_copy_where_prefixes_cannot_split_the_conversation(tokenizer):
    """Phi-3 ends every rendering with eos, so a turn's rendering is not a prefix of the next."""
    tok = tokenizer(trl_template("phi3"), eos_token="<|endoftext|>")
    mask = masker(tok)
    row = mask(CONVERSATION)
    assert dict(mask.used) == {"trl": 1}
    assert masked_text(tok, row) == "It is 4.<|end|>It is 6.<|end|>\n<|endoftext|>"  # TRL's choice for the last


def test_smollm2_default_system_prompt_is_rendered_but_never_trained(tokenizer):
    tok = tokenizer(SMOLLM2, CHATML, eos_token="<|im_end|>")
    row = masker(tok)(CONVERSATION)
    assert tok.decode(row["input_ids"]).startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n")
    own = masker(tok)([{"role": "system", "content": "Be terse."}, *CONVERSATION])
    assert "SmolLM" not in tok.decode(own["input_ids"])
    assert masked_text(tok, own) == "It is 4.<|im_end|>It is 6.<|im_end|>"


def test_generation_markers_are_used_as_written(tokenizer):
    from loramux.trainer.tiny_base import CHAT_TEMPLATE

    tok = tokenizer(CHAT_TEMPLATE)
    mask = masker(tok)
    row = mask(CONVERSATION)
    assert dict(mask.used) == {"markers": 1}
    assert masked_text(tok, row) == "It is 4.<|end|>It is 6.<|end|>"  # not the '\n' after <|end|>
    assert Masker(tok)._prefix(CONVERSATION) == row  # the prefixes find the same tokens


def test_the_tiny_base_as_built(tiny_base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    mask = masker(tok)
    row = mask(CONVERSATION)
    assert dict(mask.used) == {"markers": 1}
    assert masked_text(tok, row) == "It is 4.<|end|>It is 6.<|end|>"
    assert tok.decode(row["input_ids"]).startswith("<|begin_of_text|><|user|>\nWhat is two plus two?<|end|>\n")


def test_a_token_merged_across_the_prompt_boundary_is_trained_and_reported_once(tokenizer):
    tok = tokenizer(SPACE_PROMPT, eos_token="<|end|>")
    with pytest.warns(UserWarning, match="merges into other tokens") as seen:
        mask = masker(tok)
        row = mask(CONVERSATION)
    assert len(seen) == 1
    assert masked_text(tok, row) == " It is 4.<|end|> It is 6.<|end|>"  # ' It': the prompt's space and 'It'


def test_a_template_that_drops_earlier_reasoning_fails_with_the_fix(tokenizer):
    tok = tokenizer(DROPS_REASONING, CHATML, eos_token="<|im_end|>")
    thinking = [CONVERSATION[0], {"role": "assistant", "content": "<think>2+2</think>It is 4."}, *CONVERSATION[2:]]
    with pytest.raises(ChatTemplateError, match="not prefix-preserving") as e:
        masker(tok)(thinking)
    assert "{% generation %}" in e.value.message and "prompt-completion" in e.value.message
    assert e.value.status_code == 400 and e.value.param == "base"


def test_no_chat_template_is_one_clear_error(tokenizer):
    tok = tokenizer("")
    tok.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        masker(tok)


def test_without_completion_only_loss_rows_carry_ids_only(tokenizer):
    from loramux.trainer.chat_masks import tokenize

    tok = tokenizer(SMOLLM2, CHATML, eos_token="<|im_end|>")
    rows = tokenize(tok, [CONVERSATION], assistant_only=False)
    assert list(rows[0]) == ["input_ids"]
    assert tok.decode(rows[0]["input_ids"]) == tok.apply_chat_template(CONVERSATION, tokenize=False)


def test_no_warning_for_clean_templates(tokenizer):
    tok = tokenizer(SMOLLM2, CHATML, eos_token="<|im_end|>")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masker(tok)(CONVERSATION)


@pytest.mark.parametrize("name", ["smollm2", "llama3", "mistral"])
def test_prompt_completion_rows_train_the_completion_after_the_prompt_the_gate_and_server_render(
        name, tokenizer, tmp_path):
    from loramux.trainer.data import read_jsonl, write_jsonl
    from loramux.trainer.evaluate import render_prompt

    template, specials, roles, _, _ = CASES[name]
    tok = tokenizer(template, specials, **roles)
    [ex] = read_jsonl(write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Say hi.", "completion": "Hi!"}]))
    row = masker(tok)(ex.messages)
    first = row["assistant_masks"].index(1)
    assert masked_text(tok, row) == "Hi!" + tok.eos_token
    assert row["input_ids"][:first] == tok(render_prompt(tok, ex.prompt), add_special_tokens=False)["input_ids"]


# The tiny base with SmolLM2's ChatML template (its default system prompt included), written with
# the tiny vocabulary's tokens so the model needs no new embeddings: no `{% generation %}` markers.
TINY_CHATML = SMOLLM2.replace("<|im_start|>", "<|begin_of_text|>").replace("<|im_end|>", "<|end|>")


@pytest.fixture(scope="module")
def chatml_base(tiny_base, tmp_path_factory) -> Path:
    import shutil

    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("chatml-base") / "base"
    shutil.copytree(tiny_base, out)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = TINY_CHATML
    tok.save_pretrained(out)
    return out


def _cfg(base: Path, data, out: Path, *overrides: str):
    from loramux.trainer.config import load_config, recipe_path

    train, held = data
    return load_config(recipe_path("lora"), [f"base={base}", f"data.train={train}", f"data.eval={held}",
                                             f"output_dir={out}", "training.threads=1", *overrides])


def test_trl_alone_refuses_this_template_and_our_labels_are_the_answers(chatml_base, demo_data, tmp_path):
    from transformers import AutoTokenizer
    from trl.chat_template_utils import get_training_chat_template

    from loramux.trainer.data import load_splits
    from loramux.trainer.train import build_trainer

    tok = AutoTokenizer.from_pretrained(chatml_base)
    with pytest.raises(ValueError, match="not training-compatible"):
        get_training_chat_template(tok)  # what `assistant_only_loss=True` ran into on real bases
    cfg = _cfg(chatml_base, demo_data["pirate"], tmp_path / "run", "training.packing=false")
    splits = load_splits(cfg.data.train, cfg.data.eval)
    row = build_trainer(cfg, splits).trainer.train_dataset[0]
    ex = splits.train[0]
    assert "named SmolLM" in tok.decode(row["input_ids"])
    assert tok.decode([i for i in row["labels"] if i != -100]) == ex.answer + "<|end|>"


def test_short_run_on_a_template_without_markers_learns(chatml_base, demo_data, tmp_path):
    from loramux.trainer.train import train

    cfg = _cfg(chatml_base, demo_data["pirate"], tmp_path / "run", "training.max_steps=30",
               "training.logging_steps=5", "training.evals_per_run=2", "eval.sample_size=0",
               "data.max_eval_examples=8")
    m = train(cfg, with_base=False).metrics
    losses = m["loss_curve"]["train_loss"]
    assert losses[-1] < 0.7 * losses[0], losses


def test_cli_reports_an_untrainable_template_in_one_line(chatml_base, tmp_path):
    import json
    import shutil

    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from loramux.trainer.cli import app

    base = tmp_path / "base"
    shutil.copytree(chatml_base, base)
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = DROPS_REASONING.replace("<|im_start|>", "<|begin_of_text|>").replace("<|im_end|>", "<|end|>")
    tok.save_pretrained(base)
    rows = [{"messages": [CONVERSATION[0], {"role": "assistant", "content": f"<think>{k}</think>It is 4."},
                          *CONVERSATION[2:]]} for k in range(4)]
    data = tmp_path / "think.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = CliRunner().invoke(app, ["add-tenant", "--tenant", "acme", "--name", "x", "--data", str(data),
                                 "--eval", str(data), "--base", str(base), "--registry", str(tmp_path / "store"),
                                 "--output-dir", str(tmp_path / "run"), "training.threads=1"])
    assert r.exit_code == 2, r.output
    assert "not prefix-preserving" in r.output and "{% generation %}" in r.output and "Traceback" not in r.output


def test_the_real_smollm2_tokenizer_and_template(request):
    """SmolLM2-135M-Instruct as imported from its GGUF, where that fixture exists (the real-base work)."""
    try:
        base = request.getfixturevalue("smollm2_base")
    except pytest.FixtureLookupError:
        pytest.skip("no smollm2_base fixture in this tree")
    from transformers import AutoTokenizer

    from loramux.trainer.evaluate import render_prompt

    tok = AutoTokenizer.from_pretrained(base)
    mask = masker(tok)
    row = mask(CONVERSATION)
    assert dict(mask.used) == {"prefix": 1}
    assert masked_text(tok, row) == "It is 4.<|im_end|>It is 6.<|im_end|>"
    text = tok.decode(row["input_ids"])
    assert text == tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face")
    prompt = tok(render_prompt(tok, CONVERSATION[:-1]), add_special_tokens=False)["input_ids"]  # the gate's, served
    assert row["input_ids"][:len(prompt)] == prompt
    assert row["assistant_masks"][len(prompt) - 1:len(prompt) + 1] == [0, 1]  # the last answer starts right after


def test_a_conversation_the_template_rejects_names_the_data_as_the_fix(tokenizer):
    tok = tokenizer(MISTRAL, bos_token="<s>", eos_token="</s>")
    with pytest.raises(ChatTemplateError, match="roles must alternate.*make the data fit"):
        masker(tok)([{"role": "system", "content": "Be terse."}, *CONVERSATION])
