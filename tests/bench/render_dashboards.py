"""Draws a Grafana dashboard's panels with matplotlib from a Prometheus's data, one PNG per
dashboard (docs/dashboards/*.png): Grafana is not installable here, and the pictures then show
exactly the queries the committed JSON holds, answered by the real series.

Called by tests/integration/test_dashboards_prometheus.py when LORAMUX_DASHBOARD_PNGS names a
folder (`LORAMUX_DASHBOARD_PNGS=docs/dashboards pytest -m integration -k dashboards`).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path

import httpx

from tests.deploy.dashboard_queries import panels, substitute

_UNITS = {"s": "seconds", "percentunit": "fraction", "reqps": "requests/s", "ops": "per second",
          "bool_yes_no": "1 = yes"}


def _legend(fmt: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip() or "value"


def query_range(prom: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    r = httpx.get(f"{prom}/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": step},
                  timeout=30)
    r.raise_for_status()
    return r.json()["data"]["result"]


def render(prom: str, board: dict, values: dict[str, str], start: float, end: float, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    shown = panels(board)
    cols = 2
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(14, 3.1 * rows), squeeze=False)
    step = max(1.0, (end - start) / 150)
    for ax, panel in zip(axes.flat, shown, strict=False):
        for target in panel["targets"]:
            for series in query_range(prom, substitute(target["expr"], values), start, end, step):
                points = [(datetime.fromtimestamp(t), float(v)) for t, v in series["values"]]
                points = [(t, v) for t, v in points if math.isfinite(v)]
                if points:
                    ax.plot(*zip(*points, strict=True), linewidth=1.2,
                            label=_legend(target.get("legendFormat", ""), series["metric"]))
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_title(f"{panel['title']}{' (stat)' if panel['type'] == 'stat' else ''}", fontsize=10, loc="left")
        ax.set_ylabel(_UNITS.get(unit, ""), fontsize=8)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left", ncol=2, framealpha=0.6)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle(f"{board['title']} - every panel, from a real Prometheus scraping loramux under load", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (3.1 * rows)))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
