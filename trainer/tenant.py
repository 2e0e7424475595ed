"""Add a tenant in one step: train, score base vs adapter on held-out data, publish only if better.

The eval gate is the point: an adapter that does not beat the base by `min_gain` on the
tenant's own eval set gets no version, no alias, nothing in the registry. Publishing goes
through `loramux.adapters.registry.publish` (which validates first); with a server URL
the new version is then loaded there through the vLLM-compatible admin route.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.errors import InvalidRequest, LoramuxError
from loramux.adapters.manifest import Manifest
from loramux.adapters.names import check_segment
from loramux.adapters.registry import publish
from loramux.adapters.settings import StoreSettings
from loramux.trainer.config import TrainConfig
from loramux.trainer.methods import METHODS, quantization_record
from loramux.trainer.probe import probe_line, probe_run
from loramux.trainer.train import train


class GateFailed(LoramuxError):
    """The adapter did not beat the base by the required margin; nothing was published."""

    status_code = 422
    type = "invalid_request_error"
    code = "eval_gate_failed"

    def __init__(self, message: str, metrics: dict) -> None:
        super().__init__(message, param="min_gain")
        self.metrics = metrics

    def __reduce__(self):  # raised in a spawned training process, re-raised in its parent
        return GateFailed, (self.message, self.metrics)


@dataclass
class Gate:
    min_gain: float = 0.05
    """The adapter's score must exceed the base's by at least this (absolute, 0..1 metrics)."""
    min_score: float = 0.0
    """And reach at least this score."""
    max_general_drop: float | None = None
    """Refuse when the general-probe score (loramux.trainer.probe) falls more than this below the base's;
    None = report it only."""

    def check(self, score: float, base_score: float, general_change: float | None = None) -> list[str]:
        """Reasons the gate refuses (empty: passes)."""
        reasons = []
        if self.max_general_drop is not None and general_change is not None \
                and -general_change > self.max_general_drop:
            reasons.append(f"general probe change {general_change:+.3f} is a larger drop than the allowed "
                           f"{-self.max_general_drop:+.3f}: the adapter forgot what the base knew")
        if score - base_score < self.min_gain:
            reasons.append(f"adapter {score:.3f} vs base {base_score:.3f}: gain {score - base_score:+.3f} "
                           f"is below the required {self.min_gain:+.3f}")
        if score < self.min_score:
            reasons.append(f"adapter score {score:.3f} is below the minimum {self.min_score:.3f}")
        return reasons


@dataclass
class AddTenantResult:
    manifest: Manifest
    metrics: dict
    run_dir: Path
    warnings: list[str] = field(default_factory=list)
    server_response: dict | None = None


def notify_server(url: str, lora_name: str, lora_path: Path, *, admin_key: str | None = None,
                  timeout: float = 120.0) -> dict:
    """Ask a running server to load the version now (POST /v1/load_lora_adapter)."""
    import httpx

    key = admin_key if admin_key is not None else os.environ.get("LORAMUX_ADMIN_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.post(f"{url.rstrip('/')}/v1/load_lora_adapter", headers=headers, timeout=timeout,
                       json={"lora_name": lora_name, "lora_path": str(lora_path)})
    except httpx.HTTPError as e:
        raise LoramuxError(f"published, but the server at {url} could not be told: {e}") from None
    if r.status_code >= 400:
        raise LoramuxError(f"published, but the server at {url} refused to load it ({r.status_code}): {r.text}")
    return r.json() if r.content else {}


def add_tenant(cfg: TrainConfig, *, tenant: str, name: str, store: StoreSettings | str, base_id: str | None = None,
               gate: Gate = Gate(), aliases: tuple[str, ...] = ("prod",), server: str | None = None,
               admin_key: str | None = None, console: Console | None = None) -> AddTenantResult:
    """Train `cfg`, gate it, publish it as `tenant/name` to `store`; GateFailed publishes nothing."""
    problems = []
    for label, value in (("tenant", tenant), ("name", name)):
        try:
            check_segment(value, label)
        except InvalidRequest as e:
            problems.append(e.message)
    if not METHODS[cfg.method].publishable:
        usable = [m.name for m in METHODS.values() if m.publishable]
        problems.append(f"method {cfg.method!r} makes a full model, not an adapter; use one of {usable}")
    if problems:  # before any training: fail in seconds, not after an hour
        raise InvalidRequest("; ".join(problems), param="tenant")
    adapter_store = StoreSettings.of(store).open()
    base = BaseSpec.from_dir(cfg.base, base_id)

    result = train(cfg, with_base=True, console=console)
    m = result.metrics
    if "general_probe" not in m:  # train.evaluate_run scores it on the models it loads; a run without it
        if console is not None:
            console.print("general probe: the base, then the adapter")
        m.update(probe_run(cfg.base, result.artifact).metrics())
        (result.output_dir / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
    reasons = gate.check(m["score"], m["base_score"], m.get("general_probe_change"))
    if reasons:
        probe = probe_line(m)
        raise GateFailed(f"{tenant}/{name}: not published, the adapter failed the eval gate on "
                         f"{m['eval_examples']} held-out examples ({m['metric']}):\n"
                         + "\n".join(f"- {r}" for r in reasons)
                         + (f"\ngeneral probe: {probe}" if probe else "")
                         + f"\nrun folder: {result.output_dir}", m)
    scores = {m["metric"]: m["score"], f"base_{m['metric']}": m["base_score"], "eval_loss": m["eval_loss"],
              "forgetting": m["forgetting"],
              **{k: m[k] for k in ("general_probe", "base_general_probe") if m.get(k) is not None}}
    published = publish(adapter_store, result.artifact, tenant=tenant, name=name, base=base,
                        method=cfg.method, data_hash=m["data_hash"], eval_scores=scores, aliases=aliases,
                        quantization=quantization_record(cfg) or None)
    out = AddTenantResult(published.manifest, m, result.output_dir, [p.message for p in published.warnings])
    if server:
        path = adapter_store.fetch(published.manifest)
        out.server_response = notify_server(server, f"{tenant}/{name}", path, admin_key=admin_key)
    return out
