"""Schemathesis over loramux's /openapi.json, as `st run` does it: every phase, every check.

The run is the CLI's engine (`schemathesis.engine`), not the pytest plugin: the plugin's lazy
schemas (a schema from a fixture, which a server started by a fixture needs) do not run under
pytest 9. Schema-valid requests are kept inside what a schema cannot say about one model: `model`
(and the admin calls' names) drawn from the served names, token ids inside the vocabulary, and
`max_tokens` small enough that the prompt and the answer fit the context and the run stays short.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import schemathesis
from schemathesis.engine import events, from_schema
from schemathesis.engine.statistic import Statistic

NAME_FIELDS = ("model", "name", "lora_name")  # the served name a body addresses
TOKEN_LISTS = ("stop_token_ids",)


@dataclass
class Served:
    """What one server serves: the names a request may address, its vocabulary, an answer's bound."""

    names: list[str]
    vocab_size: int
    max_tokens: int = 8
    max_prompt_chars: int = 32


@dataclass
class FuzzReport:
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _pick(options: list[str], seed: object) -> str:
    return options[zlib.crc32(repr(seed).encode()) % len(options)]


def _int(value: object) -> bool:
    """JSON integers, which Schemathesis may also send as whole floats (`3.0`)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bounded(body: dict, served: Served) -> dict:
    """A schema-valid body kept schema-valid, and inside the limits a schema cannot state."""
    body = dict(body)
    for key in NAME_FIELDS:
        if isinstance(body.get(key), str):
            body[key] = _pick(served.names, body)
    cap = served.max_tokens
    for key in ("max_tokens", "max_completion_tokens"):
        if _int(body.get(key)):
            cap = min(cap, int(body[key]))
            body[key] = min(int(body[key]), served.max_tokens)
    if not _int(body.get("max_tokens")) and not _int(body.get("max_completion_tokens")):
        body["max_tokens"] = cap  # chat's default is the whole context
    if _int(body.get("min_tokens")):
        body["min_tokens"] = min(int(body["min_tokens"]), cap)
    if "prompt" in body:
        body["prompt"] = _prompt(body["prompt"], served)
    if isinstance(body.get("messages"), list):
        body["messages"] = [_message(m, served) for m in body["messages"][:2]]
    if isinstance(body.get("stop_token_ids"), list):
        body["stop_token_ids"] = [_token(t, served) for t in body["stop_token_ids"]]
    if "tools" in body or "tool_choice" in body:
        _tools(body)
    if _int(body.get("best_of")):  # at least n; more than n only without stream
        n = int(body["n"]) if _int(body.get("n")) else 1
        body["best_of"] = n if body.get("stream") is True else max(int(body["best_of"]), n)
    if isinstance(body.get("logit_bias"), dict):
        body["logit_bias"] = {str(int(k) % served.vocab_size): v for k, v in body["logit_bias"].items()}
    return body


def _tools(body: dict) -> None:
    """Tools the request's tool_choice can use: one at most (a chat template prints it into the
    prompt), a small argument schema, the named one it; `auto` (which needs a server's tool
    parser) becomes `required`."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)][:1]
    body["tools"] = [{"type": "function", "function": {"name": f"f{i}", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer"}}}}} for i, _ in enumerate(tools)] or None
    choice = body.get("tool_choice")
    if not tools:
        body["tool_choice"] = None
    elif isinstance(choice, dict):
        body["tool_choice"] = {"type": "function", "function": {"name": "f0"}}
    elif choice in (None, "auto"):
        body["tool_choice"] = "required"
    if isinstance(body.get("tool_choice"), dict) or body.get("tool_choice") == "required":
        body.pop("response_format", None)  # the answer is the calls


def _token(t, served: Served):
    return int(t) % served.vocab_size if _int(t) else t


def _prompt(p, served: Served):
    n = served.max_prompt_chars
    if isinstance(p, str):
        return p[:n]
    if isinstance(p, list):
        return [_prompt(x, served) if isinstance(x, (str, list)) else _token(x, served) for x in p[:n]]
    return p


MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id")
PART_FIELDS = ("type", "text", "image_url")


def _few_tokens(text: str, n: int) -> str:
    """At most `n` characters, each one byte (a rare character is several byte-level tokens)."""
    return text[:n].encode("ascii", "replace").decode()


def _message(m, served: Served):
    """A message's own fields, short (extra fields the schema allows are dropped: a chat template
    may print them, and two messages, the template and a tool must fit the context)."""
    if not isinstance(m, dict):
        return m
    m = {k: v for k, v in m.items() if k in MESSAGE_FIELDS}
    if m.get("tool_calls"):  # a past call, short
        m["tool_calls"] = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    for key in ("name", "tool_call_id"):
        if isinstance(m.get(key), str):
            m[key] = _few_tokens(m[key], 8)
    if isinstance(m.get("content"), str):
        m["content"] = _few_tokens(m["content"], served.max_prompt_chars // 2)
    elif isinstance(m.get("content"), list):
        m["content"] = [{k: _few_tokens(v, 8) if k == "text" and isinstance(v, str) else v for k, v in part.items()
                         if k in PART_FIELDS} if isinstance(part, dict) else part for part in m["content"][:2]]
    return m


def fuzz(schema: schemathesis.BaseSchema, served: Served) -> FuzzReport:
    """Run every phase and check over `schema`; the cases it sent and every failure, one line each."""

    @schema.hook
    def map_case(context, case):
        meta = case.meta
        if isinstance(case.body, dict) and meta is not None and meta.generation.mode.is_positive:
            case.body = _bounded(case.body, served)
        return case

    report, statistic = FuzzReport(), Statistic()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.is_test_scenario:
            statistic.on_scenario_finished(event.recorder)
        elif isinstance(event, events.EngineFinished) and event.failures:
            statistic.record_run_check_failures(event.failures, label="run")
        elif isinstance(event, events.NonFatalError):
            report.errors.append(f"{event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    report.cases = statistic.total_cases
    for label, groups in statistic.failures.items():
        for group in groups.values():
            status = group.response.status_code if group.response is not None else "-"
            body = group.response.content[:300] if group.response is not None else b""
            report.failures += [f"{label}: {f.title}: {f.message} -> {status} {body!r}" for f in group.failures]
    return report


def config(*, max_examples: int, headers: dict[str, str] | None = None, seed: int = 0) -> schemathesis.Config:
    """All checks, all phases, every failure (not just each operation's first), reproducible."""
    return schemathesis.Config.from_dict({"seed": seed, "continue-on-failure": True, "checks": {"enabled": True},
                                          "generation": {"max-examples": max_examples}, "headers": headers or {}})
