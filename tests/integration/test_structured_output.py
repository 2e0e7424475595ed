"""`response_format` on the real engine (vLLM's structured output, xgrammar on CPU): for the base
and every adapter, streamed and not, the answer parses and follows the schema. The tiny base is
weak, so this is the grammar's doing: without it the answers are plain words."""

from __future__ import annotations

import json

import pytest
from jsonschema import validate
from openai import OpenAI

pytestmark = pytest.mark.integration

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["color", "size", "tags"],
          "properties": {"color": {"enum": ["red", "green", "blue"]},
                         "size": {"type": "integer", "minimum": 1, "maximum": 9},
                         "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 2}}}


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)


def _streamed_text(stream) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_every_model_answers_json_that_follows_the_schema(server, client, stream):
    fmt = {"type": "json_schema", "json_schema": {"name": "thing", "schema": SCHEMA, "strict": True}}
    messages = [{"role": "user", "content": "describe the red box"}]
    for name in [server.base_name, *server.adapters]:
        out = client.chat.completions.create(model=name, messages=messages, max_tokens=60, temperature=0.7, seed=3,
                                             response_format=fmt, stream=stream)
        text = _streamed_text(out) if stream else out.choices[0].message.content
        validate(json.loads(text), SCHEMA)
        assert " " not in text  # no free whitespace


def test_json_object_and_the_unconstrained_answer(server, client):
    """Any JSON object. A weak model may write one string forever (OpenAI's answer is then cut off at
    max_tokens too), so a logit bias toward `"` and `}` keeps it short; without the grammar the
    same bias gives no JSON at all."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(server.base_dir)
    bias = {str(ids[0]): 8 for ids in (tok.encode(c, add_special_tokens=False) for c in '"}') if len(ids) == 1}
    assert len(bias) == 2, bias
    plain = client.completions.create(model=server.base_name, prompt="the cat sees", max_tokens=12, temperature=0,
                                      logit_bias=bias)
    with pytest.raises(json.JSONDecodeError):
        json.loads(plain.choices[0].text)
    for name in [server.base_name, *server.adapters]:
        out = client.completions.create(model=name, prompt="the cat sees", max_tokens=120, temperature=0,
                                        logit_bias=bias, extra_body={"response_format": {"type": "json_object"}})
        assert out.choices[0].finish_reason == "stop", out.choices[0].text
        assert isinstance(json.loads(out.choices[0].text), dict)
