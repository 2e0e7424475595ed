"""Quotas kept in one book for many replicas: a limit is the cluster's, a retried request
counts once, and a dead replica's requests give their places back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from loramux.server.cluster_book import ClusterBook, SharedQuotas
from loramux.server.keys import KeyRecord
from loramux.server.quotas import QuotaExceeded, Quotas


def _key(**limits) -> KeyRecord:
    return KeyRecord(id="k1", tenant="acme", sha256="0" * 64, adapters=["acme/*"], created_at=datetime.now(UTC),
                     **limits)


class _Remote:
    """What a Ray actor handle does for these calls: `.method.remote(...)` is awaitable."""

    def __init__(self, target) -> None:
        self._target = target

    def __getattr__(self, name):
        method = getattr(self._target, name)

        class _Call:
            @staticmethod
            def remote(*args):
                result = method(*args)
                if asyncio.iscoroutine(result):
                    return result
                fut = asyncio.get_running_loop().create_future()
                fut.set_result(result)
                return fut
        return _Call


def test_a_retried_admission_counts_once_and_abandon_frees_its_place():
    q, key = Quotas(), _key(rpm=2, max_inflight=1)

    async def run():
        await q.admit(key, "a")
        await q.admit(key, "a")  # the same request, retried elsewhere: not a second request
        q.abandon("a")  # its first replica died with it
        await q.admit(key, "a")  # the retry takes the place back, still one request
        q.finish(key, "a", None)
        await q.admit(key, "b")
        q.finish(key, "b", None)
        with pytest.raises(QuotaExceeded) as exc:
            await q.admit(key, "c")
        return exc.value

    assert asyncio.run(run()).limit == "requests"


def test_a_retry_reservation_replaces_the_first():
    q, key = Quotas(), _key(tpm=100)

    async def run():
        await q.admit(key, "a")
        await q.reserve(key, "a", 60)
        await q.reserve(key, "a", 60)  # would be 120 if counted twice
        return q.headers(key)["x-ratelimit-remaining-tokens"]

    assert asyncio.run(run()) == "40"


def test_replicas_share_one_limit_and_each_counts_its_own_refusals():
    book, key = _Remote(ClusterBook()), _key(rpm=3)
    refused = {"r1": 0, "r2": 0}
    r1 = SharedQuotas(book, lambda tenant, limit: refused.__setitem__("r1", refused["r1"] + 1))
    r2 = SharedQuotas(book, lambda tenant, limit: refused.__setitem__("r2", refused["r2"] + 1))

    async def run():
        admitted = 0
        for i, replica in enumerate([r1, r2, r1, r2, r2]):
            try:
                await replica.admit(key, f"req-{i}")
                admitted += 1
            except QuotaExceeded as exc:
                assert exc.limit == "requests" and exc.retry_after_s > 0
        return admitted

    assert asyncio.run(run()) == 3  # 3 per minute for the cluster, not per replica
    assert refused == {"r1": 0, "r2": 2}
    assert r2.headers(key)["x-ratelimit-remaining-requests"] == "0"
