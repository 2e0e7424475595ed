"""S3Store specifics: the manifest makes a version visible; downloads are hash-checked."""

from __future__ import annotations

import pytest

from loramux.adapters.errors import InvalidRequest, NotFound, StoreUnavailable
from loramux.adapters.registry import Resolver
from loramux.adapters.manifest import MANIFEST_FILE, content_hash
from loramux.adapters.peft_format import CONFIG_FILE, WEIGHTS_FILE
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
        Resolver(s3_store).resolve(manifest.ref).manifest
    assert s3_store.put(adapter_dir, manifest) == manifest
    assert s3_store.list() == [manifest]


def test_a_replica_downloads_and_checks_the_bytes(s3_store, adapter_dir, manifest_for, tmp_path):
    manifest = s3_store.put(adapter_dir, manifest_for(adapter_dir))
    s3_store.set_alias(manifest.ref, "prod")
    other = replica(s3_store, tmp_path / "replica")
    path = Resolver(other).resolve("acme/support").path
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
        Resolver(other).resolve(manifest.ref).path
    assert not list((other.root / "acme").rglob(WEIGHTS_FILE))  # nothing half-cached either


def test_a_version_deleted_by_another_replica(s3_store, adapter_dir, manifest_for, tmp_path):
    manifest = s3_store.put(adapter_dir, manifest_for(adapter_dir))
    other = replica(s3_store, tmp_path / "replica")
    strict = S3Store(s3_store.bucket, tmp_path / "strict", prefix=s3_store.prefix, client=s3_store.client,
                     cache_resolves=False)
    Resolver(other).resolve(manifest.ref).path  # cached there
    Resolver(strict).resolve(manifest.ref).path
    s3_store.delete(manifest.ref)
    with pytest.raises(NotFound):  # without cached resolves: gone at once
        Resolver(strict).resolve(manifest.ref).path
    assert Resolver(other).resolve(manifest.ref).path.is_dir()  # the immutable cached copy still serves a pinned version...
    assert other.list() == []  # ...until a list (which asks the bucket) prunes it
    with pytest.raises(NotFound):
        Resolver(other).resolve(manifest.ref).path


class Calls:
    """Every request a boto3 client sends, by operation (botocore `before-send` events)."""

    def __init__(self, client) -> None:
        self.ops: list[str] = []
        client.meta.events.register("before-send.s3", self._seen)

    def _seen(self, event_name: str, **_: object) -> None:
        self.ops.append(event_name.rsplit(".", 1)[-1])


def test_a_replica_downloads_each_version_once_and_resolves_it_offline(s3_store, adapter_dir, manifest_for,
                                                                       tmp_path):
    import boto3

    from s3_server import client_kwargs

    manifest = s3_store.put(adapter_dir, manifest_for(adapter_dir))
    s3_store.set_alias(manifest.ref, "prod")
    client = boto3.client("s3", **client_kwargs(s3_store.client.meta.endpoint_url))
    calls = Calls(client)
    other = S3Store(s3_store.bucket, tmp_path / "replica", prefix=s3_store.prefix, client=client)
    first = Resolver(other).resolve("acme/support")
    assert calls.ops.count("GetObject") >= 2  # alias + manifest + the files
    downloads = len(calls.ops)
    for _ in range(3):
        assert Resolver(other).resolve(manifest.served_name).path == first.path
        assert Resolver(other).resolve(str(manifest.ref)).path == first.path
    assert len(calls.ops) == downloads  # cached versions: not one more request
    # The endpoint goes away: a pinned version still resolves to the cached folder.
    dead = S3Store(s3_store.bucket, tmp_path / "replica", prefix=s3_store.prefix,
                   endpoint_url="http://127.0.0.1:1", aws_access_key_id="x", aws_secret_access_key="y",
                   region_name="us-east-1", config=__import__("botocore.config").config.Config(
                       retries={"max_attempts": 1}, connect_timeout=1))
    assert Resolver(dead).resolve(manifest.served_name).path == first.path
    with pytest.raises(StoreUnavailable):  # an alias needs the bucket (unless a Resolver ttl_s holds it)
        Resolver(dead).resolve("acme/support")


def test_credentials_and_endpoint_come_from_the_standard_aws_variables(s3_endpoint, monkeypatch, tmp_path,
                                                                       adapter_dir, manifest_for):
    from s3_server import KEY, REGION, SECRET

    from loramux.adapters.store import open_store

    for var, value in (("AWS_ACCESS_KEY_ID", KEY), ("AWS_SECRET_ACCESS_KEY", SECRET),
                       ("AWS_DEFAULT_REGION", REGION), ("AWS_ENDPOINT_URL", s3_endpoint)):
        monkeypatch.setenv(var, value)
    store = open_store("s3://adapters/env-creds", cache_dir=tmp_path / "cache")
    manifest = store.put(adapter_dir, manifest_for(adapter_dir))
    assert Resolver(store).resolve(manifest.ref).manifest == manifest
    assert store.client.meta.endpoint_url == s3_endpoint
    creds = store.client._request_signer._credentials
    assert (creds.access_key, creds.method) == (KEY, "env")


def test_the_download_cache_stays_under_its_bound(s3_store, adapter_dir, variant, manifest_for, tmp_path):
    """`serve --cache-gib`: least recently fetched versions go first, a kept one never, and a
    pruned version is downloaded again (checked) when asked for."""
    versions = [s3_store.put(v, manifest_for(v)) for v in
                (variant(adapter_dir, tmp_path / f"v{i}", i) for i in range(1, 5))]
    other = replica(s3_store, tmp_path / "replica")
    paths = [Resolver(other).fetch(m) for m in versions]
    one = sum(f.stat().st_size for f in paths[0].iterdir())
    dropped = other.prune_cache(2 * one, keep={versions[0].version})
    assert dropped == [versions[1].version, versions[2].version]  # v0 kept though oldest; v3 fits
    assert [p.is_dir() for p in paths] == [True, False, False, True]
    again = Resolver(other).resolve(versions[1].ref).path  # resolves from the cached manifest, downloads
    assert content_hash(again) == versions[1].version
