"""Where the adapter store is: one settings object the CLIs, the server and the trainer share."""

from __future__ import annotations

from pathlib import Path

import platformdirs
from pydantic_settings import BaseSettings, SettingsConfigDict

from loramux.adapters.store import AdapterStore, open_store


def default_store() -> str:
    return str(Path(platformdirs.user_data_dir("loramux")) / "adapters")


class StoreSettings(BaseSettings):
    """`LORAMUX_STORE`, `LORAMUX_STORE_CACHE`, `LORAMUX_S3_ENDPOINT_URL` when not given."""

    model_config = SettingsConfigDict(env_prefix="LORAMUX_", extra="ignore")

    store: str = default_store()
    """Store URL: a folder (or file://PATH) for the local store, s3://BUCKET/PREFIX for S3."""
    store_cache: Path | None = None
    """Where a remote store keeps downloaded versions; defaults to the user cache folder."""
    s3_endpoint_url: str | None = None
    """S3-compatible endpoint (MinIO, SeaweedFS...); AWS when unset (or AWS_ENDPOINT_URL)."""

    @classmethod
    def of(cls, store: StoreSettings | str | Path | None) -> StoreSettings:
        """Settings for a store given as a URL (or already as settings; None: from the environment).

        A bare URL still takes the cache folder and S3 endpoint from `LORAMUX_*`: passing a URL
        string around instead of these settings is how those used to get lost.
        """
        if isinstance(store, StoreSettings):
            return store
        return cls() if store is None else cls(store=str(store))

    def open(self) -> AdapterStore:
        return open_store(self.store, cache_dir=self.store_cache, endpoint_url=self.s3_endpoint_url)
