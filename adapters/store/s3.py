"""AdapterStore on an S3-compatible bucket (AWS, MinIO, SeaweedFS...), with a local cache.

Keys mirror the local layout under `prefix`:

    PREFIX/TENANT/NAME/versions/VERSION/{adapter_config.json, adapter_model.safetensors, manifest.json}
    PREFIX/TENANT/NAME/aliases/ALIAS

Each S3 PUT is atomic, so publish uploads the adapter files first and the manifest last:
a version exists exactly when its manifest does, and a crash mid-publish leaves only
objects no reader looks at. Versions are immutable, so downloaded files are cached
locally for good (`root`, the folder the engine loads from); every download is staged,
checked against its content hash, then renamed into place. Resolving always asks the
bucket (aliases move; another replica may delete a version); only `list`, whose key
listing already proves a version exists, reads manifests from the cache. S3 has no
locks: a delete racing a new alias onto the same version is not prevented.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from loramux.adapters.manifest import ADAPTER_FILES, MANIFEST_FILE, Manifest
from loramux.adapters.store.base import StoreBase
from loramux.adapters.store.local import commit_staged, stage_version, write_atomic


class S3Store(StoreBase):
    """AdapterStore on `s3://bucket/prefix`. `endpoint_url` selects a non-AWS service."""

    def __init__(self, bucket: str, cache_dir: str | Path, *, prefix: str = "",
                 endpoint_url: str | None = None, client=None, **client_kwargs) -> None:
        if client is None:
            import boto3  # lazily: `import loramux.adapters` stays light

            client = boto3.client("s3", endpoint_url=endpoint_url, **client_kwargs)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.root = Path(cache_dir).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _cache_dir(self, tenant: str, name: str, version: str) -> Path:
        return self.root / tenant / name / "versions" / version

    def _get_text(self, key: str) -> str | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()
        except self.client.exceptions.NoSuchKey:
            return None

    def _keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    # --- primitives -------------------------------------------------------------------
    def _manifest_cache(self, tenant: str, name: str, version: str) -> Path:
        return self._cache_dir(tenant, name, version).with_name(f"{version}.{MANIFEST_FILE}")

    def _read_manifest(self, tenant: str, name: str, version: str) -> Manifest | None:
        text = self._get_text(self._key(tenant, name, "versions", version, MANIFEST_FILE))
        if text is None:
            return None
        cached = self._manifest_cache(tenant, name, version)
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cached, text)
        return Manifest.model_validate_json(text)

    def _versions(self, tenant: str, name: str) -> list[str]:
        keys = self._keys(self._key(tenant, name, "versions") + "/")
        return sorted(k.split("/")[-2] for k in keys if k.endswith("/" + MANIFEST_FILE))

    def _read_alias(self, tenant: str, name: str, alias: str) -> str | None:
        text = self._get_text(self._key(tenant, name, "aliases", alias))
        return text.strip() if text is not None else None

    def _read_aliases(self, tenant: str, name: str) -> dict[str, str]:
        out = {}
        for key in self._keys(self._key(tenant, name, "aliases") + "/"):
            version = self._get_text(key)
            if version is not None:
                out[key.rsplit("/", 1)[-1]] = version.strip()
        return dict(sorted(out.items()))

    def _write_alias(self, tenant: str, name: str, alias: str, version: str | None) -> None:
        key = self._key(tenant, name, "aliases", alias)
        if version is None:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        else:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=(version + "\n").encode())

    def _publish(self, src: Path, manifest: Manifest) -> Manifest:
        # Stage into the cache first: checks the hash and leaves a warm copy for `fetch`.
        self.fetch(manifest, copy=lambda name, dst: shutil.copyfile(src / name, dst))
        local = self._cache_dir(manifest.tenant, manifest.name, manifest.version)
        base = self._key(manifest.tenant, manifest.name, "versions", manifest.version)
        for name in (*ADAPTER_FILES, MANIFEST_FILE):  # the manifest last: it makes the version visible
            self.client.upload_file(str(local / name), self.bucket, f"{base}/{name}")
        return manifest

    def _delete_version(self, manifest: Manifest) -> None:
        base = self._key(manifest.tenant, manifest.name, "versions", manifest.version)
        for name in (MANIFEST_FILE, *ADAPTER_FILES):  # the manifest first: it hides the version
            self.client.delete_object(Bucket=self.bucket, Key=f"{base}/{name}")
        local = self._cache_dir(manifest.tenant, manifest.name, manifest.version)
        self._manifest_cache(manifest.tenant, manifest.name, manifest.version).unlink(missing_ok=True)
        shutil.rmtree(local, ignore_errors=True)

    def fetch(self, manifest: Manifest, copy: Callable[[str, Path], None] | None = None) -> Path:
        """The cached local copy of `manifest`'s version, downloaded and hash-checked on first use."""
        final = self._cache_dir(manifest.tenant, manifest.name, manifest.version)
        if (final / MANIFEST_FILE).is_file():
            return final
        base = self._key(manifest.tenant, manifest.name, "versions", manifest.version)
        copy = copy or (lambda name, dst: self.client.download_file(self.bucket, f"{base}/{name}", str(dst)))
        staging = self.root / ".staging" / uuid.uuid4().hex
        try:
            stage_version(staging, manifest, copy)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        commit_staged(staging, final)
        return final

    def list(self, tenant: str | None = None) -> list[Manifest]:
        """Every published version (of one tenant, if given), by tenant, name, then age."""
        self._check_tenant(tenant)
        found = []
        for key in self._keys(self.prefix + (f"{tenant}/" if tenant else "")):
            parts = key[len(self.prefix):].split("/")
            if len(parts) == 5 and parts[2] == "versions" and parts[4] == MANIFEST_FILE:
                cached = self._manifest_cache(parts[0], parts[1], parts[3])
                manifest = (Manifest.model_validate_json(cached.read_text()) if cached.is_file()
                            else self._read_manifest(parts[0], parts[1], parts[3]))
                if manifest is not None:
                    found.append(manifest)
        return sorted(found, key=lambda m: (m.tenant, m.name, m.created_at, m.version))
