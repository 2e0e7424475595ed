"""The cluster's one book, kept by one Ray actor every replica shares: the keys' quotas (a
limit of 60 requests a minute is 60 for the cluster) and each replica's latest metrics.

One actor serialises every admission, as one event loop does for a single process, so
replicas can never over-admit between them. Replicas push their metrics text every
`PUSH_S`; the ingress serves them merged, each series labelled by its replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .keys import KeyRecord
from .quotas import QuotaExceeded, Quotas

PUSH_S = 1.0  # how often a replica sends its metrics
STALE_S = 15.0  # a replica silent this long is gone: its series leave /metrics
Rejection = tuple[str, str, float]  # QuotaExceeded's message, limit and retry_after_s, as plain data


class ClusterBook:
    """The actor's state (`ray.remote(ClusterBook)`); plain data in and out."""

    def __init__(self) -> None:
        self.quotas = Quotas()
        self._metrics: dict[str, tuple[float, bytes]] = {}

    async def admit(self, key: KeyRecord, admission: str) -> tuple[dict[str, str], Rejection | None]:
        return await self._answer(key, self.quotas.admit(key, admission))

    async def reserve(self, key: KeyRecord, admission: str, tokens: int) -> tuple[dict[str, str], Rejection | None]:
        return await self._answer(key, self.quotas.reserve(key, admission, tokens))

    async def _answer(self, key: KeyRecord, step) -> tuple[dict[str, str], Rejection | None]:
        try:
            await step
        except QuotaExceeded as exc:
            return self.quotas.headers(key), (str(exc), exc.limit, exc.retry_after_s)
        return self.quotas.headers(key), None

    def finish(self, key: KeyRecord, admission: str, used_tokens: int | None) -> None:
        self.quotas.finish(key, admission, used_tokens)

    def abandon(self, admission: str) -> None:
        self.quotas.abandon(admission)

    def report(self, replica: str, text: bytes) -> None:
        self._metrics[replica] = (time.monotonic(), text)

    def metrics(self) -> dict[str, bytes]:
        """Each live replica's latest metrics text."""
        now = time.monotonic()
        self._metrics = {r: (at, t) for r, (at, t) in self._metrics.items() if at > now - STALE_S}
        return {r: t for r, (_, t) in self._metrics.items()}


class SharedQuotas:
    """A replica's `QuotaBook` over the cluster's book. A rejection is counted where it was
    refused (that replica's metrics); the headers are the book's after this replica's last call."""

    def __init__(self, book, on_reject: Callable[[str, str], None] = lambda tenant, limit: None) -> None:
        self._book = book  # the ClusterBook actor's handle
        self._on_reject = on_reject
        self._headers: dict[str, dict[str, str]] = {}

    async def _ask(self, key: KeyRecord, call) -> None:
        headers, rejected = await call
        self._headers[key.id] = headers
        if rejected is not None:
            message, limit, retry_after_s = rejected
            self._on_reject(key.tenant, limit)
            raise QuotaExceeded(message, limit=limit, retry_after_s=retry_after_s)

    async def admit(self, key: KeyRecord, admission: str) -> None:
        await self._ask(key, self._book.admit.remote(key, admission))

    async def reserve(self, key: KeyRecord, admission: str, tokens: int) -> None:
        if key.tpm is not None:
            await self._ask(key, self._book.reserve.remote(key, admission, tokens))

    def finish(self, key: KeyRecord, admission: str, used_tokens: int | None) -> None:
        self._book.finish.remote(key, admission, used_tokens)  # nothing waits on it

    def headers(self, key: KeyRecord) -> dict[str, str]:
        return self._headers.get(key.id, {})
