"""Server settings: CLI flags, with `LORAMUX_*` environment variables as fallback."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORAMUX_", extra="ignore")

    base: Path
    """Directory of the base model (HF layout: config.json, safetensors, tokenizer)."""
    served_name: str | None = None
    """Name clients use for the base; defaults to the base directory's name."""
    adapters: dict[str, Path] = Field(default_factory=dict)
    """Served adapter name (TENANT/ADAPTER) -> local PEFT adapter directory."""
    max_loras: int = 4
    """Adapters that can run in one batch (vLLM GPU/CPU slots)."""
    max_lora_rank: int = 16
    """Largest rank the engine accepts; larger adapters are refused at load."""
    max_cpu_loras: int | None = None
    """Adapters kept loaded in memory (LRU beyond this)."""
    dtype: str = "auto"
    """Compute dtype: auto, float32, bfloat16, float16."""
    max_model_len: int | None = None
    """Context length; defaults to the base's."""
    host: str = "127.0.0.1"
    port: int = 8000
    admin_key: str | None = None
    """Bearer key for the adapter admin endpoints; admin is disabled without one."""

    @property
    def base_name(self) -> str:
        return self.served_name or self.base.resolve().name
