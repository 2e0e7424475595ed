"""deploy/k8s: every kustomization renders with kustomize, every object it renders is valid
(Kubernetes' schemas for core kinds, tests/deploy/kube.py's shapes for the CRDs), and the pieces
refer to each other: probes on /health at the served port, Service -> pods, ServiceMonitor ->
Service, InferencePool -> pods and its endpoint picker, settings a loramux server reads."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from loramux.adapters.settings import StoreSettings
from loramux.server.settings import ServerSettings
from tests.deploy.kube import CRD_SHAPES, render, validate

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ["base", "overlays/gpu", "overlays/pvc", "overlays/llm-d"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {k: render(K8S / k) for k in KUSTOMIZATIONS}


def _one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _server(objs: list[dict]) -> dict:
    return _one(objs, "Deployment", "loramux")


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_rendered_object_is_valid(rendered, kustomization: str):
    problems = [p for obj in rendered[kustomization] for p in validate(obj)]
    assert problems == []


def test_validation_catches_what_a_cluster_would_refuse(rendered):
    deployment = copy.deepcopy(_server(rendered["base"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/health"
    pool = copy.deepcopy(_one(rendered["overlays/llm-d"], "InferencePool"))
    pool["spec"]["targetPortNumber"] = 8000  # the v1alpha2 spelling, gone in v1
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert "'paht' was unexpected" in " ".join(validate(deployment))
    assert "targetPortNumber" in " ".join(validate(pool))
    assert "no shape in CRD_SHAPES" in " ".join(validate(unknown))


def test_only_the_known_custom_resources_are_used(rendered):
    custom = {(o["apiVersion"], o["kind"]) for objs in rendered.values() for o in objs
              if "." in o["apiVersion"].split("/")[0] and not o["apiVersion"].startswith(("apps/", "rbac."))}
    assert custom == set(CRD_SHAPES)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_server_is_probed_on_health_at_the_port_it_serves(rendered, kustomization: str):
    objs = rendered[kustomization]
    pod = _server(objs)["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["LORAMUX_PORT"]) == port["http"] and env["LORAMUX_HOST"] == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    service = _one(objs, "Service", "loramux")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    monitor = _one(objs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_settings_are_ones_loramux_reads_and_every_reference_resolves(rendered, kustomization: str):
    objs = rendered[kustomization]
    spec = _server(objs)["spec"]["template"]["spec"]
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    refs = [("ConfigMap", s["configMapRef"]["name"]) for c in spec["containers"] for s in c["envFrom"]
            if "configMapRef" in s]
    refs += [("Secret", v["secret"]["secretName"]) for v in spec["volumes"] if "secret" in v]
    refs += [("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) for v in spec["volumes"]
             if "persistentVolumeClaim" in v]
    assert set(refs) <= names
    config = _one(objs, "ConfigMap", refs[0][1])["data"]
    known = {f"LORAMUX_{f.upper()}" for f in (*ServerSettings.model_fields, *StoreSettings.model_fields)}
    assert {k for k in config if k.startswith("LORAMUX_")} <= known  # a misspelt variable is ignored silently
    ServerSettings(**{k.removeprefix("LORAMUX_").lower(): v for k, v in config.items()
                      if k.removeprefix("LORAMUX_").lower() in ServerSettings.model_fields})
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert Path(config["LORAMUX_KEYS"]).parent == Path(mounts["keys"])
    if not config["LORAMUX_REGISTRY"].startswith("s3://"):
        assert config["LORAMUX_REGISTRY"] in mounts.values()


def test_the_keys_secret_is_a_keys_file(rendered):
    from loramux.server.keys import KeysFile

    KeysFile.model_validate_json((K8S / "base" / "keys.json").read_text())
    secret = next(o for o in rendered["base"] if o["kind"] == "Secret")
    assert set(secret["data"]) == {"keys.json"}


def test_gpu_overlay_runs_the_cuda_image_on_a_gpu(rendered):
    (container,) = _server(rendered["overlays/gpu"])["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "loramux:gpu" and container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (ROOT / "deploy" / "docker" / "Dockerfile.gpu").is_file()


def test_llm_d_pool_selects_the_servers_and_its_picker(rendered):
    objs = rendered["overlays/llm-d"]
    pool = _one(objs, "InferencePool")["spec"]
    server = _server(objs)
    assert server["spec"]["replicas"] > 1
    assert pool["selector"]["matchLabels"].items() <= server["spec"]["template"]["metadata"]["labels"].items()
    epp_pod = _one(objs, "Deployment", "loramux-epp")["spec"]["template"]["metadata"]["labels"]
    assert not pool["selector"]["matchLabels"].items() <= epp_pod.items()
    ports = {p["containerPort"] for p in server["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["number"] for p in pool["targetPorts"]} <= ports
    picker = _one(objs, "Service", pool["endpointPickerRef"]["name"])
    assert pool["endpointPickerRef"]["port"]["number"] in {p["port"] for p in picker["spec"]["ports"]}
    (epp_config,) = [o for o in objs if o["metadata"]["name"].startswith("loramux-epp-config")]
    config = yaml.safe_load(epp_config["data"]["epp-config.yaml"])
    scored = {p["pluginRef"] for p in config["schedulingProfiles"][0]["plugins"]}
    assert "lora-affinity-scorer" in scored and scored <= {p["type"] for p in config["plugins"]}
    for objective in (o for o in objs if o["kind"] == "InferenceObjective"):
        assert objective["spec"]["poolRef"]["name"] == _one(objs, "InferencePool")["metadata"]["name"]


def _dashboards_listed(kustomization: Path) -> list[str]:
    (generator,) = yaml.safe_load(kustomization.read_text())["configMapGenerator"]
    return generator.get("files") or []


def test_dashboards_generator_lists_every_dashboard():
    listed = _dashboards_listed(K8S / "dashboards" / "kustomization.yaml")
    present = sorted(f"../../grafana/dashboards/{p.name}" for p in (ROOT / "deploy/grafana/dashboards").glob("*.json"))
    assert sorted(listed) == present, f"deploy/k8s/dashboards/kustomization.yaml: set `files:` to {present}"


def test_dashboards_render_into_one_configmap_grafana_loads(tmp_path: Path):
    """In a copy with a placeholder dashboard: the generator reads files outside its folder."""
    deploy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy" / "k8s", deploy / "k8s")
    (deploy / "grafana" / "dashboards").mkdir(parents=True)
    (deploy / "grafana" / "dashboards" / "placeholder.json").write_text('{"title": "placeholder", "panels": []}')
    kustomization = deploy / "k8s" / "dashboards" / "kustomization.yaml"
    doc = yaml.safe_load(kustomization.read_text())
    doc["configMapGenerator"][0]["files"] = ["../../grafana/dashboards/placeholder.json"]
    kustomization.write_text(yaml.safe_dump(doc))
    (configmap,) = render(kustomization.parent, anywhere=True)
    assert validate(configmap) == []
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert yaml.safe_load(configmap["data"]["placeholder.json"])["title"] == "placeholder"
