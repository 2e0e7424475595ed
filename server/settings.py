"""Server settings, declared once: flags override `LORAMUX_*` environment variables, which
override the defaults here. `loramux serve` builds its flags and their help from these fields."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["debug", "info", "warning", "error"]


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORAMUX_", extra="ignore", use_attribute_docstrings=True)

    base: Path
    """Directory of the base model (HF layout: config.json, safetensors, tokenizer)."""
    served_name: str | None = None
    """Name clients use for the base; defaults to the base directory's name."""
    adapters: dict[str, Path] = Field(default_factory=dict)
    """Served adapter name (TENANT/ADAPTER) -> local PEFT adapter directory."""
    registry: str | None = None
    """Adapter registry (a folder or s3://BUCKET/PREFIX) served on demand: every adapter published for this base."""
    refresh_s: float = Field(5.0, ge=0.0)
    """How long an alias's answer is reused before the registry is read again (0: every request)."""
    pins: list[str] = Field(default_factory=list)
    """Adapter names kept loaded and in a batch slot (never a cold load); fewer than max_loras."""
    idle_s: float = Field(600.0, ge=0.0)
    """Seconds unused after which an unpinned adapter version leaves the engine (0: never)."""
    cache_gib: float = Field(10.0, gt=0.0)
    """Bound on a remote (S3) registry's local download cache; versions in use are never dropped."""
    max_loras: int = Field(4, gt=0)
    """Adapters that can run in one batch (vLLM GPU/CPU slots)."""
    max_lora_rank: int = Field(16, gt=0)
    """Largest rank the engine accepts; larger adapters are refused at load."""
    max_cpu_loras: int | None = Field(None, gt=0)
    """Adapters kept loaded in memory (LRU beyond this); defaults to max_loras."""
    enable_lora: bool = True
    """On by default (vLLM's `--enable-lora` is accepted as is); off (--no-enable-lora, LORAMUX_ENABLE_LORA=0): the engine has no LoRA slots and serves the base only, as bare vLLM would; for measuring what LoRA costs."""
    max_num_seqs: int | None = Field(None, gt=0)
    """Requests the engine runs in one batch (vLLM's max_num_seqs; its default: 128 on CPU); more wait in its queue."""
    fair_share: bool = True
    """Serve the engine's queue fairly between tenants (a flooding tenant's backlog waits behind others' requests); off: first come, first served."""
    tool_call_parser: str | None = None
    """vLLM's tool parser for this base's tool-call format (hermes, llama3_json, mistral, ...): enables tool_choice auto."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Compute dtype: auto, float32, bfloat16, float16. auto: on CPU bfloat16 only where the CPU has native bf16 (AVX512-BF16, AMX), else float32; on GPU vLLM's choice; the start line says which and why."""
    max_model_len: int | None = Field(None, gt=0)
    """Context length; defaults to the base's."""
    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = Field(8000, ge=0, le=65535)
    """Port to listen on."""
    replicas: int | None = Field(None, gt=0)
    """Serve from this many replicas on Ray Serve (each with its own engine; requests for an adapter go to a replica that holds it), joining the Ray cluster at RAY_ADDRESS or starting one here. Unset: one process, no Ray."""
    keep_alive_s: float = Field(75.0, gt=0)
    """Seconds an idle client connection stays open: longer than client pools (5 s) and load balancers' idle timeouts (60 s), so the server never closes a connection just as a client reuses it."""
    keys: Path | None = None
    """Tenant keys file (`loramux keys create`); re-read when it changes. Without it the server is open."""
    admin_key: str | None = None
    """Bearer key for the adapter admin endpoints; admin is disabled without one."""
    admin_paths: list[Path] = Field(default_factory=list)
    """Folders the admin API may load adapter folders from, besides the registry."""
    metrics_top_k: int = Field(50, gt=0)
    """Adapters that keep their own label in /metrics (the busiest); the rest share `other`."""
    log_level: LogLevel = "warning"
    """debug | info | warning | error; below warning, the libraries' own start-up chatter shows too."""

    @model_validator(mode="after")
    def _pins_leave_a_slot(self) -> ServerSettings:
        if len(set(self.pins)) >= self.max_loras:
            raise ValueError(f"{len(set(self.pins))} pinned adapter(s) would hold every one of the {self.max_loras} "
                             "LoRA slots, leaving none for other adapters; pin fewer or raise --max-loras")
        return self

    @property
    def capacity(self) -> int:
        """Adapter versions the catalog keeps in the engine at once (vLLM's host-memory LRU size)."""
        return self.max_cpu_loras or self.max_loras

    @property
    def base_name(self) -> str:
        return self.served_name or self.base.resolve().name
