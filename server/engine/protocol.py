"""The engine seam: tokenization, generation, loading adapters by handle, health.

Shaped after vLLM's `EngineClient`, reduced to what loramux uses. The engine keeps no
catalog: which name maps to which adapter is the serving side's (`server/catalog.py`), and a
request carries the `AdapterHandle` it was resolved to, so an unload or a new version never
changes what an admitted request runs. `tests/server/test_engine_contract.py` holds
`FakeEngine` and `VLLMEngine` to the same behaviour.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from loramux.adapters.errors import LoramuxError


class EngineUnavailable(LoramuxError):
    """The engine is not answering (dead or still starting)."""

    status_code = 503
    type = "service_unavailable"
    code = "engine_unavailable"


Tier = Literal["device", "host", "store"]  # where an adapter version is; "store": not in the engine


@dataclass(frozen=True)
class TokenLogprob:
    """One token of a prompt or completion with its log-probability under the served model
    (raw: before temperature or penalties), and the `top` most likely tokens at its position."""

    token_id: int
    text: str  # the token decoded on its own
    logprob: float | None  # None for a prompt's first token: nothing precedes it
    top: tuple[tuple[str, float], ...] = ()  # (text, logprob), most likely first


@dataclass(frozen=True)
class JsonOutput:
    """The answer is one JSON value without free whitespace: any object (schema None), or one
    following `schema` (JSON Schema as JSON text). Without free whitespace a weakly tuned model
    cannot pad the answer with spaces until max_tokens."""

    schema: str | None = None


@dataclass(frozen=True)
class ParsedToolCall:
    """A function call the tool parser found in an answer."""

    name: str
    arguments: str  # JSON text


@dataclass(frozen=True)
class SamplingOptions:
    """The OpenAI sampling knobs loramux passes through."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None  # per completion token: its logprob and this many top ones; None: none
    prompt_logprobs: int | None = None  # the same per prompt token (completions' `echo`)
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias)
    stop_token_ids: tuple[int, ...] = ()
    min_tokens: int = 0
    repetition_penalty: float = 1.0
    top_k: int = 0  # 0: all tokens
    min_p: float = 0.0
    ignore_eos: bool = False
    json: JsonOutput | None = None  # constrain the answer to JSON
    skip_special_tokens: bool = True  # False: keep them in the text (tool parsers look for some, e.g. <tool_call>)


@dataclass(frozen=True)
class AdapterHandle:
    """One loaded adapter version, as the engine runs it (vLLM's `LoRARequest` fields).

    `id` is unique for the server's life: a new version under the same name gets a new id,
    so a request holding the old handle still runs the old weights (loaded again from `path`
    if it was unloaded meanwhile).
    """

    name: str
    id: int
    path: Path
    version: str = ""  # sha256 of the adapter files: what `x-loramux-adapter-version` reports

    @property
    def engine_name(self) -> str:
        """Unique per version: vLLM tells LoRARequests apart by name, so two versions of one
        served name in a batch must not share it."""
        return f"{self.name}#{self.id}"


@dataclass(frozen=True)
class GenerateRequest:
    request_id: str
    prompt_token_ids: Sequence[int]
    sampling: SamplingOptions
    adapter: AdapterHandle | None = None  # None = the base model
    stream: bool = False  # True: yield deltas as they come; False: one final chunk
    priority: int = 0  # lower is served first when requests wait for a batch slot (server/fairness.py)


@dataclass
class ChoiceDelta:
    index: int
    text: str  # new text since the previous chunk for this choice
    new_tokens: int  # how many completion tokens `text` adds
    finish_reason: str | None = None  # "stop" | "length" once finished
    logprobs: list[TokenLogprob] | None = None  # one per new token, when the sampling asked


@dataclass
class GenerateChunk:
    prompt_tokens: int
    choices: list[ChoiceDelta] = field(default_factory=list)
    queue_s: float | None = None  # waiting for a batch slot, once the engine knows it
    first_token_s: float | None = None  # engine arrival -> first token (queue + prefill)
    prompt_logprobs: list[TokenLogprob] | None = None  # in the first chunk, when the sampling asked


@runtime_checkable
class Engine(Protocol):
    base_name: str
    max_model_len: int
    tool_parser: str | None  # finds tool calls in free answers (tool_choice "auto"); None: none configured
    vocab_size: int  # token ids a prompt may hold: [0, vocab_size)
    bos_token_id: int | None  # what an empty prompt becomes; None: the tokenizer has none

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str: ...

    def render_chat(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """The base's chat template over `messages` (and `tools`, for templates that show them)."""
        ...

    def parse_tool_calls(self, text: str, tools: list[dict]) -> tuple[str | None, list[ParsedToolCall]]:
        """(the content around them, the calls) in a finished answer, by the configured tool parser."""
        ...

    def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateChunk]: ...

    async def load(self, adapter: AdapterHandle) -> None: ...

    async def unload(self, adapter: AdapterHandle) -> None: ...

    async def pin(self, adapter: AdapterHandle, pinned: bool = True) -> None:
        """Keep a loaded adapter in host memory and a batch slot (False: let the LRU have it again)."""
        ...

    async def residency(self) -> dict[int, Tier]:
        """Where each adapter in the engine is: "device" (in a batch slot) or "host" (in memory only)."""
        ...

    async def check_health(self) -> None: ...

    def shutdown(self) -> None: ...
