"""What Grafana would send to Prometheus for a dashboard: each panel's queries and each
variable's values query, with variables replaced the way Grafana replaces them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"


def load_dashboards() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def targets(dashboard: dict) -> list[tuple[str, str, str]]:
    """(panel title, PromQL, legend) for every query of every panel."""
    return [(p["title"], t["expr"], t.get("legendFormat", "")) for p in panels(dashboard) for t in p["targets"]]


def query_variables(dashboard: dict) -> list[tuple[str, str, str]]:
    """(name, series selector, label) of each `label_values(selector, label)` variable, in order."""
    out = []
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["query"])
            assert m, v["query"]
            out.append((v["name"], m.group(1), m.group(2)))
    return out


def multi_value(values: list[str]) -> str:
    """Grafana's All / multi-value selection in a regex matcher: `(a|b|c)`, each escaped."""
    return "(" + "|".join(re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\\\1", v) for v in sorted(values)) + ")"


def substitute(expr: str, values: dict[str, str]) -> str:
    for name in sorted(values, key=len, reverse=True):  # $adapter before $a
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    assert "$" not in expr.replace("$labels", "").replace("$value", ""), expr
    return expr


def tool(name: str) -> str:
    """A Prometheus binary on PATH, or a failure that says where it comes from."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: scripts/install.sh installs Debian's `prometheus` package "
                    "(it brings promtool); run `make install`, or put both binaries on PATH")
    return path
