"""The AdapterStore seam, and the resolution logic every backend shares.

The store *is* the registry: versions, manifests and aliases live in it and nowhere else.
Backends implement a handful of primitives (`_read_manifest`, `_versions`, `_read_alias`,
...); `StoreBase` turns them into the public operations, so alias and prefix rules are
written once.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from loramux.adapters.errors import Conflict, InvalidRequest, NotFound
from loramux.adapters.manifest import ADAPTER_FILES, Manifest
from loramux.adapters.names import AdapterRef, check_alias, check_segment


def not_found(ref: AdapterRef | str) -> NotFound:
    """The one message for unknown *and* forbidden names, so neither reveals the other."""
    return NotFound(f"The model `{ref}` does not exist or you do not have access to it.", param="model")


def as_ref(ref: AdapterRef | str) -> AdapterRef:
    return ref if isinstance(ref, AdapterRef) else AdapterRef.parse(ref)


@runtime_checkable
class AdapterStore(Protocol):
    """Where published adapter versions live. Every method is safe across processes."""

    root: Path  # local folder every path returned by `get` lies under

    def put(self, src: str | Path, manifest: Manifest) -> Manifest: ...
    def get(self, ref: AdapterRef | str) -> Path: ...
    def resolve(self, ref: AdapterRef | str) -> Manifest: ...
    def fetch(self, manifest: Manifest) -> Path: ...
    def list(self, tenant: str | None = None) -> list[Manifest]: ...
    def delete(self, ref: AdapterRef | str) -> None: ...
    def set_alias(self, ref: AdapterRef | str, alias: str) -> Manifest: ...
    def remove_alias(self, ref: AdapterRef | str, alias: str) -> None: ...
    def aliases(self, ref: AdapterRef | str) -> dict[str, str]: ...


class StoreBase(ABC):
    """Public store operations over backend primitives."""

    root: Path

    # --- primitives -------------------------------------------------------------------
    @abstractmethod
    def _read_manifest(self, tenant: str, name: str, version: str) -> Manifest | None: ...
    @abstractmethod
    def _versions(self, tenant: str, name: str) -> list[str]: ...
    @abstractmethod
    def _read_alias(self, tenant: str, name: str, alias: str) -> str | None: ...
    @abstractmethod
    def _read_aliases(self, tenant: str, name: str) -> dict[str, str]: ...
    @abstractmethod
    def _write_alias(self, tenant: str, name: str, alias: str, version: str | None) -> None: ...
    @abstractmethod
    def _publish(self, src: Path, manifest: Manifest) -> Manifest: ...
    @abstractmethod
    def _delete_version(self, manifest: Manifest) -> None: ...
    @abstractmethod
    def fetch(self, manifest: Manifest) -> Path:
        """A local folder holding `manifest`'s version (downloaded first if need be)."""
    @abstractmethod
    def list(self, tenant: str | None = None) -> list[Manifest]: ...

    @contextlib.contextmanager
    def _lock(self, tenant: str, name: str) -> Iterator[None]:
        """Serialises alias changes against deletes of one adapter; backends may strengthen it."""
        yield

    # --- public API -------------------------------------------------------------------
    def put(self, src: str | Path, manifest: Manifest) -> Manifest:
        """Publish the adapter files in `src` atomically; returns the stored manifest.

        Publishing bytes that are already stored returns the existing manifest unchanged
        (versions are immutable). `manifest.version` must be the content hash of `src`.
        """
        src = Path(src)
        missing = [f for f in ADAPTER_FILES if not (src / f).is_file()]
        if missing:
            raise InvalidRequest(f"{src} lacks {', '.join(missing)}", param="adapter")
        existing = self._read_manifest(manifest.tenant, manifest.name, manifest.version)
        return existing or self._publish(src, manifest)

    def resolve(self, ref: AdapterRef | str) -> Manifest:
        """The manifest `ref` names now: an alias is read afresh, a prefix must be unique."""
        ref = as_ref(ref)
        alias = ref.alias
        if alias is not None:
            version = self._read_alias(ref.tenant, ref.name, alias)
        elif len(ref.selector) == 64:
            version = ref.selector
        else:
            matches = [v for v in self._versions(ref.tenant, ref.name) if v.startswith(ref.selector)]
            if len(matches) > 1:
                raise InvalidRequest(f"version prefix `{ref.selector}` of `{ref.key}` is ambiguous;"
                                     " give more characters", param="model")
            version = matches[0] if matches else None
        manifest = version and self._read_manifest(ref.tenant, ref.name, version)
        # A manifest that names another adapter was copied or linked in: not this name's version.
        if not manifest or (manifest.tenant, manifest.name, manifest.version) != (ref.tenant, ref.name, version):
            raise not_found(ref)
        return manifest

    def get(self, ref: AdapterRef | str) -> Path:
        """A local folder holding the version `ref` names (downloaded first if need be)."""
        return self.fetch(self.resolve(ref))

    def aliases(self, ref: AdapterRef | str) -> dict[str, str]:
        """alias -> full version for one adapter (the selector of `ref` is ignored)."""
        ref = as_ref(ref)
        return self._read_aliases(ref.tenant, ref.name)

    def set_alias(self, ref: AdapterRef | str, alias: str) -> Manifest:
        """Point `alias` at the version `ref` names (promoting `canary` to `prod` works too)."""
        check_alias(alias)
        ref = as_ref(ref)
        with self._lock(ref.tenant, ref.name):
            manifest = self.resolve(ref)
            self._write_alias(ref.tenant, ref.name, alias, manifest.version)
        return manifest

    def remove_alias(self, ref: AdapterRef | str, alias: str) -> None:
        ref = as_ref(ref)
        with self._lock(ref.tenant, ref.name):
            if self._read_alias(ref.tenant, ref.name, check_alias(alias)) is None:
                raise not_found(ref.at(alias))
            self._write_alias(ref.tenant, ref.name, alias, None)

    def delete(self, ref: AdapterRef | str) -> None:
        """Delete one version, named by version; refused (Conflict) while an alias points at it."""
        ref = as_ref(ref)
        if ref.alias is not None:
            raise InvalidRequest(f"delete needs a version, not an alias: `{ref}`", param="model")
        with self._lock(ref.tenant, ref.name):
            manifest = self.resolve(ref)
            using = sorted(a for a, v in self._read_aliases(ref.tenant, ref.name).items()
                           if v == manifest.version)
            if using:
                raise Conflict(f"`{manifest.served_name}` is still aliased as {', '.join(using)};"
                               " move or remove the alias first", param="model")
            self._delete_version(manifest)

    @staticmethod
    def _check_tenant(tenant: str | None) -> None:
        if tenant is not None:
            check_segment(tenant, "tenant")
