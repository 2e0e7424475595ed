"""Tenant API keys: the keys file (its one format), what a key may use, and the server's live view.

The file holds each key's SHA-256 and its grants, never the key. A key reads
`lmx-<id>-<secret>`: the server finds its record by id and logs the id, never the key. Keys
carry 256 random bits, so a plain hash is as strong as a stretched one and costs a
microsecond per request. `loramux keys` changes the file atomically under a lock; `serve
--keys` reads it again when it changes (looked at most once a second), without a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from loramux.adapters.errors import Forbidden, InvalidRequest, LoramuxError, NotFound
from loramux.adapters.names import AdapterRef, check_segment
from loramux.adapters.store.local import write_atomic

log = logging.getLogger("loramux.server")
PREFIX = "lmx"


class InvalidApiKey(LoramuxError):
    status_code = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(Forbidden):
    """A live key that may not make this call (admin endpoints)."""


class KeyRecord(BaseModel):
    id: str
    tenant: str
    sha256: str
    adapters: list[str]
    """Patterns over `TENANT/NAME` (fnmatch: `acme/*`, `acme/support`); by default the tenant's own."""
    base: bool = True
    """Whether the key may ask for the base model itself."""
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    max_inflight: int | None = Field(None, gt=0)
    admin: bool = False
    created_at: datetime
    revoked_at: datetime | None = None

    def may_use(self, model: str, base_name: str) -> bool:
        """Whether this key may ask for `model` (`T/N`, `T/N@ALIAS`, `T/N@VERSION` or the base)."""
        if model == base_name:
            return self.base
        try:
            ref = AdapterRef.parse(model)
        except InvalidRequest:
            return False
        return any(fnmatch.fnmatchcase(f"{ref.tenant}/{ref.name}", p) for p in self.adapters)


class KeysFile(BaseModel):
    version: int = 1
    keys: list[KeyRecord] = Field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> KeysFile:
        try:
            return cls.model_validate_json(path.read_text())
        except FileNotFoundError:
            raise InvalidRequest(f"no keys file at {path}; create one with `loramux keys create --keys {path} "
                                 "--tenant TENANT`", param="keys") from None
        except ValidationError as exc:
            raise InvalidRequest(f"{path} is not a loramux keys file: {exc}", param="keys") from None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@contextlib.contextmanager
def _editing(path: Path) -> Iterator[KeysFile]:
    """The file's records under an exclusive lock, written back atomically (readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        keys = KeysFile.read(path) if path.exists() else KeysFile()
        yield keys
        write_atomic(path, keys.model_dump_json(indent=2) + "\n")
        os.chmod(path, 0o600)


def create_key(path: Path, tenant: str, *, adapters: list[str] | None = None, base: bool = True,
               rpm: int | None = None, tpm: int | None = None, max_inflight: int | None = None,
               admin: bool = False) -> tuple[str, KeyRecord]:
    """A new key (returned once, stored only as its hash) and its record."""
    check_segment(tenant, "tenant")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    key = f"{PREFIX}-{key_id}-{secret}"
    try:
        record = KeyRecord(id=key_id, tenant=tenant, sha256=_digest(key), adapters=adapters or [f"{tenant}/*"],
                           base=base, rpm=rpm, tpm=tpm, max_inflight=max_inflight, admin=admin,
                           created_at=datetime.now(UTC))
    except ValidationError as exc:
        raise InvalidRequest("; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}"
                                       for e in exc.errors()), param="keys") from None
    with _editing(path) as keys:
        keys.keys.append(record)
    return key, record


def revoke_key(path: Path, key_id: str) -> KeyRecord:
    with _editing(path) as keys:
        for record in keys.keys:
            if record.id == key_id and record.revoked_at is None:
                record.revoked_at = datetime.now(UTC)
                return record
    raise NotFound(f"no live key with id {key_id!r} in {path}; `loramux keys list --keys {path}` shows them",
                   param="key_id")


class Keyring:
    """The server's view of a keys file: who a bearer token is, re-read when the file changes."""

    def __init__(self, path: Path, check_every_s: float = 1.0) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self._by_id: dict[str, KeyRecord] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = -float("inf")
        self._load(KeysFile.read(path))  # a missing or broken file stops the start

    def _load(self, keys: KeysFile) -> None:
        self._by_id = {r.id: r for r in keys.keys if r.revoked_at is None}
        st = self.path.stat()
        self._stamp = (st.st_mtime_ns, st.st_size)

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_every_s:
            return
        self._checked = now
        try:
            st = self.path.stat()
            if (st.st_mtime_ns, st.st_size) != self._stamp:
                self._load(KeysFile.read(self.path))
                log.info("keys file re-read", extra={"keys": len(self._by_id)})
        except (OSError, InvalidRequest) as exc:  # keep serving the last good keys
            log.error("keys file unreadable; keeping the keys read before", extra={"error": str(exc)})

    def check(self, authorization: str | None) -> KeyRecord:
        """The live record of `Authorization: Bearer KEY`; InvalidApiKey otherwise (never says why)."""
        self._refresh()
        key = (authorization or "").removeprefix("Bearer ").strip()
        prefix, _, rest = key.partition("-")
        key_id = rest.partition("-")[0]
        record = self._by_id.get(key_id) if prefix == PREFIX else None
        if record is None or not secrets.compare_digest(record.sha256, _digest(key)):
            raise InvalidApiKey("Incorrect API key provided. Pass a loramux key as `Authorization: Bearer KEY` "
                                "(the OpenAI client's api_key).")
        return record
