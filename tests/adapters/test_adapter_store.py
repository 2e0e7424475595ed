"""The AdapterStore contract, on the local and the S3 backend alike."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loramux.adapters.errors import Conflict, InvalidRequest, NotFound
from loramux.adapters.manifest import content_hash
from loramux.adapters.peft_format import ADAPTER_FILES, WEIGHTS_FILE
from loramux.adapters.registry import Resolver


def test_get_returns_the_published_bytes(store, adapter_dir, manifest_for):
    manifest = manifest_for(adapter_dir)
    stored = store.put(adapter_dir, manifest)
    assert stored == manifest
    path = Resolver(store).resolve(manifest.served_name).path
    assert path.is_relative_to(store.root)
    assert content_hash(path) == manifest.version == content_hash(adapter_dir)
    for name in ADAPTER_FILES:
        assert (path / name).read_bytes() == (adapter_dir / name).read_bytes()
    assert Resolver(store).resolve(manifest.ref).manifest == manifest


def test_publishing_the_same_bytes_again_keeps_the_first_manifest(store, adapter_dir, manifest_for):
    first = store.put(adapter_dir, manifest_for(adapter_dir, eval_scores={"exact_match": 0.9}))
    again = store.put(adapter_dir, manifest_for(adapter_dir, eval_scores={"exact_match": 0.1}))
    assert again == first
    assert store.list() == [first]


def test_put_refuses_files_that_do_not_hash_to_the_version(store, make_adapter, manifest_for):
    other = manifest_for(make_adapter(seed=1))
    with pytest.raises(InvalidRequest):
        store.put(make_adapter(seed=0), other)
    assert store.list() == []
    with pytest.raises(NotFound):
        Resolver(store).resolve(other.ref).manifest


def test_a_publish_that_dies_midway_leaves_nothing_visible(store, adapter_dir, manifest_for, monkeypatch):
    manifest = manifest_for(adapter_dir)
    real_copy = shutil.copyfile

    def dies_on_weights(src, dst, *a, **kw):
        if Path(src).name == WEIGHTS_FILE:
            raise OSError("disk gone")
        return real_copy(src, dst, *a, **kw)

    monkeypatch.setattr(shutil, "copyfile", dies_on_weights)
    with pytest.raises(OSError):
        store.put(adapter_dir, manifest)
    monkeypatch.undo()
    assert store.list() == []
    with pytest.raises(NotFound):
        Resolver(store).resolve(manifest.ref).path
    assert store.put(adapter_dir, manifest) == manifest  # and a retry succeeds


def test_aliases_move_and_resolve_afresh(store, adapter_dir, manifest_for, variant, tmp_path):
    v1 = store.put(adapter_dir, manifest_for(adapter_dir))
    v2_dir = variant(adapter_dir, tmp_path / "v2", 1)
    v2 = store.put(v2_dir, manifest_for(v2_dir))
    with pytest.raises(NotFound):  # no `prod` yet: the plain name names nothing
        Resolver(store).resolve("acme/support").manifest
    store.set_alias(v1.served_name, "prod")
    store.set_alias(v2.served_name, "canary")
    assert Resolver(store).resolve("acme/support").manifest == v1
    assert Resolver(store).resolve("acme/support@prod").manifest == v1
    assert Resolver(store).resolve("acme/support@canary").manifest == v2
    assert store.set_alias("acme/support@canary", "prod") == v2  # promote canary
    assert Resolver(store).resolve("acme/support").manifest == v2
    assert store.aliases("acme/support") == {"canary": v2.version, "prod": v2.version}
    store.remove_alias("acme/support", "canary")
    with pytest.raises(NotFound):
        Resolver(store).resolve("acme/support@canary").manifest
    with pytest.raises(NotFound):
        store.remove_alias("acme/support", "canary")


def test_a_version_prefix_resolves_when_it_is_unique(store, adapter_dir, manifest_for):
    manifest = store.put(adapter_dir, manifest_for(adapter_dir))
    assert Resolver(store).resolve(f"acme/support@{manifest.version[:8]}").manifest == manifest
    assert Resolver(store).resolve(f"acme/support@{manifest.version}").manifest == manifest
    with pytest.raises(NotFound):
        Resolver(store).resolve(f"acme/support@{'0' * 8 if manifest.version[0] != '0' else '1' * 8}").manifest


def test_an_aliased_version_cannot_be_deleted(store, adapter_dir, manifest_for):
    manifest = store.put(adapter_dir, manifest_for(adapter_dir))
    store.set_alias(manifest.ref, "prod")
    with pytest.raises(Conflict) as err:
        store.delete(manifest.served_name)
    assert err.value.status_code == 409
    with pytest.raises(InvalidRequest):  # delete names a version, never an alias
        store.delete("acme/support@prod")
    store.remove_alias(manifest.ref, "prod")
    store.delete(manifest.served_name)
    assert store.list() == []
    with pytest.raises(NotFound):
        Resolver(store).resolve(manifest.ref).path


def test_list_is_per_tenant_and_ordered(store, make_adapter, manifest_for):
    put = [store.put(make_adapter(seed=s), manifest_for(make_adapter(seed=s), tenant=t, name=n))
           for s, (t, n) in enumerate([("globex", "legal"), ("acme", "support"), ("acme", "billing")])]
    assert [(m.tenant, m.name) for m in store.list()] == [("acme", "billing"), ("acme", "support"),
                                                          ("globex", "legal")]
    assert store.list("globex") == [put[0]]
    assert store.list("initech") == []


def test_alias_names_that_read_as_versions_are_refused(store, adapter_dir, manifest_for):
    manifest = store.put(adapter_dir, manifest_for(adapter_dir))
    with pytest.raises(InvalidRequest):
        store.set_alias(manifest.ref, "deadbeef")
    assert store.aliases(manifest.ref) == {}
