"""The AdapterStore seam, and the resolution logic every backend shares.

The store *is* the registry: versions, manifests and aliases live in it and nowhere else.
Backends implement a handful of primitives (`_read_manifest`, `_versions`, `_read_alias`,
...); `StoreBase` turns them into the public operations, so alias, canary, rollback and
prefix rules are written once. An alias is one AliasRecord object (see aliases.py),
replaced whole in one atomic write under the adapter's lock.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from loramux.adapters.aliases import AliasRecord, AliasState, new_state
from loramux.adapters.errors import Conflict, InvalidRequest, NotFound
from loramux.adapters.manifest import Manifest
from loramux.adapters.peft_format import ADAPTER_FILES
from loramux.adapters.names import DEFAULT_ALIAS, AdapterRef, check_alias, check_segment


ALIAS_RETRIES = 20


class StaleAlias(Exception):
    """Raised by a backend's `_write_alias` when the alias changed since it was read (lost CAS)."""


def not_found(ref: AdapterRef | str) -> NotFound:
    """The one message for unknown *and* forbidden names, so neither reveals the other."""
    return NotFound(f"The model `{ref}` does not exist or you do not have access to it.", param="model")


def as_ref(ref: AdapterRef | str) -> AdapterRef:
    return ref if isinstance(ref, AdapterRef) else AdapterRef.parse(ref)


@dataclass(frozen=True)
class Route:
    """What an alias serves now: `primary`, and `canary` for a `weight` share of requests."""

    primary: Manifest
    canary: Manifest | None = None
    weight: float = 0.0
    alias: str | None = None  # None when the ref named a version

    def pick(self, routing_key: str | None = None) -> Manifest:
        """The version for one request; deterministic per `routing_key` (random without one)."""
        if self.canary is None:
            return self.primary
        state = AliasState(version=self.primary.version, canary=self.canary.version, weight=self.weight)
        chosen = state.pick(f"{self.primary.tenant}/{self.primary.name}@{self.alias}", routing_key)
        return self.canary if chosen == self.canary.version else self.primary


@runtime_checkable
class AdapterStore(Protocol):
    """Where published adapter versions live. Every method is safe across processes."""

    root: Path  # local folder every path returned by `fetch` lies under

    def put(self, src: str | Path, manifest: Manifest) -> Manifest: ...
    def route(self, ref: AdapterRef | str) -> Route: ...
    def fetch(self, manifest: Manifest) -> Path: ...
    def list(self, tenant: str | None = None) -> list[Manifest]: ...
    def prune_cache(self, max_bytes: int, keep: set[str]) -> list[str]: ...
    def delete(self, ref: AdapterRef | str) -> None: ...
    def set_alias(self, ref: AdapterRef | str, alias: str, *, canary: AdapterRef | str | None = None,
                  weight: float | None = None) -> Manifest: ...
    def rollback(self, ref: AdapterRef | str, alias: str = DEFAULT_ALIAS) -> AliasRecord: ...
    def remove_alias(self, ref: AdapterRef | str, alias: str) -> None: ...
    def aliases(self, ref: AdapterRef | str) -> dict[str, str]: ...
    def alias_records(self, ref: AdapterRef | str) -> dict[str, AliasRecord]: ...


class StoreBase(ABC):
    """Public store operations over backend primitives."""

    root: Path

    # --- primitives -------------------------------------------------------------------
    @abstractmethod
    def _read_manifest(self, tenant: str, name: str, version: str) -> Manifest | None: ...
    @abstractmethod
    def _versions(self, tenant: str, name: str) -> list[str]: ...
    @abstractmethod
    def _read_alias(self, tenant: str, name: str, alias: str) -> str | None:
        """The stored alias text (an AliasRecord, or a bare version), None when unset."""
    @abstractmethod
    def _read_aliases(self, tenant: str, name: str) -> dict[str, str]: ...
    @abstractmethod
    def _write_alias(self, tenant: str, name: str, alias: str, text: str | None) -> None:
        """Replace the alias object with `text` in one atomic write; None deletes it."""
    @abstractmethod
    def _publish(self, src: Path, manifest: Manifest) -> Manifest: ...
    @abstractmethod
    def _delete_version(self, manifest: Manifest) -> None: ...
    @abstractmethod
    def fetch(self, manifest: Manifest) -> Path:
        """A local folder holding `manifest`'s version (downloaded first if need be)."""
    @abstractmethod
    def list(self, tenant: str | None = None) -> list[Manifest]: ...

    def prune_cache(self, max_bytes: int, keep: set[str]) -> list[str]:
        """Drop downloaded versions, least recently fetched first, until the cache holds at most
        `max_bytes`, never one in `keep`; the versions dropped. A store read in place has no cache."""
        return []

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
        existing = self._published(manifest.tenant, manifest.name, manifest.version)
        return existing or self._publish(src, manifest)

    def _record(self, tenant: str, name: str, alias: str) -> AliasRecord | None:
        text = self._read_alias(tenant, name, alias)
        return AliasRecord.parse(text) if text is not None else None

    def _manifest(self, ref: AdapterRef, version: str | None) -> Manifest:
        manifest = version and self._read_manifest(ref.tenant, ref.name, version)
        # A manifest that names another adapter was copied or linked in: not this name's version.
        if not manifest or (manifest.tenant, manifest.name, manifest.version) != (ref.tenant, ref.name, version):
            raise not_found(ref)
        return manifest

    def _version(self, ref: AdapterRef) -> str | None:
        """The full version a version selector names (None when unknown); prefixes must be unique."""
        if len(ref.selector) == 64:
            return ref.selector
        matches = [v for v in self._versions(ref.tenant, ref.name) if v.startswith(ref.selector)]
        if len(matches) > 1:
            raise InvalidRequest(f"version prefix `{ref.selector}` of `{ref.key}` is ambiguous;"
                                 " give more characters", param="model")
        return matches[0] if matches else None

    def _published(self, tenant: str, name: str, version: str) -> Manifest | None:
        """The manifest of a version the store holds, asking the backend itself (never a cache)."""
        return self._read_manifest(tenant, name, version)

    def _update_alias(self, ref: AdapterRef, alias: str,
                      change: Callable[[AliasRecord | None], AliasRecord]) -> AliasRecord:
        """Read-modify-write of one alias record under the lock; retried when a backend without
        locks (S3: conditional PUT) reports that another writer got there first."""
        for _ in range(ALIAS_RETRIES):
            with self._lock(ref.tenant, ref.name):
                new = change(self._record(ref.tenant, ref.name, alias))
                try:
                    self._write_alias(ref.tenant, ref.name, alias, new.to_text())
                    return new
                except StaleAlias:
                    continue
        raise Conflict(f"`{ref.key}@{alias}` kept changing under concurrent updates; try again", param="alias")

    def route(self, ref: AdapterRef | str) -> Route:
        """What `ref` serves now: an alias is read afresh (with its canary), a version is itself."""
        ref = as_ref(ref)
        alias = ref.alias
        if alias is None:
            return Route(primary=self._manifest(ref, self._version(ref)))
        record = self._record(ref.tenant, ref.name, alias)
        if record is None:
            raise not_found(ref)
        canary = self._manifest(ref, record.canary) if record.canary else None
        return Route(primary=self._manifest(ref, record.version), canary=canary, weight=record.weight,
                     alias=alias)

    def alias_records(self, ref: AdapterRef | str) -> dict[str, AliasRecord]:
        """alias -> its full record (version, canary, weight, history) for one adapter."""
        ref = as_ref(ref)
        return {a: AliasRecord.parse(t) for a, t in self._read_aliases(ref.tenant, ref.name).items()}

    def aliases(self, ref: AdapterRef | str) -> dict[str, str]:
        """alias -> full (primary) version for one adapter (the selector of `ref` is ignored)."""
        return {a: r.version for a, r in self.alias_records(ref).items()}

    def set_alias(self, ref: AdapterRef | str, alias: str, *, canary: AdapterRef | str | None = None,
                  weight: float | None = None) -> Manifest:
        """Point `alias` at the version `ref` names (an alias there means its primary version).

        With `canary` (a version, or `@ALIAS` of the same adapter), that version gets a
        `weight` share of the alias's traffic. The previous state goes to the alias history.
        """
        check_alias(alias)
        ref = as_ref(ref)
        manifest = self.route(ref).primary
        canary_version = None
        if canary is not None:
            canary_ref = as_ref(canary if "/" in str(canary) else f"{ref.key}@{canary}")
            if canary_ref.key != ref.key:
                raise InvalidRequest(f"the canary must be a version of `{ref.key}`, not `{canary_ref}`",
                                     param="canary")
            canary_version = self.route(canary_ref).primary.version
        state = new_state(manifest.version, canary_version, weight)
        self._update_alias(ref, alias, lambda record: record.moved_to(state) if record
                           else AliasRecord(**state.model_dump()))
        return manifest

    def rollback(self, ref: AdapterRef | str, alias: str = DEFAULT_ALIAS) -> AliasRecord:
        """Point `alias` back at its previous state (version and canary); Conflict when it has none."""
        check_alias(alias)
        ref = as_ref(ref)

        def back(record: AliasRecord | None) -> AliasRecord:
            if record is None:
                raise not_found(ref.at(alias))
            previous = record.rolled_back()
            if previous is None:
                raise Conflict(f"`{ref.key}@{alias}` has no earlier version to roll back to", param="alias")
            for version in previous.versions():
                try:
                    self._manifest(ref, version)
                except NotFound:
                    raise Conflict(f"cannot roll `{ref.key}@{alias}` back: its previous version {version[:12]}"
                                   " was deleted; point the alias with `alias` instead", param="alias") from None
            return previous
        return self._update_alias(ref, alias, back)

    def remove_alias(self, ref: AdapterRef | str, alias: str) -> None:
        ref = as_ref(ref)
        with self._lock(ref.tenant, ref.name):
            if self._read_alias(ref.tenant, ref.name, check_alias(alias)) is None:
                raise not_found(ref.at(alias))
            self._write_alias(ref.tenant, ref.name, alias, None)

    def delete(self, ref: AdapterRef | str) -> None:
        """Delete one version, named by version; refused (Conflict) while an alias (or canary) uses it."""
        ref = as_ref(ref)
        if ref.alias is not None:
            raise InvalidRequest(f"delete needs a version, not an alias: `{ref}`", param="model")
        with self._lock(ref.tenant, ref.name):
            manifest = self.route(ref).primary
            using = sorted(a for a, r in self.alias_records(ref).items() if manifest.version in r.versions())
            if using:
                raise Conflict(f"`{manifest.served_name}` is still aliased as {', '.join(using)};"
                               " move or remove the alias first", param="model")
            self._delete_version(manifest)

    @staticmethod
    def _check_tenant(tenant: str | None) -> None:
        if tenant is not None:
            check_segment(tenant, "tenant")
