"""The embedded default store: a folder tree, safe for many processes on one filesystem.

    ROOT/TENANT/NAME/versions/VERSION/{adapter_config.json, adapter_model.safetensors, manifest.json}
    ROOT/TENANT/NAME/aliases/ALIAS      (text: the full version)
    ROOT/.staging/  ROOT/.trash/        (never listed; names can't start with a dot)

A version is written complete in `.staging` and renamed into place in one step, so a
reader sees all of it or nothing, and a crash leaves only staging litter. An alias (one
JSON record: version, canary, history) is replaced with `os.replace`, also atomic. Alias
changes, rollbacks and deletes of one adapter take an flock, so read-modify-write of a
record never loses an update and a delete cannot race a new alias onto its version.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from loramux.adapters.errors import InvalidRequest
from loramux.adapters.manifest import MANIFEST_FILE, Manifest, content_hash
from loramux.adapters.peft_format import ADAPTER_FILES
from loramux.adapters.store.base import StoreBase

STALE_STAGING_S = 3600.0


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)


def stage_version(staging: Path, manifest: Manifest, copy: Callable[[str, Path], None]) -> None:
    """Fill `staging` with the adapter files + manifest, fsynced; checks the bytes hash to the version.

    `copy(file_name, dst)` brings one adapter file in (a local copy, or an S3 download).
    """
    staging.mkdir(parents=True)
    for name in ADAPTER_FILES:
        copy(name, staging / name)
        _fsync(staging / name)
    actual = content_hash(staging)
    if actual != manifest.version:
        raise InvalidRequest(f"adapter files hash to {actual[:12]}, not to the manifest's version "
                             f"{manifest.version[:12]}", param="adapter")
    (staging / MANIFEST_FILE).write_text(manifest.to_json())
    for name in (*ADAPTER_FILES, MANIFEST_FILE):
        (staging / name).chmod(0o444)
    _fsync(staging / MANIFEST_FILE)
    _fsync(staging)


def commit_staged(staging: Path, final: Path) -> bool:
    """Rename a staged version into place; False (staging removed) when another writer won."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, final)
    except OSError:  # ENOTEMPTY/EEXIST: the same bytes were published concurrently
        shutil.rmtree(staging, ignore_errors=True)
        return False
    _fsync(final.parent)
    return True


class LocalStore(StoreBase):
    """AdapterStore on a local (or shared POSIX) folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._staging = self.root / ".staging"
        self._trash = self.root / ".trash"

    def version_dir(self, tenant: str, name: str, version: str) -> Path:
        return self.root / tenant / name / "versions" / version

    # --- primitives -------------------------------------------------------------------
    def _read_manifest(self, tenant: str, name: str, version: str) -> Manifest | None:
        try:
            text = (self.version_dir(tenant, name, version) / MANIFEST_FILE).read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Manifest.model_validate_json(text)

    def _versions(self, tenant: str, name: str) -> list[str]:
        base = self.root / tenant / name / "versions"
        return sorted(p.name for p in base.iterdir()) if base.is_dir() else []

    def _read_alias(self, tenant: str, name: str, alias: str) -> str | None:
        try:
            return (self.root / tenant / name / "aliases" / alias).read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _read_aliases(self, tenant: str, name: str) -> dict[str, str]:
        base = self.root / tenant / name / "aliases"
        if not base.is_dir():
            return {}
        out = {}
        for p in sorted(base.iterdir()):
            if not p.name.startswith("."):
                out[p.name] = p.read_text()
        return out

    def _write_alias(self, tenant: str, name: str, alias: str, text: str | None) -> None:
        path = self.root / tenant / name / "aliases" / alias
        if text is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)

    def _publish(self, src: Path, manifest: Manifest) -> Manifest:
        self._sweep_staging()
        staging = self._staging / uuid.uuid4().hex
        try:
            stage_version(staging, manifest, lambda name, dst: shutil.copyfile(src / name, dst))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if commit_staged(staging, self.version_dir(manifest.tenant, manifest.name, manifest.version)):
            return manifest
        return self._read_manifest(manifest.tenant, manifest.name, manifest.version)

    def _delete_version(self, manifest: Manifest) -> None:
        self._trash.mkdir(exist_ok=True)
        doomed = self._trash / uuid.uuid4().hex
        os.rename(self.version_dir(manifest.tenant, manifest.name, manifest.version), doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def fetch(self, manifest: Manifest) -> Path:
        return self.version_dir(manifest.tenant, manifest.name, manifest.version)

    @contextlib.contextmanager
    def _lock(self, tenant: str, name: str) -> Iterator[None]:
        path = self.root / tenant / name / ".lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def list(self, tenant: str | None = None) -> list[Manifest]:
        """Every published version (of one tenant, if given), by tenant, name, then age."""
        self._check_tenant(tenant)
        pattern = f"{tenant or '[!.]*'}/*/versions/*/{MANIFEST_FILE}"
        found = [Manifest.model_validate_json(p.read_text()) for p in self.root.glob(pattern)]
        return sorted(found, key=lambda m: (m.tenant, m.name, m.created_at, m.version))

    def _sweep_staging(self) -> None:
        """Remove what crashed publishes left behind (older than an hour, so never a live one)."""
        if not self._staging.is_dir():
            return
        cutoff = time.time() - STALE_STAGING_S
        for p in self._staging.iterdir():
            with contextlib.suppress(OSError):
                if p.stat().st_mtime < cutoff:
                    shutil.rmtree(p, ignore_errors=True)
