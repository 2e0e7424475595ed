"""Per-key quotas: requests and tokens per minute and requests in flight, with OpenAI's headers.

Windows slide over the last minute. Admission and its bookkeeping run without an await, so on
one event loop a burst of concurrent requests can never over-admit. Tokens are reserved when
a request knows its size (its prompt, plus `max_tokens` for each choice, as OpenAI counts
against TPM) and settled to what it really used when it ends. Every response to a limited key
carries `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, remaining counted after that
request, so the official client's own retry waits the right time on a 429.

Everything is keyed by the request's admission id, so one book can serve many replicas (one Ray
actor holds it: the `QuotaBook` methods are async for that): a request retried on another
replica after its first one died is admitted again for free, and `abandon` frees what a dead
replica held.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from loramux.adapters.errors import LoramuxError

from .keys import KeyRecord

WINDOW_S = 60.0


class QuotaExceeded(LoramuxError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, limit: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.limit = limit  # requests | tokens | in_flight
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(math.ceil(self.retry_after_s)),
                "retry-after-ms": str(math.ceil(self.retry_after_s * 1000))}


def _duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `250ms`."""
    if seconds < 1:
        return f"{max(math.ceil(seconds * 1000), 1)}ms"
    minutes, secs = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass
class _Usage:
    requests: deque[tuple[float, str]] = field(default_factory=deque)  # (time, admission id) in the window
    counted: set[str] = field(default_factory=set)  # the admission ids in `requests`
    tokens: deque[list] = field(default_factory=deque)  # [time, tokens, admission id], settled in place
    reserved: dict[str, list] = field(default_factory=dict)  # admission id -> its entry in `tokens`
    in_flight: set[str] = field(default_factory=set)  # admission ids

    def expire(self, now: float) -> None:
        while self.requests and self.requests[0][0] <= now - WINDOW_S:
            self.counted.discard(self.requests.popleft()[1])
        while self.tokens and self.tokens[0][0] <= now - WINDOW_S:
            entry = self.tokens.popleft()
            if self.reserved.get(entry[2]) is entry:
                del self.reserved[entry[2]]

    def tokens_used(self) -> int:
        return sum(entry[1] for entry in self.tokens)

    def tokens_free_in(self, need: int, limit: int, now: float) -> float:
        """Seconds until `need` more tokens fit under `limit` (reservations leave oldest first)."""
        used = self.tokens_used()
        for at, t, _ in self.tokens:
            used -= t
            if used + need <= limit:
                return max(at + WINDOW_S - now, 0.001)
        return WINDOW_S


class QuotaBook(Protocol):
    """What the routers ask of quotas: `Quotas` in one process, a Ray actor's book across replicas."""

    async def admit(self, key: KeyRecord, admission: str) -> None: ...
    async def reserve(self, key: KeyRecord, admission: str, tokens: int) -> None: ...
    def finish(self, key: KeyRecord, admission: str, used_tokens: int | None) -> None: ...
    def headers(self, key: KeyRecord) -> dict[str, str]: ...


class Quotas:
    """What each key has used; keys without limits cost nothing here."""

    def __init__(self, on_reject: Callable[[str, str], None] = lambda tenant, limit: None) -> None:
        self._usage: dict[str, _Usage] = {}
        self._on_reject = on_reject  # (tenant, limit): the metrics count it

    def _reject(self, key: KeyRecord, exc: QuotaExceeded) -> QuotaExceeded:
        self._on_reject(key.tenant, exc.limit)
        return exc

    def _of(self, key: KeyRecord) -> _Usage:
        usage = self._usage.setdefault(key.id, _Usage())
        usage.expire(time.monotonic())
        return usage

    async def admit(self, key: KeyRecord, admission: str) -> None:
        """Count one request, or QuotaExceeded (requests per minute, in flight); an admission id
        already counted in the window (a retry) is not counted twice."""
        usage, now = self._of(key), time.monotonic()
        if admission in usage.in_flight or admission in usage.counted:
            usage.in_flight.add(admission)
            return
        if key.max_inflight is not None and len(usage.in_flight) >= key.max_inflight:
            raise self._reject(key, QuotaExceeded(
                f"Rate limit reached for key {key.id} ({key.tenant}) on requests in flight: limit "
                f"{key.max_inflight}. Retry when one finishes.", limit="in_flight", retry_after_s=1.0))
        if key.rpm is not None and len(usage.requests) >= key.rpm:
            wait = usage.requests[0][0] + WINDOW_S - now
            raise self._reject(key, QuotaExceeded(
                f"Rate limit reached for key {key.id} ({key.tenant}) on requests per min (RPM): limit "
                f"{key.rpm}. Please try again in {_duration(wait)}.", limit="requests", retry_after_s=wait))
        usage.requests.append((now, admission))
        usage.counted.add(admission)
        usage.in_flight.add(admission)

    async def reserve(self, key: KeyRecord, admission: str, tokens: int) -> None:
        """Hold `tokens` of the minute's budget for a request; QuotaExceeded if they do not fit.
        A retry's reservation replaces its first one."""
        if key.tpm is None:
            return
        usage, now = self._of(key), time.monotonic()
        if (earlier := usage.reserved.pop(admission, None)) is not None:
            earlier[1] = 0
        if tokens > key.tpm:
            raise self._reject(key, QuotaExceeded(
                f"Request too large for key {key.id} ({key.tenant}) on tokens per min (TPM): limit {key.tpm}, "
                f"requested {tokens} (prompt + max_tokens per choice). Lower max_tokens or shorten the prompt.",
                limit="tokens", retry_after_s=WINDOW_S))
        if usage.tokens_used() + tokens > key.tpm:
            wait = usage.tokens_free_in(tokens, key.tpm, now)
            raise self._reject(key, QuotaExceeded(
                f"Rate limit reached for key {key.id} ({key.tenant}) on tokens per min (TPM): limit {key.tpm}, "
                f"used {usage.tokens_used()}, requested {tokens}. Please try again in {_duration(wait)}.",
                limit="tokens", retry_after_s=wait))
        entry = [now, tokens, admission]
        usage.tokens.append(entry)
        usage.reserved[admission] = entry

    def finish(self, key: KeyRecord, admission: str, used_tokens: int | None) -> None:
        """The request ended: free its in-flight place; settle its reservation to what it used
        (None: unknown, the reservation stands)."""
        usage = self._usage.get(key.id)
        if usage is None:
            return
        usage.in_flight.discard(admission)
        entry = usage.reserved.get(admission)
        if entry is not None and used_tokens is not None:
            entry[1] = min(entry[1], used_tokens)

    def abandon(self, admission: str) -> None:
        """Its replica died with it: free its in-flight place (a retry admits it again for free)."""
        for usage in self._usage.values():
            usage.in_flight.discard(admission)

    def headers(self, key: KeyRecord) -> dict[str, str]:
        """OpenAI's rate-limit headers for a limited key, after the request being answered."""
        usage, now, out = self._of(key), time.monotonic(), {}
        if key.rpm is not None:
            reset = usage.requests[0][0] + WINDOW_S - now if usage.requests else 0.0
            out |= {"x-ratelimit-limit-requests": str(key.rpm),
                    "x-ratelimit-remaining-requests": str(max(key.rpm - len(usage.requests), 0)),
                    "x-ratelimit-reset-requests": _duration(max(reset, 0.0))}
        if key.tpm is not None:
            reset = usage.tokens[0][0] + WINDOW_S - now if usage.tokens else 0.0
            out |= {"x-ratelimit-limit-tokens": str(key.tpm),
                    "x-ratelimit-remaining-tokens": str(max(key.tpm - usage.tokens_used(), 0)),
                    "x-ratelimit-reset-tokens": _duration(max(reset, 0.0))}
        return out
