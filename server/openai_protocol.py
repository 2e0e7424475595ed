"""Pydantic models of the OpenAI HTTP surface loramux serves.

Unknown fields are accepted and ignored, as OpenAI clients send more than we use; the
fields we do use are validated so a bad value becomes a 400 naming its `param`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from loramux.adapters.merge import MERGES


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Lenient):
    include_usage: bool = False


# OpenAI fields that change the answer and that loramux does not implement yet: refused with a
# 400 naming the field rather than silently ignored. Value: the "off" values that are accepted.
UNSUPPORTED = {"suffix": (None, ""), "functions": (None, []), "function_call": (None, "none")}
# Fields that never change the answer: accepted and ignored. Any other unknown field is a 400.
IGNORED = {"store", "metadata", "service_tier", "prompt_cache_key", "safety_identifier"}
# Rules between fields that validators (or the engine) enforce, stated in the schema too: if -> then.
IMPLIES = [({"temperature": {"type": "number", "exclusiveMaximum": 1e-5}},  # greedy sampling has one answer
            {"properties": {"n": {"const": 1}}}),
           ({"temperature": {"type": "number", "exclusiveMaximum": 1e-5}},
            {"properties": {"best_of": {"enum": [None, 1]}}}),
           ({"top_logprobs": {"type": "integer", "minimum": 1}},
            {"properties": {"logprobs": {"const": True}}, "required": ["logprobs"]})]
MergeName = Literal[tuple(MERGES)]
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


def _as_served(schema: dict[str, Any]) -> None:
    """What the server takes, exactly: the fields it ignores, the unimplemented ones at their "off"
    values, and no others (any other field is a 400); and the rules between fields it has."""
    props = schema["properties"]
    props.update({name: {} for name in IGNORED if name not in props})
    props.update({name: {"enum": list(off)} for name, off in UNSUPPORTED.items() if name not in props})
    schema["additionalProperties"] = False
    rules = [{"if": {"properties": cond, "required": list(cond)}, "then": then}
             for cond, then in IMPLIES if set(cond) | set(then["properties"]) <= set(props)]
    if rules:
        schema["allOf"] = rules


def _json_schema(v: dict[str, Any] | None) -> dict[str, Any] | None:
    from jsonschema import Draft202012Validator, SchemaError

    try:
        Draft202012Validator.check_schema(v or {})
    except SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
    return v


class JsonSchemaFormat(BaseModel):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None  # the output always follows the schema, strict or not

    _valid_schema = field_validator("schema_")(_json_schema)


class ResponseFormat(BaseModel):
    """`text`, any JSON object (`json_object`), or JSON following `json_schema.schema`."""

    model_config = ConfigDict(json_schema_extra={
        "if": {"properties": {"type": {"const": "json_schema"}}},
        "then": {"required": ["json_schema"], "properties": {"json_schema": {"type": "object"}}},
        "else": {"properties": {"json_schema": {"type": "null"}}}})

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type json_schema, and only then")
        return self


class AdapterPart(BaseModel):
    name: str
    weight: float = 1.0


class SamplingFields(_Lenient):
    model_config = ConfigDict(extra="allow", json_schema_extra=_as_served)

    model: str
    adapters: list[AdapterPart] | None = None
    """loramux: serve the merge of these adapters (`extra_body`), built once per recipe."""
    merge: MergeName = "cat"
    """loramux: how `adapters` (or `model: "T/A+T/B"`) combine: cat, linear, ties, dare_ties, dare_linear."""
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    stop: Annotated[Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[str, Field(min_length=1)]],
                                                                   Field(max_length=4)] | None,
                    Field(validate_default=True)] = None
    seed: int | None = None
    n: Annotated[int, Field(ge=1, le=16)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    logit_bias: Annotated[dict[int, Annotated[float, Field(ge=-100.0, le=100.0)]] | None,
                          Field(json_schema_extra={"propertyNames": {"pattern": "^(0|[1-9][0-9]{0,8})$"}})] = None
    """Added to a token's logit before sampling, by token id (-100 bans it, 100 all but forces it)."""
    response_format: ResponseFormat | None = None
    """Constrain the answer to JSON: any object, or one following a JSON Schema (no free whitespace)."""
    user: str | None = None
    """The end user: logged, and the key that keeps a user on one side of a canary split."""
    # vLLM's extra sampling parameters
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    """Stop after any of these tokens."""
    min_tokens: Annotated[int, Field(ge=0)] = 0
    """Generate at least this many tokens before a stop or end-of-sequence may end the answer."""
    repetition_penalty: Annotated[float, Field(gt=0.0, le=2.0)] = 1.0
    """Above 1 discourages tokens already in the prompt or the answer (1: off)."""
    top_k: Annotated[int, Field(ge=-1)] = 0
    """Sample from the k most likely tokens only (0 or -1: all)."""
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    """Drop tokens less likely than this fraction of the most likely one."""
    ignore_eos: bool = False
    """Keep generating past end-of-sequence, up to max_tokens (benchmarks)."""

    def logprob_counts(self) -> tuple[int | None, int | None]:
        """(per completion token, per prompt token): how many alternatives the engine returns; None: none."""
        return None, None

    def samples(self) -> int:
        """Answers generated per prompt, of which `n` are returned."""
        return self.n

    def unsupported(self) -> list[str]:
        """Fields loramux would otherwise silently ignore: unknown ones, and known ones it does not implement."""
        extra = self.model_extra or {}
        return sorted(k for k, v in extra.items() if k not in IGNORED and v not in UNSUPPORTED.get(k, ()))

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops


MAX_LOGPROBS = 20  # vLLM's default `max_logprobs`, and OpenAI's bound on chat's top_logprobs


class CompletionRequest(SamplingFields):
    prompt: str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    """Text, texts, token ids or lists of them; an empty text starts from the model's start token."""
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    """Per token: its log-probability and this many most likely alternatives."""
    echo: bool = False
    """Return the prompt before the completion, with the prompt tokens' log-probabilities when `logprobs` is set."""
    best_of: Annotated[int, Field(ge=1, le=16)] | None = None
    """Generate this many (at least `n`) and return the `n` with the highest log-probability per token; not with `stream`."""

    def samples(self) -> int:
        return self.best_of or self.n

    def logprob_counts(self) -> tuple[int | None, int | None]:
        return self.logprobs, self.logprobs if self.echo and self.logprobs is not None else None


class FunctionDef(BaseModel):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    """JSON Schema of the arguments (none: any object)."""
    strict: bool | None = None  # the arguments always follow the schema, strict or not

    _valid_schema = field_validator("parameters")(_json_schema)


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDef


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: FunctionName


class FunctionCall(_Lenient):
    name: str
    arguments: str
    """The arguments as JSON text, as the model wrote them."""


class ToolCall(_Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ChatMessage(_Lenient):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    """An assistant turn's calls, passed to the chat template with their arguments parsed."""
    tool_call_id: str | None = None
    """A tool turn: the call it answers."""

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""

    def for_template(self) -> dict[str, Any]:
        """What a chat template reads: tool calls' arguments as objects (HF's convention, and vLLM's)."""
        out: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            out["tool_calls"] = [{"id": c.id, "type": c.type, "function": {
                "name": c.function.name, "arguments": _parsed(c.function.arguments)}} for c in self.tool_calls]
        return out


def _parsed(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    logprobs: bool = False
    """Return each output token's log-probability."""
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    """With `logprobs`: this many most likely alternatives per token."""
    tools: list[Tool] | None = None
    """Functions the model may call: shown to it through the chat template."""
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    """`required` or a named function: the answer is tool calls whose arguments follow the function's
    schema, on any base. `auto` (the default with tools): the model chooses; needs --tool-call-parser."""
    parallel_tool_calls: bool = True
    """With `required`: False allows one call only."""

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return v

    def logprob_counts(self) -> tuple[int | None, int | None]:
        return (self.top_logprobs or 0) if self.logprobs else None, None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "loramux"
    root: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class LoadAdapterRequest(BaseModel):
    lora_name: str
    lora_path: str | None = None  # None: a registry name, read afresh (after an alias move)


class UnloadAdapterRequest(BaseModel):
    lora_name: str


class AdapterNameRequest(BaseModel):
    """loramux's residency calls: pin, unpin, reload one served name (`T/N`, `T/N@ALIAS`, ...)."""

    name: str


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    """OpenAI's error shape: `code` is a machine-readable string or null, never the HTTP status."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
