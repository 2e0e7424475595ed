"""AdapterStore on an S3-compatible bucket (AWS, MinIO, SeaweedFS...), with a local cache.

Keys mirror the local layout under `prefix`:

    PREFIX/TENANT/NAME/versions/VERSION/{adapter_config.json, adapter_model.safetensors, manifest.json}
    PREFIX/TENANT/NAME/aliases/ALIAS    (one AliasRecord JSON object)

Each S3 PUT is atomic, so publish uploads the adapter files first and the manifest last:
a version exists exactly when its manifest does, and a crash mid-publish leaves only
objects no reader looks at. Alias changes are one PUT each, made conditional on the ETag
read (If-Match / If-None-Match), so two writers never lose each other's update.

Versions are immutable, so the cache (`root`, the folder the engine loads from) keeps
downloaded files by content hash for good: every download is staged, checked against
its content hash, then renamed into place, and a replica downloads each version once.
With `cache_resolves` (the default) a version already in the cache resolves without any
network call, by full hash or by a prefix of at least 12 characters; the price is that a
delete on another replica shows here only after `list()` (which prunes the cache) or a
restart with an empty cache. Aliases always ask the bucket (they move), unless the
Resolver's `ttl_s` allows reusing an answer. Network failures raise StoreUnavailable.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from loramux.adapters.errors import NotFound, StoreUnavailable
from loramux.adapters.manifest import MANIFEST_FILE, Manifest
from loramux.adapters.peft_format import ADAPTER_FILES
from loramux.adapters.names import SHORT_VERSION, AdapterRef
from loramux.adapters.store.base import StaleAlias, StoreBase, not_found
from loramux.adapters.store.local import commit_staged, stage_version, write_atomic


PARALLEL_DOWNLOAD_BYTES = 8 << 20  # larger files go through boto3's multi-part transfer manager


class S3Store(StoreBase):
    """AdapterStore on `s3://bucket/prefix`. `endpoint_url` selects a non-AWS service.

    Credentials, region and (without `endpoint_url`) the endpoint come from boto3's usual
    chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE,
    AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, instance roles.
    """

    def __init__(self, bucket: str, cache_dir: str | Path, *, prefix: str = "",
                 endpoint_url: str | None = None, client=None, cache_resolves: bool = True,
                 **client_kwargs) -> None:
        if client is None:
            import boto3  # lazily: `import loramux.adapters` stays light

            client = boto3.client("s3", endpoint_url=endpoint_url, **client_kwargs)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.root = Path(cache_dir).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache_resolves = cache_resolves
        self._etags = threading.local()  # alias key -> ETag (None: absent) as last read by this thread

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @contextlib.contextmanager
    def _wire(self) -> Iterator[None]:
        """botocore failures as typed errors: a missing object is NotFound, the rest StoreUnavailable."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey"):
                raise NotFound(f"object missing in {self.url}: {e}") from None
            raise StoreUnavailable(f"S3 store {self.url} refused the request: {e}") from None
        except BotoCoreError as e:
            raise StoreUnavailable(f"S3 store {self.url} is unreachable: {e}") from None

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _cache_dir(self, tenant: str, name: str, version: str) -> Path:
        return self.root / tenant / name / "versions" / version

    def _get(self, key: str) -> tuple[str, str] | None:
        """(text, ETag) of one object, None when it does not exist."""
        try:
            with self._wire():
                obj = self.client.get_object(Bucket=self.bucket, Key=key)
                return obj["Body"].read().decode(), obj.get("ETag", "")
        except NotFound:
            return None

    def _keys(self, prefix: str) -> list[str]:
        with self._wire():
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    # --- primitives -------------------------------------------------------------------
    def _manifest_cache(self, tenant: str, name: str, version: str) -> Path:
        return self._cache_dir(tenant, name, version).with_name(f"{version}.{MANIFEST_FILE}")

    def _published(self, tenant: str, name: str, version: str) -> Manifest | None:
        """Ask the bucket (publish must never trust the cache: a crashed upload leaves it warm)."""
        got = self._get(self._key(tenant, name, "versions", version, MANIFEST_FILE))
        if got is None:
            return None
        cached = self._manifest_cache(tenant, name, version)
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cached, got[0])  # written only once the bucket has shown the manifest
        return Manifest.model_validate_json(got[0])

    def _read_manifest(self, tenant: str, name: str, version: str) -> Manifest | None:
        cached = self._manifest_cache(tenant, name, version)
        if self.cache_resolves and cached.is_file():
            return Manifest.model_validate_json(cached.read_text())
        return self._published(tenant, name, version)

    def _version(self, ref: AdapterRef) -> str | None:
        if self.cache_resolves and len(ref.selector) >= SHORT_VERSION:
            folder = self.root / ref.tenant / ref.name / "versions"
            cached = [p.name.split(".", 1)[0] for p in folder.glob(f"{ref.selector}*.{MANIFEST_FILE}")]
            if len(cached) == 1:  # 48+ bits of hash: another version sharing it is not a real risk
                return cached[0]
        return super()._version(ref)

    def _versions(self, tenant: str, name: str) -> list[str]:
        keys = self._keys(self._key(tenant, name, "versions") + "/")
        return sorted(k.split("/")[-2] for k in keys if k.endswith("/" + MANIFEST_FILE))

    def _remember(self, key: str, etag: str | None) -> None:
        if not hasattr(self._etags, "map"):
            self._etags.map = {}
        self._etags.map[key] = etag

    def _read_alias(self, tenant: str, name: str, alias: str) -> str | None:
        key = self._key(tenant, name, "aliases", alias)
        got = self._get(key)
        self._remember(key, got[1] if got else None)
        return got[0] if got else None

    def _read_aliases(self, tenant: str, name: str) -> dict[str, str]:
        out = {}
        for key in self._keys(self._key(tenant, name, "aliases") + "/"):
            got = self._get(key)
            if got is not None:
                out[key.rsplit("/", 1)[-1]] = got[0]
        return dict(sorted(out.items()))

    def _write_alias(self, tenant: str, name: str, alias: str, text: str | None) -> None:
        from botocore.exceptions import ClientError

        key = self._key(tenant, name, "aliases", alias)
        known = getattr(self._etags, "map", {})
        if text is None:
            with self._wire():
                self.client.delete_object(Bucket=self.bucket, Key=key)
            return
        # Compare-and-swap against what this thread read: If-Match its ETag, or If-None-Match
        # when it read nothing. Losing the race retries the whole read-modify-write.
        condition = {"IfMatch": known[key]} if known.get(key) else {"IfNoneMatch": "*"} if key in known else {}
        try:
            with self._wire():
                try:
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=text.encode(), **condition)
                except ClientError as e:
                    if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412",
                                                                   "ConditionalRequestConflict"):
                        raise StaleAlias(key) from None
                    raise
        finally:
            known.pop(key, None)

    def _publish(self, src: Path, manifest: Manifest) -> Manifest:
        # Stage locally (checks the hash), upload from there with the manifest last (it makes
        # the version visible), then keep the staged copy as the warm cache entry.
        staging = self.root / ".staging" / uuid.uuid4().hex
        try:
            stage_version(staging, manifest, lambda name, dst: shutil.copyfile(src / name, dst))
            base = self._key(manifest.tenant, manifest.name, "versions", manifest.version)
            with self._wire():
                for name in (*ADAPTER_FILES, MANIFEST_FILE):
                    self.client.upload_file(str(staging / name), self.bucket, f"{base}/{name}")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        cached = self._manifest_cache(manifest.tenant, manifest.name, manifest.version)
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cached, manifest.to_json())
        commit_staged(staging, self._cache_dir(manifest.tenant, manifest.name, manifest.version))
        return manifest

    def _forget(self, tenant: str, name: str, version: str) -> None:
        self._manifest_cache(tenant, name, version).unlink(missing_ok=True)
        shutil.rmtree(self._cache_dir(tenant, name, version), ignore_errors=True)

    def _delete_version(self, manifest: Manifest) -> None:
        base = self._key(manifest.tenant, manifest.name, "versions", manifest.version)
        with self._wire():
            for name in (MANIFEST_FILE, *ADAPTER_FILES):  # the manifest first: it hides the version
                self.client.delete_object(Bucket=self.bucket, Key=f"{base}/{name}")
        self._forget(manifest.tenant, manifest.name, manifest.version)

    def fetch(self, manifest: Manifest, copy: Callable[[str, Path], None] | None = None) -> Path:
        """The cached local copy of `manifest`'s version, downloaded and hash-checked on first use."""
        final = self._cache_dir(manifest.tenant, manifest.name, manifest.version)
        if (final / MANIFEST_FILE).is_file():
            return final
        base = self._key(manifest.tenant, manifest.name, "versions", manifest.version)

        def download(name: str, dst: Path) -> None:
            key = f"{base}/{name}"
            try:
                with self._wire():
                    obj = self.client.get_object(Bucket=self.bucket, Key=key)
                    if obj["ContentLength"] > PARALLEL_DOWNLOAD_BYTES:  # ranged parts in parallel pay off
                        obj["Body"].close()
                        self.client.download_file(self.bucket, key, str(dst))
                        return
                    with open(dst, "wb") as f:  # one GET: boto3's transfer threads cost ~15 ms a file
                        shutil.copyfileobj(obj["Body"], f, 1 << 20)
            except NotFound:
                raise not_found(manifest.served_name) from None

        staging = self.root / ".staging" / uuid.uuid4().hex
        try:
            stage_version(staging, manifest, copy or download)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        commit_staged(staging, final)
        return final

    def prune_cache(self, max_bytes: int, keep: set[str]) -> list[str]:
        # a version's folder is its download (the small manifest beside it stays, for cached resolves)
        folders = [p for p in self.root.glob("[!.]*/*/versions/*") if p.is_dir()]
        sizes = {p: sum(f.stat().st_size for f in p.iterdir() if f.is_file()) for p in folders}
        total, dropped = sum(sizes.values()), []
        for folder in sorted(folders, key=lambda p: p.stat().st_mtime):  # fetch time: commit renames it in
            if total <= max_bytes:
                break
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)
                total -= sizes[folder]
                dropped.append(folder.name)
        return dropped

    def list(self, tenant: str | None = None) -> list[Manifest]:
        """Every published version (of one tenant, if given), by tenant, name, then age.

        Cached versions the bucket no longer lists (deleted by another replica) are dropped
        from the cache on the way.
        """
        self._check_tenant(tenant)
        found, seen = [], set()
        for key in self._keys(self.prefix + (f"{tenant}/" if tenant else "")):
            parts = key[len(self.prefix):].split("/")
            if len(parts) == 5 and parts[2] == "versions" and parts[4] == MANIFEST_FILE:
                seen.add((parts[0], parts[1], parts[3]))
                cached = self._manifest_cache(parts[0], parts[1], parts[3])
                manifest = (Manifest.model_validate_json(cached.read_text()) if cached.is_file()
                            else self._published(parts[0], parts[1], parts[3]))
                if manifest is not None:
                    found.append(manifest)
        for cached in self.root.glob(f"{tenant or '[!.]*'}/*/versions/*.{MANIFEST_FILE}"):
            t, n, v = cached.parts[-4], cached.parts[-3], cached.name.split(".", 1)[0]
            if (t, n, v) not in seen:
                self._forget(t, n, v)
        return sorted(found, key=lambda m: (m.tenant, m.name, m.created_at, m.version))
