"""Aliases with a weighted canary, history and rollback, on the local and the S3 store."""

from __future__ import annotations

import threading

import pytest

from loramux.adapters.aliases import AliasRecord
from loramux.adapters.errors import Conflict, InvalidRequest, NotFound
from loramux.adapters.registry import Resolver


@pytest.fixture
def two(store, adapter_dir, manifest_for, variant, tmp_path):
    v1 = store.put(adapter_dir, manifest_for(adapter_dir))
    v2_dir = variant(adapter_dir, tmp_path / "v2", 1)
    return v1, store.put(v2_dir, manifest_for(v2_dir))


def test_a_canary_gets_its_weight_of_routing_keys_deterministically(store, two):
    v1, v2 = two
    store.set_alias(v1.ref, "prod", canary=v2.served_name, weight=0.2)
    picks = [Resolver(store).resolve("acme/support", routing_key=f"req-{i}").manifest.version for i in range(4000)]
    share = picks.count(v2.version) / len(picks)
    assert abs(share - 0.2) < 0.03, share
    assert set(picks) == {v1.version, v2.version}
    again = [Resolver(store).resolve("acme/support", routing_key=f"req-{i}").manifest.version for i in range(200)]
    assert again == picks[:200]  # the same key always gets the same version
    resolver = Resolver(store, ttl_s=60)
    assert {resolver.resolve("acme/support", routing_key=f"k{i}").version for i in range(100)} == \
        {v1.version, v2.version}  # a ttl-cached alias still splits per request
    assert Resolver(store).resolve(f"acme/support@{v1.version[:12]}").manifest == v1  # pinned versions ignore the split


def test_rollback_restores_the_previous_state_from_another_store_object(store, two, tmp_path):
    v1, v2 = two
    store.set_alias(v1.ref, "prod")
    store.set_alias(v1.ref, "prod", canary=v2.version[:12], weight=0.1)
    store.set_alias(v2.ref, "prod")  # promote
    other = reopen(store, tmp_path)  # history lives in the store, not in this process
    assert other.rollback("acme/support") == AliasRecord(version=v1.version, canary=v2.version, weight=0.1,
                                                         updated_at=other.alias_records("acme/support")["prod"]
                                                         .updated_at, history=[{"version": v1.version}])
    assert other.rollback("acme/support").state.canary is None
    assert Resolver(store).resolve("acme/support").manifest == v1
    with pytest.raises(Conflict):
        store.rollback("acme/support")
    with pytest.raises(NotFound):
        store.rollback("acme/support", "canary")


def reopen(store, tmp_path):
    from loramux.adapters.store import LocalStore
    from loramux.adapters.store.s3 import S3Store

    if isinstance(store, LocalStore):
        return LocalStore(store.root)
    return S3Store(store.bucket, tmp_path / "other-cache", prefix=store.prefix, client=store.client)


def test_a_canary_version_cannot_be_deleted_and_rollback_refuses_deleted_versions(store, two):
    v1, v2 = two
    store.set_alias(v1.ref, "prod", canary=v2.ref, weight=0.5)
    with pytest.raises(Conflict):
        store.delete(v2.ref)
    store.set_alias(v1.ref, "prod")
    store.delete(v2.ref)
    with pytest.raises(Conflict) as err:
        store.rollback("acme/support")
    assert "was deleted" in err.value.message
    assert Resolver(store).resolve("acme/support").manifest == v1


@pytest.mark.parametrize("canary, weight", [("v1", 0.5), ("v2", 0.0), ("v2", 1.0), ("v2", None), (None, 0.5)])
def test_bad_canaries_are_refused(store, two, canary, weight):
    versions = dict(zip(("v1", "v2"), two, strict=True))
    with pytest.raises(InvalidRequest):
        store.set_alias(two[0].ref, "prod", canary=versions[canary].ref if canary else None, weight=weight)
    assert store.aliases("acme/support") == {}


def test_a_canary_of_another_adapter_is_refused(store, two, adapter_dir, manifest_for):
    other = store.put(adapter_dir, manifest_for(adapter_dir, name="legal"))
    with pytest.raises(InvalidRequest):
        store.set_alias(two[0].ref, "prod", canary=other.ref, weight=0.5)


def test_concurrent_alias_changes_lose_no_update(store, two):
    v1, v2 = two
    store.set_alias(v1.ref, "prod")
    errors = []

    def flip(t: int, n: int) -> None:
        try:  # every call a distinct state (canary share), so every one is a real change
            for i in range(n):
                store.set_alias(v1.ref, "prod", canary=v2.version, weight=(t * n + i + 1) / 100)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=flip, args=(t, 5)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.alias_records("acme/support")["prod"].history) == 20  # every change recorded


def test_pointing_an_alias_where_it_already_points_changes_nothing(store, two):
    v1, v2 = two
    store.set_alias(v1.ref, "prod")
    store.set_alias(v2.ref, "prod")
    store.set_alias(v2.ref, "prod")  # no move: no history entry, so a rollback goes back to v1
    assert len(store.alias_records("acme/support")["prod"].history) == 1
    store.rollback("acme/support")
    assert store.aliases("acme/support") == {"prod": v1.version}


def test_an_alias_written_as_a_bare_version_still_reads(store, two):
    v1, _ = two
    store._write_alias("acme", "support", "prod", v1.version + "\n")  # what older stores wrote
    assert Resolver(store).resolve("acme/support").manifest == v1
    assert store.aliases("acme/support") == {"prod": v1.version}
