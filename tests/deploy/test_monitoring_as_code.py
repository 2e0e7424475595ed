"""The dashboards and rules are generated, current, and valid: regenerating them changes
nothing, every panel query parses as PromQL, and promtool's unit tests show each alert fires on
what should page and stays quiet otherwise. (tests/integration/test_dashboards_prometheus.py
runs every query against a real Prometheus scraping a real server.)"""

from __future__ import annotations

import subprocess

import yaml

from deploy.grafana import dashboards as gen_dashboards
from deploy.prometheus import rules as gen_rules
from tests.deploy.dashboard_queries import (DASHBOARDS, RULES, load_dashboards, multi_value, panels,
                                            query_variables, substitute, targets, tool)

VALUES = {"__rate_interval": "1m", "tenant": multi_value(["acme", "globex"]),
          "adapter": multi_value(["acme/support", "globex/sales"])}


def test_regenerating_the_dashboards_and_rules_changes_nothing():
    made = {stem: gen_dashboards.render(d) for stem, d in gen_dashboards.dashboards().items()}
    assert {p.stem: p.read_text() for p in DASHBOARDS.glob("*.json")} == made, \
        "stale: run `python -m deploy.grafana.dashboards` and commit the JSON"
    assert RULES.read_text() == gen_rules.render(), "stale: run `python -m deploy.prometheus.rules`"


def test_dashboards_pick_their_data_source_and_filter_by_tenant_and_adapter():
    boards = load_dashboards()
    assert set(boards) == {"overview", "tenants", "adapters"}
    for stem, board in boards.items():
        text = (DASHBOARDS / f"{stem}.json").read_text()
        assert "${DS_" not in text and "__inputs" not in board  # imports without a data source prompt
        names = [v["name"] for v in board["templating"]["list"]]
        assert names[0] == "datasource"
        for panel in panels(board):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"] and all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids)
    for stem in ("tenants", "adapters"):
        assert [name for name, _, _ in query_variables(boards[stem])] == ["tenant", "adapter"]
        exprs = [expr for _, expr, _ in targets(boards[stem])]
        assert sum("$tenant" in e or "$adapter" in e for e in exprs) >= len(exprs) - 2, stem


def test_every_panel_query_parses(tmp_path):
    """promtool parses each query (variables replaced as Grafana does) as a recording rule's expression."""
    exprs = [substitute(expr, VALUES) for board in load_dashboards().values() for _, expr, _ in targets(board)]
    exprs += [substitute(selector, VALUES) for board in load_dashboards().values()
              for _, selector, _ in query_variables(board)]
    rules = {"groups": [{"name": "panels", "rules": [{"record": f"panel_query_{i}", "expr": e}
                                                     for i, e in enumerate(exprs)]}]}
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    out = subprocess.run([tool("promtool"), "check", "rules", str(tmp_path / "panels.yml")], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_check_and_the_alerts_unit_tests_pass():
    check = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(gen_rules.RECORDING) + len(gen_rules.ALERTS)} rules found" in check.stdout
    unit = subprocess.run([tool("promtool"), "test", "rules", str(RULES.with_name("rules_test.yml"))],
                          capture_output=True, text=True)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    tested = yaml.safe_load(RULES.with_name("rules_test.yml").read_text())
    fired = {t["alertname"] for case in tested["tests"] for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert fired == {a.name for a in gen_rules.ALERTS}  # every alert has a test in which it fires
