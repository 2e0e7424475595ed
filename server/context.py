"""One record per request: who asked for what, and how it went.

The ASGI middleware opens it (request id, endpoint, clock), the router records the model
and the adapter handle it resolved, generation adds tokens and the first-token time; when
the response has been sent the middleware closes it into one `Outcome` that feeds metrics
(and, later, quotas). Routes get it through the `Ctx` dependency, not `request.state`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from .engine.protocol import AdapterHandle

SCOPE_KEY = "loramux.context"  # where the middleware puts it in the ASGI scope
ADMISSION_KEY = "loramux.admission"  # the scope's admission id, set by a Ray ingress (never from a header)


@dataclass(frozen=True)
class Outcome:
    request_id: str
    endpoint: str
    model: str  # the resolved `T/N` (or the base); "-" unless it resolved: unknown names never become labels
    status: int
    seconds: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: float | None = None  # streamed responses only
    generated: bool = False  # a generation ran to its end (tokens and latency count)
    error: str | None = None  # the error's `code` when it failed on purpose (invalid_adapter, ...)
    phases: dict[str, float] = field(default_factory=dict)  # resolve, load, queue, prefill (seconds)
    tenant: str | None = None  # the key's tenant (None: an open server)
    version: str = ""  # the adapter version that answered


@dataclass
class RequestContext:
    request_id: str
    endpoint: str | None  # None: not an endpoint we account for
    routing_key: str | None = None  # x-loramux-routing-key: which side of a canary split
    admission: str = field(default_factory=lambda: uuid.uuid4().hex)  # quotas' key: same for a retry
    tenant: str | None = None  # whose key it came with (None: an open server)
    key_id: str | None = None  # the key's id, for logs; never the key
    started: float = field(default_factory=time.perf_counter)
    model: str | None = None
    adapter: AdapterHandle | None = None
    release: Callable[[], Awaitable[None]] | None = None  # gives the adapter back when the response is done
    reserve: Callable[[int], Awaitable[None]] | None = None  # claims a request's tokens against its key's quota
    headers: Callable[[], dict[str, str]] | None = None  # extra response headers, read as the response starts
    on_close: list[Callable[[RequestContext], None]] = field(default_factory=list)
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft: float | None = None
    phases: dict[str, float] = field(default_factory=dict)  # where the time to first token went
    generated: bool = False
    slot_wait: float = 0.0  # seconds its adapter waited for a batch slot

    def log_fields(self) -> dict[str, str | None]:
        """What a log line says about the request: never the key, only its id and tenant."""
        return {"request_id": self.request_id, "endpoint": self.endpoint, "model": self.model,
                "tenant": self.tenant, "key_id": self.key_id}

    def resolved(self, model: str, adapter: AdapterHandle | None,
                 release: Callable[[], Awaitable[None]] | None = None) -> None:
        self.model, self.adapter, self.release = model, adapter, release

    def finished(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens, self.completion_tokens, self.generated = prompt_tokens, completion_tokens, True

    def first_token(self) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.started

    def waited_for_slot(self, seconds: float) -> None:
        """Time spent waiting for the adapter's batch slot (slots.py), before the engine's queue."""
        if "prefill" not in self.phases:
            self.slot_wait = max(self.slot_wait, seconds)  # a request's prompts wait side by side

    def engine_timing(self, queue_s: float | None, first_token_s: float | None) -> None:
        """The engine's own split of its time to first token (first report wins); `queue`
        includes the wait for a batch slot."""
        if first_token_s is not None and "prefill" not in self.phases:
            self.phases["queue"] = self.slot_wait + (queue_s or 0.0)
            self.phases["prefill"] = max(first_token_s - (queue_s or 0.0), 0.0)

    def server_timing(self) -> str:
        """The `Server-Timing` header: where this request's time to first token went, in ms."""
        return ", ".join(f"{k};dur={v * 1000:.1f}" for k, v in self.phases.items())

    async def close(self, status: int) -> Outcome:
        """The response is done: give the adapter back and say how it went."""
        if self.release is not None:
            release, self.release = self.release, None
            await release()
        for done in self.on_close:
            done(self)
        self.on_close.clear()
        return Outcome(self.request_id, self.endpoint or "-", self.model or "-", status,
                       time.perf_counter() - self.started, self.prompt_tokens, self.completion_tokens,
                       self.ttft, self.generated, self.error, dict(self.phases), self.tenant,
                       self.adapter.version if self.adapter is not None else "")


def request_context(request: Request) -> RequestContext:
    return request.scope[SCOPE_KEY]


Ctx = Annotated[RequestContext, Depends(request_context)]
