"""Log-probabilities from the real engine equal a PEFT forward pass of the same base + adapter
(fp32, within 1e-3), for the base and every adapter, streamed and not: the prompt's through
`echo` (lm-evaluation-harness's loglikelihood request) and the completion's, in both endpoints."""

from __future__ import annotations

import json

import httpx
import pytest
from openai import OpenAI

pytestmark = pytest.mark.integration

PROMPT = "the cat sees the robot near the sea"
TOL = 1e-3


@pytest.fixture(scope="module")
def reference(server):
    """model -> a function from token ids to PEFT's log-softmax rows (one per position)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    models = {}
    for name in [server.base_name, *server.adapters]:
        model = AutoModelForCausalLM.from_pretrained(server.base_dir, dtype=torch.float32)
        if name in server.adapters:
            model = PeftModel.from_pretrained(model, server.adapters[name])
        models[name] = model.eval()

    def logsoftmax(name: str, ids: list[int]):
        with torch.no_grad():
            return torch.log_softmax(models[name](torch.tensor([ids])).logits[0].float(), -1)
    return logsoftmax


def _tokenizer(server):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(server.base_dir)


def _stream(server, path: str, body: dict) -> list[dict]:
    with httpx.stream("POST", f"{server.url}{path}", json=body | {"stream": True}, timeout=120) as r:
        assert r.status_code == 200
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    return [c for line in lines for c in json.loads(line)["choices"]]


def _greedy(reference, name: str, ids: list[int], steps: int) -> list[int]:
    """The prompt and PEFT's greedy continuation (the server's too: the mixed-batch test checks that)."""
    full = list(ids)
    for _ in range(steps):
        full.append(int(reference(name, full)[-1].argmax()))
    return full


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_echoed_prompt_and_completion_logprobs_match_peft(server, reference, stream):
    tokenizer = _tokenizer(server)
    ids = tokenizer.encode(PROMPT, add_special_tokens=False)
    for name in [server.base_name, *server.adapters]:
        body = {"model": name, "prompt": PROMPT, "max_tokens": 3, "temperature": 0, "echo": True, "logprobs": 2}
        if stream:
            parts = _stream(server, "/v1/completions", body)
            lp = {k: [x for p in parts for x in p["logprobs"][k]]
                  for k in ("tokens", "token_logprobs", "top_logprobs")}
        else:
            lp = httpx.post(f"{server.url}/v1/completions", json=body, timeout=120).json()["choices"][0]["logprobs"]
        full = _greedy(reference, name, ids, 3)
        assert "".join(lp["tokens"][len(ids):]) == tokenizer.decode(full[len(ids):]), name
        assert len(lp["token_logprobs"]) == len(full) and lp["token_logprobs"][0] is None
        rows = reference(name, full)  # prompt and completion scored by PEFT in one teacher-forced pass
        want = [rows[i - 1, full[i]].item() for i in range(1, len(full))]
        assert lp["token_logprobs"][1:] == pytest.approx(want, abs=TOL), name
        for i, top in enumerate(lp["top_logprobs"][1:], start=1):
            # the 2 best and the chosen token, by text (two tokens with one text share an entry)
            allowed = [*rows[i - 1].topk(2).values.tolist(), want[i - 1]]
            assert max(top.values()) == pytest.approx(allowed[0], abs=TOL), (name, i)
            assert all(min(abs(v - a) for a in allowed) < TOL for v in top.values()), (name, i, top)


def test_chat_logprobs_match_peft(server, reference):
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    tokenizer = _tokenizer(server)
    messages = [{"role": "user", "content": "where is the river?"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer.encode(text, add_special_tokens=False)  # as the server renders a chat
    for name in [server.base_name, *server.adapters]:
        out = client.chat.completions.create(model=name, messages=messages, max_tokens=4, temperature=0,
                                             logprobs=True, top_logprobs=3)
        content = out.choices[0].logprobs.content
        assert len(content) == out.usage.completion_tokens
        rows = reference(name, list(prompt_ids))
        first = content[0]
        assert first.logprob == pytest.approx(rows[-1].max().item(), abs=TOL), name  # greedy: the best token
        assert [t.logprob for t in first.top_logprobs] == pytest.approx(rows[-1].topk(3).values.tolist(), abs=TOL)
