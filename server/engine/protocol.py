"""The engine seam: what the HTTP layer needs from an inference engine.

Shaped after vLLM's `EngineClient`, reduced to what loramux uses, so the routers can be
unit-tested against `FakeEngine` and run unchanged on `VLLMEngine` (CPU or GPU build).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from loramux.adapters.errors import LoramuxError


class EngineUnavailable(LoramuxError):
    """The engine is not answering (dead or still starting)."""

    status_code = 503
    type = "service_unavailable"
    code = "engine_unavailable"


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


@dataclass(frozen=True)
class GenerateRequest:
    request_id: str
    prompt_token_ids: Sequence[int]
    sampling: SamplingOptions
    adapter: str | None = None  # served adapter name; None = the base model
    stream: bool = False  # True: yield deltas as they come; False: one final chunk


@dataclass
class ChoiceDelta:
    index: int
    text: str  # new text since the previous chunk for this choice
    new_tokens: int  # how many completion tokens `text` adds
    finish_reason: str | None = None  # "stop" | "length" once finished


@dataclass
class GenerateChunk:
    prompt_tokens: int
    choices: list[ChoiceDelta] = field(default_factory=list)


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter the engine may serve: its served name and a local PEFT directory."""

    name: str
    path: Path


@runtime_checkable
class Engine(Protocol):
    base_name: str
    max_model_len: int

    def encode(self, text: str) -> list[int]: ...

    def render_chat(self, messages: list[dict[str, str]]) -> list[int]: ...

    def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateChunk]: ...

    async def add_adapter(self, adapter: AdapterSpec) -> None: ...

    async def remove_adapter(self, name: str) -> bool: ...

    def adapters(self) -> list[AdapterSpec]: ...

    def has_adapter(self, name: str) -> bool: ...

    async def list_loaded(self) -> list[str]: ...

    async def check_health(self) -> None: ...

    async def abort(self, request_id: str) -> None: ...

    def shutdown(self) -> None: ...
