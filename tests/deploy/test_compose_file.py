"""deploy/compose/compose.yaml: valid against the Compose Specification's JSON schema (vendored at
deploy/compose/compose-spec.json, as the npm package dclint 3.1.0 ships it; `docker compose config`
needs Docker), and wired so that `docker compose up` runs the demo: files it mounts exist, the
server writes to the bucket SeaweedFS makes with the credentials SeaweedFS accepts, Prometheus
scrapes the server and Grafana reads that Prometheus."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
# mounted from the dashboards work (deploy/grafana, deploy/prometheus); a missing folder is made empty
LANDS_LATER = {"../grafana/dashboards", "../prometheus"}


def _compose() -> dict:
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())


def _problems(doc: dict) -> list[str]:
    schema = json.loads((COMPOSE / "compose-spec.json").read_text())
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]


def test_compose_file_follows_the_compose_specification():
    assert _problems(_compose()) == []


@pytest.mark.parametrize("break_it, where", [
    (lambda d: d["services"]["loramux"].update(helthcheck={}), "services/loramux"),
    (lambda d: d["services"]["seaweedfs"].update(ports=8333), "services/seaweedfs/ports"),
    (lambda d: d["services"]["bucket"]["depends_on"]["seaweedfs"].update(condition="started"),
     "services/bucket/depends_on"),
])
def test_the_schema_check_catches_a_broken_file(break_it, where: str):
    doc = _compose()
    break_it(doc)
    assert any(p.startswith(where) for p in _problems(doc)), _problems(doc)


def test_what_the_services_mount_and_build_exists():
    doc = _compose()
    build = doc["services"]["loramux"]["build"]
    assert (COMPOSE / build["context"] / build["dockerfile"]).is_file()
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists() or source in LANDS_LATER, f"{name} mounts {source}"


def test_the_server_reaches_the_bucket_seaweedfs_makes_with_credentials_it_accepts():
    services = _compose()["services"]
    env = services["loramux"]["environment"]
    identities = json.loads((COMPOSE / "seaweedfs-s3.json").read_text())["identities"]
    keys = {(c["accessKey"], c["secretKey"]) for i in identities for c in i["credentials"] if "Write" in i["actions"]}
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) in keys
    bucket = env["REGISTRY"].removeprefix("s3://").split("/")[0]
    assert f"s3.bucket.create -name {bucket}'" in " ".join(services["bucket"]["entrypoint"])
    assert env["LORAMUX_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
    assert "-s3.port=8333" in services["seaweedfs"]["command"]
    assert services["loramux"]["depends_on"]["bucket"]["condition"] == "service_completed_successfully"


def test_prometheus_scrapes_the_server_and_grafana_reads_prometheus():
    services = _compose()["services"]
    scrape = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())["scrape_configs"]
    targets = {t for job in scrape for sc in job["static_configs"] for t in sc["targets"]}
    port = services["loramux"]["environment"]["PORT"]
    assert f"loramux:{port}" in targets and scrape[0]["metrics_path"] == "/metrics"
    rules = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())["rule_files"]
    prometheus_mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    # deploy/prometheus/rules.yml, and not rules_test.yml beside it (promtool's tests, no rule file)
    assert rules == [str(Path(prometheus_mounts["../prometheus"]) / "rules.yml")]
    assert (COMPOSE.parent / "prometheus" / "rules.yml").is_file()
    sources = yaml.safe_load((COMPOSE / "grafana-provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert [s["url"] for s in sources] == ["http://prometheus:9090"]
    (provider,) = yaml.safe_load((COMPOSE / "grafana-provisioning/dashboards/loramux.yml").read_text())["providers"]
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert mounts["../grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana-provisioning"] == "/etc/grafana/provisioning"
