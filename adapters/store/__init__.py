"""Adapter stores: where published versions live (local filesystem, S3).

`open_store(url)` picks the backend from the URL's scheme: a plain path or `file://PATH`
is a LocalStore, `s3://BUCKET/PREFIX` an S3Store (endpoint from `endpoint_url`, else
boto3's usual `AWS_ENDPOINT_URL` / credentials chain).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import platformdirs

from loramux.adapters.errors import InvalidRequest
from loramux.adapters.store.base import AdapterStore, StoreBase
from loramux.adapters.store.local import LocalStore


def _local(url: str, cache_dir: Path | None, endpoint_url: str | None) -> AdapterStore:
    return LocalStore(url.removeprefix("file://"))


def _s3(url: str, cache_dir: Path | None, endpoint_url: str | None) -> AdapterStore:
    from loramux.adapters.store.s3 import S3Store

    parsed = urlparse(url)
    if not parsed.netloc:
        raise InvalidRequest(f"S3 store URL needs a bucket: {url!r} (s3://BUCKET/PREFIX)", param="store")
    cache = cache_dir or Path(platformdirs.user_cache_dir("loramux")) / "s3" / parsed.netloc
    return S3Store(parsed.netloc, cache, prefix=parsed.path, endpoint_url=endpoint_url)


STORES: dict[str, Callable[[str, Path | None, str | None], AdapterStore]] = {
    "": _local, "file": _local, "s3": _s3,
}


def open_store(url: str | Path, *, cache_dir: str | Path | None = None,
               endpoint_url: str | None = None) -> AdapterStore:
    """The store at `url`; `cache_dir` is where remote stores keep local copies."""
    url = str(url)
    scheme = urlparse(url).scheme
    if scheme not in STORES:
        raise InvalidRequest(f"unknown store scheme {scheme!r} in {url!r}; known: "
                             f"{', '.join(s for s in STORES if s)}", param="store")
    return STORES[scheme](url, Path(cache_dir) if cache_dir else None, endpoint_url)


__all__ = ["AdapterStore", "LocalStore", "StoreBase", "open_store"]
