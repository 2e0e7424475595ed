"""Served adapter names: `TENANT/ADAPTER`, optionally `@VERSION` (hash prefix) or `@ALIAS`.

Every part is a plain path segment by construction (lowercase letters, digits, `.`, `_`,
`-`, never starting with a dot), so a name can never walk out of the store. An alias
must contain a non-hex letter (`prod`, `canary`), so `@abc12345` can only ever mean a
version prefix and the two never shadow each other.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from loramux.adapters.errors import InvalidRequest

DEFAULT_ALIAS = "prod"
MIN_VERSION_PREFIX = 8
SHORT_VERSION = 12

_SEGMENT = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_HEX = re.compile(r"[0-9a-f]+")
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def check_segment(value: str, what: str = "name") -> str:
    """A tenant or adapter name: 1-64 chars of [a-z0-9._-], starting alphanumeric."""
    if not _SEGMENT.fullmatch(value):
        raise InvalidRequest(f"invalid {what} {value!r}: use 1-64 characters of a-z, 0-9, '.', '_', '-',"
                             " starting with a letter or digit", param=what)
    return value


def check_alias(value: str) -> str:
    """An alias: starts with a letter, [a-z0-9_-], and is not all hex (else it reads as a version)."""
    if not _ALIAS.fullmatch(value) or _HEX.fullmatch(value):
        raise InvalidRequest(f"invalid alias {value!r}: start with a letter, use a-z, 0-9, '_', '-',"
                             " and include a letter other than a-f, so it cannot read as a version", param="alias")
    return value


def is_version_selector(value: str) -> bool:
    """True for a full or abbreviated content hash (at least MIN_VERSION_PREFIX hex chars)."""
    return len(value) >= MIN_VERSION_PREFIX and len(value) <= 64 and bool(_HEX.fullmatch(value))


Segment = Annotated[str, AfterValidator(check_segment)]


class AdapterRef(BaseModel):
    """A parsed served name. `selector` is a version (prefix) or an alias; None means `prod`."""

    model_config = ConfigDict(frozen=True)

    tenant: Segment
    name: Segment
    selector: str | None = None

    @classmethod
    def parse(cls, text: str) -> AdapterRef:
        """Parse `tenant/name[@selector]`; raises InvalidRequest(param="model") when malformed."""
        base, _, selector = text.partition("@")
        tenant, sep, name = base.partition("/")
        if not sep or "/" in name or (_ and not selector):
            raise InvalidRequest(f"invalid adapter name {text!r}: expected TENANT/ADAPTER[@VERSION|@ALIAS]",
                                 param="model")
        try:
            check_segment(tenant, "tenant")
            check_segment(name, "name")
            if selector and not is_version_selector(selector):
                check_alias(selector)
        except InvalidRequest as e:
            raise InvalidRequest(f"invalid adapter name {text!r}: {e.message}", param="model") from None
        return cls(tenant=tenant, name=name, selector=selector or None)

    @property
    def key(self) -> str:
        """`tenant/name`, without selector."""
        return f"{self.tenant}/{self.name}"

    @property
    def alias(self) -> str | None:
        """The alias this ref names (`prod` when it names nothing), or None for a version."""
        if self.selector is None:
            return DEFAULT_ALIAS
        return None if is_version_selector(self.selector) else self.selector

    def at(self, selector: str | None) -> AdapterRef:
        """The same adapter with another selector."""
        return AdapterRef(tenant=self.tenant, name=self.name, selector=selector)

    def __str__(self) -> str:
        return self.key + (f"@{self.selector}" if self.selector else "")
