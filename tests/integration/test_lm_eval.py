"""lm-evaluation-harness, unmodified, scores the base and a tenant's adapter through loramux.

Two tasks in lm-eval's own YAML over JSONL files the test writes (no dataset hub):
`loramux_probe` (multiple_choice, loglikelihoods through `local-completions`: prompt logprobs
with `echo`) and `loramux_chat` (generate_until through `local-chat-completions` with the chat
template). Both have the *base's* answers as targets, picked with PEFT so that every answer wins
by a wide logit margin: the base scores 1.0 and the adapter 0.0 whatever the CPU, and each
loglikelihood and generated text lm-eval reports is checked against a PEFT forward pass of the
model it named. The README's command line (`lm_eval run ...`) runs once, as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lora_factory import PROBE

pytestmark = pytest.mark.integration

ADAPTER = "acme/support"
MARGIN = 0.1  # logits between each greedy token and its runner-up; CPU builds differ by ~1e-4
TOL = 1e-3
GEN_TOKS = 2
PROMPTS = [PROBE, "The robot sees", "the dog runs", "My friend reads", "the teacher sees", "A man sees",
           "the boat is", "The river"]
QUESTIONS = ["where is the river?", "what does the robot see?", "who are you?", "hello", "Where is my order?",
             "the cat sees the sea", "what is the time?", "tell me about the boat"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def peft(server):
    """served name -> the same model in PEFT (fp32), and the base's tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models = {}
    for name in (server.base_name, ADAPTER):
        model = AutoModelForCausalLM.from_pretrained(server.base_dir, dtype=torch.float32)
        if name == ADAPTER:
            model = PeftModel.from_pretrained(model, server.adapters[name])
        models[name] = model.eval()
    return models, AutoTokenizer.from_pretrained(server.base_dir)


def _rows(model, ids: list[int]):
    import torch

    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)


def _greedy(model, ids: list[int], steps: int) -> tuple[list[int], float]:
    """PEFT's greedy continuation and the smallest margin any of its steps won by."""
    out, margin = [], float("inf")
    for _ in range(steps):
        top = _rows(model, ids + out)[-1].topk(2)
        out.append(int(top.indices[0]))
        margin = min(margin, float(top.values[0] - top.values[1]))
    return out, margin


def _task_yaml(name: str, data: Path, cache: Path, body: str) -> str:
    return (f"task: {name}\ndataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {data}\n  cache_dir: {cache}\n"
            f"test_split: test\n{body}")


@pytest.fixture(scope="module")
def tasks(server, peft, tmp_path_factory) -> Path:
    """Writes the two tasks; each doc's target is the base's answer, the adapter's differs."""
    models, tok = peft
    base, adapter = models[server.base_name], models[ADAPTER]
    root = tmp_path_factory.mktemp("lm_eval_tasks")

    probe = []
    for prompt in PROMPTS:  # one-token choices: the base's best, the adapter's best, two more of the base's
        ids = tok.encode(prompt, add_special_tokens=False)
        top = _rows(base, ids)[-1].topk(3)
        (mine,), m1 = _greedy(base, ids, 1)
        (theirs,), m2 = _greedy(adapter, ids, 1)
        choices = list(dict.fromkeys([mine, theirs, *top.indices.tolist()]))[:4]
        texts = [tok.decode([c]) for c in choices]
        if mine != theirs and min(m1, m2) >= MARGIN and all(
                tok.encode(prompt + t, add_special_tokens=False) == ids + [c] for t, c in zip(texts, choices)):
            probe.append({"text": prompt, "choices": texts, "label": 0})
    chat = []
    for question in QUESTIONS:
        text = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                       tokenize=False)
        ids = tok.encode(text, add_special_tokens=False)  # as the server renders a chat
        answers = [_greedy(m, ids, GEN_TOKS) for m in (base, adapter)]
        said = [tok.decode(a) for a, _ in answers]
        if said[0] != said[1] and min(m for _, m in answers) >= MARGIN and not any(
                t in s for s in said for t in ("\n", tok.eos_token)):
            chat.append({"question": question, "answer": said[0], "adapter_answer": said[1]})
    assert len(probe) >= 3 and len(chat) >= 3, (probe, chat)

    for name, docs, body in [
        ("loramux_probe", probe, ("output_type: multiple_choice\ndoc_to_text: '{{text}}'\n"
                                  "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n"
                                  "target_delimiter: ''\nmetric_list:\n  - metric: acc\n")),
        ("loramux_chat", chat, ("output_type: generate_until\ndoc_to_text: '{{question}}'\n"
                                "doc_to_target: '{{answer}}'\n"
                                f"generation_kwargs:\n  until: ['\\n\\n']\n  max_gen_toks: {GEN_TOKS}\n"
                                "  do_sample: false\n  temperature: 0\n"
                                "metric_list:\n  - metric: exact_match\n")),
    ]:
        data = root / f"{name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in docs))
        (root / f"{name}.yaml").write_text(_task_yaml(name, data, root / "hf-cache", body))
    return root


def _model_args(server, model: str, endpoint: str) -> dict:
    return {"model": model, "base_url": f"{server.url}/v1/{endpoint}", "tokenizer": str(server.base_dir),
            "tokenizer_backend": "huggingface", "max_length": 512, "num_concurrent": 4, "max_retries": 1}


@pytest.fixture(scope="module")
def evaluate(server, tasks):
    """lm_eval.simple_evaluate over our tasks only (not the ~10k built-in ones the CLI indexes)."""
    with pytest.MonkeyPatch.context() as env:
        for key, value in OFFLINE.items():
            env.setenv(key, value)
        yield _evaluator(server, tasks)


def _evaluator(server, tasks):
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(tasks), include_defaults=False)

    def run(model: str, task: str) -> dict:
        chat = task == "loramux_chat"
        kind, endpoint = ("local-chat-completions", "chat/completions") if chat else ("local-completions",
                                                                                       "completions")
        out = lm_eval.simple_evaluate(model=kind, model_args=_model_args(server, model, endpoint), tasks=[task],
                                      task_manager=manager, apply_chat_template=chat, log_samples=True,
                                      bootstrap_iters=0)
        assert out["n-samples"][task]["effective"] == len(out["samples"][task]) > 0
        return out
    return run


@pytest.fixture(scope="module")
def scores() -> dict:
    """Filled by the tests, printed at the end: the numbers the issue asks to note."""
    found: dict = {}
    yield found
    print(f"\nlm-eval scores through loramux: {json.dumps(found, sort_keys=True)}", file=sys.stderr)


def _scored(server, evaluate, scores: dict, model: str, task: str, metric: str) -> list[dict]:
    """lm-eval's samples of `task` on `model`, its score noted: 1.0 for the base and 0.0 for the
    adapter, as the targets are the base's answers."""
    out = evaluate(model, task)
    score = out["results"][task][f"{metric},none"]
    scores[f"{task} {metric} {model}"] = score
    assert score == (1.0 if model == server.base_name else 0.0)
    return out["samples"][task]


@pytest.mark.parametrize("model", ["tiny", ADAPTER])
def test_loglikelihoods_are_the_served_models(server, peft, evaluate, scores, model):
    models, tok = peft
    for sample in _scored(server, evaluate, scores, model, "loramux_probe", "acc"):
        doc = sample["doc"]
        ids = tok.encode(doc["text"], add_special_tokens=False)
        best = _rows(models[model], ids)[-1]
        for choice, ((ll, greedy),) in zip(doc["choices"], sample["resps"]):
            (token,) = tok.encode(doc["text"] + choice, add_special_tokens=False)[len(ids):]
            assert float(ll) == pytest.approx(best[token].item(), abs=TOL), (model, doc["text"], choice)
            assert (greedy in (True, "True")) == (token == int(best.argmax())), (model, doc["text"], choice)


@pytest.mark.parametrize("model", ["tiny", ADAPTER])
def test_chat_generations_are_the_served_models(server, evaluate, scores, model):
    for sample in _scored(server, evaluate, scores, model, "loramux_chat", "exact_match"):
        doc = sample["doc"]
        assert sample["resps"] == [[doc["answer"] if model == server.base_name else doc["adapter_answer"]]]


def test_readme_command_line_scores_a_tenant_adapter(server, tasks, tmp_path):
    """`lm_eval run` as the README shows it; OPENAI_API_KEY is what lm-eval sends as the bearer key."""
    args = _model_args(server, ADAPTER, "completions")
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "local-completions",
           "--model_args", ",".join(f"{k}={v}" for k, v in args.items()),
           "--tasks", "loramux_probe", "--include_path", str(tasks), "--output_path", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, **OFFLINE, "OPENAI_API_KEY": "a-tenant-key"})
    assert run.returncode == 0, run.stderr[-4000:]
    (result,) = tmp_path.glob("acme__support/results_*.json")
    got = json.loads(result.read_text())["results"]["loramux_probe"]
    assert got["acc,none"] == 0.0 and got["sample_len"] >= 3
    assert "loramux_probe" in run.stdout and "acc" in run.stdout  # the table a user reads
