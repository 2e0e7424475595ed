"""Public name -> immutable version -> local path; and the one way to publish.

The server asks `Resolver.resolve(model, tenant=..., routing_key=...)` on every request
naming an adapter: aliases are read afresh each time (they move) unless `ttl_s` allows
reusing an answer that long (worth it on S3, where an alias read is a GET), the version
they give never changes, and the path handed to the engine is checked to lie inside the
store root. An alias with a canary sends a `weight` share of routing keys (e.g. a request
or user id) to the canary version, the same key always to the same version. The trainer calls
`publish`, which validates first, so nothing unservable ever gets a version.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.errors import InvalidRequest, NotFound
from loramux.adapters.manifest import Manifest, Method, Quantization
from loramux.adapters.names import DEFAULT_ALIAS, AdapterRef
from loramux.adapters.store.base import AdapterStore, Route, not_found
from loramux.adapters.validation import Problem, validate_adapter


@dataclass(frozen=True)
class Resolved:
    """What a served name points at right now."""

    manifest: Manifest
    path: Path

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def engine_name(self) -> str:
        """`tenant/name@fullversion`: a name the engine may cache forever (it never changes meaning)."""
        return str(self.manifest.ref)


def within(root: Path, path: str | Path) -> Path | None:
    """`path` with symlinks resolved, or None when that lies outside `root`."""
    real = Path(os.path.realpath(path))
    return real if real.is_relative_to(root) else None


class Resolver:
    """Resolves served adapter names against one store, tenant-scoped.

    `ttl_s` > 0 reuses a successful answer for that long: an alias move or a delete then
    takes up to `ttl_s` to show. Failures are never cached.
    """

    def __init__(self, store: AdapterStore, *, ttl_s: float = 0.0) -> None:
        self.store = store
        self.root = Path(os.path.realpath(store.root))
        self.ttl_s = ttl_s
        self._cache: dict[AdapterRef, tuple[float, Route]] = {}

    def resolve(self, model: str | AdapterRef, *, tenant: str | None = None,
                routing_key: str | None = None) -> Resolved:
        """Resolve `model` for a caller of `tenant` (None: any tenant, for admins).

        Unknown, malformed, other tenants' and out-of-store names all raise the same
        NotFound, so a caller learns nothing about adapters it may not use. For an alias
        with a canary, `routing_key` picks the version deterministically (random if None).
        """
        manifest = self.route(model, tenant=tenant).pick(routing_key)
        return Resolved(manifest=manifest, path=self.fetch(manifest))

    def route(self, model: str | AdapterRef, *, tenant: str | None = None) -> Route:
        """What `model` names now (its alias's primary and canary), without fetching any files."""
        try:
            ref = model if isinstance(model, AdapterRef) else AdapterRef.parse(model)
        except InvalidRequest:
            raise not_found(model) from None
        if tenant is not None and ref.tenant != tenant:
            raise not_found(model)
        now = time.monotonic()
        if self.ttl_s > 0 and (hit := self._cache.get(ref)) and hit[0] > now:
            return hit[1]
        route = self.store.route(ref)
        if self.ttl_s > 0:
            self._cache[ref] = (now + self.ttl_s, route)
        return route

    def fetch(self, manifest: Manifest) -> Path:
        """The local folder of one version (downloaded first from a remote store), inside the store root."""
        path = within(self.root, self.store.fetch(manifest))
        if path is None or not path.is_dir():
            raise not_found(manifest.served_name)
        return path

    def forget(self) -> None:
        """Drop every cached answer: the next resolution reads the store."""
        self._cache.clear()

    def check_path(self, path: str | Path, param: str = "lora_path") -> Path:
        """Admin-supplied adapter path (vLLM's load_lora_adapter): must lie inside the store."""
        real = within(self.root, path)
        if real is None:
            raise InvalidRequest(f"{path} is outside the adapter store {self.root}", param=param)
        if not real.is_dir():
            raise NotFound(f"no adapter at {path}", param=param)
        return real


@dataclass(frozen=True)
class Published:
    manifest: Manifest
    warnings: list[Problem]


def publish(store: AdapterStore, adapter_dir: str | Path, *, tenant: str, name: str, base: BaseSpec,
            method: Method = "lora", data_hash: str | None = None,
            eval_scores: dict[str, float] | None = None, aliases: tuple[str, ...] = (),
            max_rank: int | None = None, quantization: Quantization | dict | None = None) -> Published:
    """Validate, then publish atomically, then point `aliases` (e.g. `("prod",)`) at the version.

    An adapter's first version becomes its `prod` when no alias is asked for, so a bare
    `TENANT/NAME` serves it.

    `quantization`: for method "qlora", the 4-bit settings it trained under (recorded in
    the manifest). Raises AdapterInvalid listing every problem; warnings come back.
    """
    report = validate_adapter(adapter_dir, base=base, max_rank=max_rank, method=method).raise_for_errors()
    manifest = Manifest.create(adapter_dir, tenant=tenant, name=name, base=base, method=method,
                               data_hash=data_hash, eval_scores=eval_scores, quantization=quantization)
    stored = store.put(adapter_dir, manifest)
    if not aliases and not store.aliases(stored.ref):
        aliases = (DEFAULT_ALIAS,)
    for alias in aliases:
        store.set_alias(stored.ref, alias)
    return Published(manifest=stored, warnings=report.warnings)
