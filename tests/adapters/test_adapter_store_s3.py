"""S3Store specifics: the manifest makes a version visible; downloads are hash-checked."""

from __future__ import annotations

import pytest

from loramux.adapters.errors import InvalidRequest, NotFound
from loramux.adapters.manifest import CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE, content_hash
from loramux.adapters.store.s3 import S3Store


def replica(store: S3Store, cache) -> S3Store:
    """Another server on the same bucket and prefix, with its own empty cache."""
    return S3Store(store.bucket, cache, prefix=store.prefix, client=store.client)


def test_objects_without_a_manifest_are_not_a_version(s3_store, adapter_dir, manifest_for):
    manifest = manifest_for(adapter_dir)
    base = s3_store._key("acme", "support", "versions", manifest.version)
    for name in (CONFIG_FILE, WEIGHTS_FILE):  # what a crash before the last upload leaves
        s3_store.client.upload_file(str(adapter_dir / name), s3_store.bucket, f"{base}/{name}")
    assert s3_store.list() == []
    with pytest.raises(NotFound):
        s3_store.resolve(manifest.ref)
    assert s3_store.put(adapter_dir, manifest) == manifest
    assert s3_store.list() == [manifest]


def test_a_replica_downloads_and_checks_the_bytes(s3_store, adapter_dir, manifest_for, tmp_path):
    manifest = s3_store.put(adapter_dir, manifest_for(adapter_dir))
    s3_store.set_alias(manifest.ref, "prod")
    other = replica(s3_store, tmp_path / "replica")
    path = other.get("acme/support")
    assert path.is_relative_to(other.root)
    assert content_hash(path) == manifest.version
    assert (path / MANIFEST_FILE).is_file()


def test_a_corrupt_object_is_never_handed_out(s3_store, adapter_dir, manifest_for, tmp_path):
    manifest = s3_store.put(adapter_dir, manifest_for(adapter_dir))
    key = s3_store._key("acme", "support", "versions", manifest.version, WEIGHTS_FILE)
    data = bytearray((adapter_dir / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    s3_store.client.put_object(Bucket=s3_store.bucket, Key=key, Body=bytes(data))
    other = replica(s3_store, tmp_path / "replica")
    with pytest.raises(InvalidRequest):
        other.get(manifest.ref)
    assert not list((other.root / "acme").rglob(WEIGHTS_FILE))  # nothing half-cached either


def test_a_version_deleted_by_another_replica_stops_resolving(s3_store, adapter_dir, manifest_for, tmp_path):
    manifest = s3_store.put(adapter_dir, manifest_for(adapter_dir))
    other = replica(s3_store, tmp_path / "replica")
    other.get(manifest.ref)  # cached there
    s3_store.delete(manifest.ref)
    with pytest.raises(NotFound):
        other.get(manifest.ref)
    assert other.list() == []
