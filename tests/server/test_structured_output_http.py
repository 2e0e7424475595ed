"""`response_format` through the HTTP layer over the fake engine: what reaches the engine and the
errors a bad format gets. That the real engine's output follows the schema is in tests/integration."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from jsonschema import validate
from openai import OpenAI

SCHEMA = {"type": "object", "properties": {"color": {"enum": ["red", "green"]}, "size": {"type": "integer"}},
          "required": ["color", "size"], "additionalProperties": False}


def test_json_schema_and_json_object(oai: OpenAI):
    fmt = {"type": "json_schema", "json_schema": {"name": "thing", "schema": SCHEMA, "strict": True}}
    out = oai.chat.completions.create(model="acme/support", messages=[{"role": "user", "content": "hi"}],
                                      max_tokens=20, response_format=fmt)
    validate(json.loads(out.choices[0].message.content), SCHEMA)
    obj = oai.completions.create(model="tiny", prompt="x", max_tokens=20, extra_body={"response_format":
                                                                                      {"type": "json_object"}})
    assert isinstance(json.loads(obj.choices[0].text), dict)
    text = oai.completions.create(model="tiny", prompt="x", max_tokens=3,
                                  extra_body={"response_format": {"type": "text"}})
    assert text.choices[0].text.startswith(" ")  # plain words


@pytest.mark.parametrize("fmt", [
    {"type": "json_schema"},  # no schema
    {"type": "json_object", "json_schema": {"schema": SCHEMA}},  # a schema it would ignore
    {"type": "json_schema", "json_schema": {"schema": {"type": "no-such-type"}}},
    {"type": "yaml"},
])
def test_a_bad_response_format_is_a_400_naming_it(client: TestClient, fmt):
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                                  "max_tokens": 5, "response_format": fmt})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("response_format"), r.text
