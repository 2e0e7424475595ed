"""Log-probabilities and `echo` through the HTTP layer, over the fake engine (its chosen word
holds log(0.5); prompt token t has -(1 + t % 7 / 10)): the OpenAI shapes, streamed and not.
The values under the real engine are checked against PEFT in tests/integration."""

from __future__ import annotations

import json
import math

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

HALF = math.log(0.5)


def _stream_choices(client: TestClient, path: str, body: dict) -> list[dict]:
    with client.stream("POST", path, json=body | {"stream": True}) as r:
        assert r.status_code == 200
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    return [c for line in lines for c in json.loads(line)["choices"]]


def test_completion_logprobs_have_the_legacy_shape(oai: OpenAI):
    out = oai.completions.create(model="acme/support", prompt="hello", max_tokens=4, temperature=0, logprobs=2)
    lp = out.choices[0].logprobs
    assert "".join(lp.tokens) == out.choices[0].text and len(lp.tokens) == 4
    assert lp.token_logprobs == pytest.approx([HALF] * 4)
    assert all(len(top) == 2 and top[tok] == pytest.approx(HALF) for tok, top in zip(lp.tokens, lp.top_logprobs))
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(4)]


def test_echo_puts_the_prompt_and_its_logprobs_first(oai: OpenAI):
    """What lm-evaluation-harness sends for a loglikelihood: echo, logprobs, one token out."""
    out = oai.completions.create(model="tiny", prompt="cat", max_tokens=1, temperature=0, echo=True, logprobs=1)
    lp, text = out.choices[0].logprobs, out.choices[0].text
    assert text.startswith("cat") and len(text) > 3
    assert lp.tokens[:3] == ["c", "a", "t"] and len(lp.tokens) == 4
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing precedes the first token
    assert lp.token_logprobs[1:3] == pytest.approx([-(1 + ord("a") % 7 / 10), -(1 + ord("t") % 7 / 10)])
    assert lp.token_logprobs[3] == pytest.approx(HALF) and lp.text_offset[3] == 3
    assert out.usage.prompt_tokens == 3 and out.usage.completion_tokens == 1


def test_echo_without_logprobs_and_of_token_ids(oai: OpenAI):
    plain = oai.completions.create(model="tiny", prompt="dog", max_tokens=2, temperature=0, echo=True)
    assert plain.choices[0].text.startswith("dog") and plain.choices[0].logprobs is None
    ids = oai.completions.create(model="tiny", prompt=[100, 111, 103], max_tokens=2, temperature=0, echo=True)
    assert ids.choices[0].text == plain.choices[0].text  # token ids are decoded before the completion


def test_streamed_logprobs_equal_the_whole_response(client: TestClient):
    body = {"model": "acme/support", "prompt": "hey", "max_tokens": 5, "temperature": 0, "logprobs": 3,
            "echo": True}
    whole = client.post("/v1/completions", json=body).json()["choices"][0]
    parts = _stream_choices(client, "/v1/completions", body)
    assert "".join(p["text"] for p in parts) == whole["text"]
    for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        assert [x for p in parts for x in p["logprobs"][key]] == whole["logprobs"][key]


def test_chat_logprobs_and_top_logprobs(oai: OpenAI, client: TestClient):
    messages = [{"role": "user", "content": "hi"}]
    out = oai.chat.completions.create(model="globex/sales", messages=messages, max_tokens=3, temperature=0,
                                      logprobs=True, top_logprobs=2)
    content = out.choices[0].logprobs.content
    assert "".join(t.token for t in content) == out.choices[0].message.content
    assert all(t.logprob == pytest.approx(HALF) and len(t.top_logprobs) == 2 for t in content)
    assert all(t.bytes == list(t.token.encode()) for t in content)
    bare = oai.chat.completions.create(model="globex/sales", messages=messages, max_tokens=3, temperature=0,
                                       logprobs=True)
    assert all(t.top_logprobs == [] for t in bare.choices[0].logprobs.content)
    none = oai.chat.completions.create(model="globex/sales", messages=messages, max_tokens=3, temperature=0)
    assert none.choices[0].logprobs is None
    parts = _stream_choices(client, "/v1/chat/completions", {"model": "globex/sales", "messages": messages,
                                                             "max_tokens": 3, "temperature": 0, "logprobs": True})
    streamed = [t["token"] for p in parts for t in p["logprobs"]["content"]]
    assert streamed == [t.token for t in bare.choices[0].logprobs.content]


@pytest.mark.parametrize("path,body,param", [
    ("/v1/completions", {"prompt": "x", "logprobs": 21}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "logprobs": -1}, "logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "logprobs": True,
                              "top_logprobs": 21}, "top_logprobs"),
])
def test_bad_logprob_requests_name_the_field(client: TestClient, path, body, param):
    r = client.post(path, json={"model": "tiny", "max_tokens": 2} | body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
