"""lm-evaluation-harness scores the real base and a tenant's adapter through loramux.

The task ships with the tests (data/smollm2_easy_mc.jsonl): 20 questions with obvious answers and
three one-word choices, scored by log-likelihood (`multiple_choice`, `local-completions`, prompt
logprobs with `echo`). The base gets all 20 right on PEFT (measured), so an accuracy near chance
(1/3) means the serving path broke, not the model. Each log-likelihood lm-eval reports must be a
PEFT forward pass's over the same tokens, so the reported accuracy is the direct computation's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.integration.test_lm_eval import OFFLINE, _evaluator, _task_yaml
from tests.integration.test_real_base import A, one_thread

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data" / "smollm2_easy_mc.jsonl"
TASK = "smollm2_easy"
CONTEXT = "Question: {question}\nAnswer:"
TOL = 1e-3


@pytest.fixture(scope="module")
def evaluate(smollm2_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm2_tasks")
    body = ('output_type: multiple_choice\ndoc_to_text: "Question: {{question}}\\nAnswer:"\n'
            "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\nmetric_list:\n  - metric: acc\n")
    (root / f"{TASK}.yaml").write_text(_task_yaml(TASK, DATA, root / "hf-cache", body))
    with pytest.MonkeyPatch.context() as env:
        for key, value in OFFLINE.items():
            env.setenv(key, value)
        yield _evaluator(smollm2_server, root)


@pytest.fixture(scope="module")
def direct(smollm2_server) -> dict[str, dict[str, list[float]]]:
    """model -> question -> each choice's log-likelihood in PEFT, the continuation split as lm-eval
    splits it (context and context + " " + choice encoded whole, the difference scored)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    server = smollm2_server
    tok = AutoTokenizer.from_pretrained(server.base_dir)
    docs = [json.loads(line) for line in DATA.read_text().splitlines()]
    pairs = []
    for doc in docs:
        context = tok.encode(CONTEXT.format(**doc), add_special_tokens=False)
        for choice in doc["choices"]:
            whole = tok.encode(CONTEXT.format(**doc) + " " + choice, add_special_tokens=False)
            assert whole[:len(context)] == context, (doc, choice)
            pairs.append((whole, len(context)))
    width = max(len(w) for w, _ in pairs)
    ids = torch.tensor([w + [0] * (width - len(w)) for w, _ in pairs])  # right padding: causal, never seen
    out = {}
    with one_thread(), torch.no_grad():
        model = AutoModelForCausalLM.from_pretrained(server.base_dir, dtype=torch.float32).eval()
        for name in (server.base_name, A):
            if name == A:
                model = PeftModel.from_pretrained(model, server.adapters[A]).eval()
            rows = torch.log_softmax(model(ids).logits.float(), -1)
            lls = iter([sum(rows[i, j - 1, w[j]].item() for j in range(n, len(w))) for i, (w, n) in enumerate(pairs)])
            out[name] = {doc["question"]: [next(lls) for _ in doc["choices"]] for doc in docs}
    return out


@pytest.fixture(scope="module")
def scores() -> dict:
    found: dict = {}
    yield found
    print(f"\nlm-eval {TASK} acc through loramux on SmolLM2: {json.dumps(found, sort_keys=True)}", file=sys.stderr)


@pytest.mark.parametrize("model", ["smollm2", A])
def test_lm_eval_scores_the_served_model(smollm2_server, evaluate, direct, scores, model):
    out = evaluate(model, TASK)
    samples = out["samples"][TASK]
    assert len(samples) == 20
    right = 0
    for sample in samples:
        doc, want = sample["doc"], direct[model][sample["doc"]["question"]]
        got = [float(ll) for ((ll, _),) in sample["resps"]]
        assert got == pytest.approx(want, abs=TOL), (model, doc["question"])
        right += max(range(len(want)), key=want.__getitem__) == doc["label"]
    acc = scores[model] = out["results"][TASK]["acc,none"]
    assert acc == right / len(samples)  # what PEFT's own log-likelihoods give
    if model == smollm2_server.base_name:
        assert acc >= 0.9, acc  # chance is 1/3; PEFT gets all 20 right
