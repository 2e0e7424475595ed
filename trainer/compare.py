"""`trainer compare`: LoRA vs QLoRA vs full on the user's own data, one table.

Each method trains in its own spawned process, so peak memory is that method's alone
(the process peak resident set on CPU, peak allocated on a GPU) and no method inherits
another's state (the bitsandbytes CPU trap included).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.table import Table

from loramux.adapters.errors import InvalidRequest
from loramux.trainer.config import TrainConfig, build_config
from loramux.trainer.methods import METHODS

COLUMNS = ("method", "score", "base", "forgetting", "wall s", "tok/s", "peak MiB", "trainable", "size MiB")


def _run(cfg_json: str) -> dict:
    from loramux.trainer.train import train

    return train(TrainConfig.model_validate_json(cfg_json), with_base=True).metrics


def method_configs(cfg: TrainConfig, methods: list[str], overrides: list[str] = ()) -> dict[str, TrainConfig]:
    """The same recipe per method; `METHOD.key=value` overrides apply to that method only."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InvalidRequest(f"unknown method(s) {unknown}; known: {sorted(METHODS)}", param="methods")
    out = {}
    for m in methods:
        own = [o.removeprefix(f"{m}.") for o in overrides if o.startswith(f"{m}.")]
        raw = cfg.model_dump(mode="json")
        raw.update(method=m, output_dir=str(cfg.output_dir / m))
        out[m] = build_config(raw, own, source=f"compare[{m}]")
    return out


def compare(cfg: TrainConfig, methods: list[str], overrides: list[str] = ()) -> list[dict]:
    """Train each method (one process each, one after the other) and return one row per method."""
    configs = method_configs(cfg, methods, overrides)
    rows = []
    ctx = multiprocessing.get_context("spawn")
    for method, mcfg in configs.items():
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            m = pool.submit(_run, mcfg.model_dump_json()).result()
        rows.append({"method": method, "metric": m["metric"], "score": m["score"], "base_score": m["base_score"],
                     "forgetting": m["forgetting"], "wall_time_s": m["wall_time_s"],
                     "tokens_per_s": m["tokens_per_s"], "peak_memory_mb": m["peak_memory_mb"],
                     "trainable_params": m["trainable_params"], "trainable_pct": m["trainable_pct"],
                     "artifact_bytes": m["artifact_bytes"], "output_dir": str(mcfg.output_dir)})
    return rows


def table(rows: list[dict]) -> Table:
    t = Table(title=f"methods compared on the same data ({rows[0]['metric'] if rows else ''}; forgetting = "
                    "extra nats/token on general text, lower is better)")
    for c in COLUMNS:
        t.add_column(c, justify="left" if c == "method" else "right")
    for r in rows:
        t.add_row(r["method"], f"{r['score']:.3f}", f"{r['base_score']:.3f}", f"{r['forgetting']:+.3f}",
                  f"{r['wall_time_s']:.1f}", f"{r['tokens_per_s']:,.0f}", f"{r['peak_memory_mb']:,.0f}",
                  f"{r['trainable_params']:,} ({r['trainable_pct']:.2f}%)", f"{r['artifact_bytes'] / 2**20:.2f}")
    return t


def write_rows(rows: list[dict], out: Path) -> Path:
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    return out
