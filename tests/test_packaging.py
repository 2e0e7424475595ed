"""The distribution: every sub-package ships, the arrows hold, vLLM stays behind the engine seam."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"server": "loramux.server", "adapters": "loramux.adapters", "trainer": "loramux.trainer",
           "cli": "loramux.cli"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_every_folder_with_an_init_is_a_listed_package():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {FOLDERS[init.relative_to(ROOT).parts[0]] + "".join(f".{p}" for p in init.parent.relative_to(
        ROOT / init.relative_to(ROOT).parts[0]).parts) for f in FOLDERS for init in (ROOT / f).rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_arrows_go_trainer_to_adapters_from_server():
    forbidden = {"adapters": ("loramux.server", "loramux.trainer", "loramux.cli"),
                 "trainer": ("loramux.server", "loramux.cli"), "server": ("loramux.trainer", "loramux.cli")}
    bad = [(str(py.relative_to(ROOT)), name) for folder, banned in forbidden.items()
           for py in (ROOT / folder).rglob("*.py") for name in _imports(py) if name.startswith(banned)]
    assert not bad


def test_only_the_engine_seam_imports_vllm():
    bad = [str(py.relative_to(ROOT)) for f in FOLDERS for py in (ROOT / f).rglob("*.py")
           if any(n == "vllm" or n.startswith("vllm.") for n in _imports(py))
           and py.parent != ROOT / "server" / "engine"]
    assert not bad


# The server's layers, lowest first. A module imports only from layers below its own, so the
# engine knows no catalog, the catalog no HTTP, and shaping no generation.
SERVER_LAYERS = [{"settings", "openai_protocol", "engine", "keys", "asgi_call", "__init__"},
                 {"context", "responses", "residency", "admission", "quotas", "fairness", "slots"},
                 {"residency_control", "tool_calls", "cluster_book"}, {"catalog", "generation", "metrics", "errors"},
                 {"middleware", "routers"}, {"app", "engine_factory"}, {"ray_serve"}, {"cli"}]


def _server_units(py: Path) -> set[str]:
    """The server units (top-level module or sub-package name) that `py` imports."""
    here = py.relative_to(ROOT / "server").parts
    units = set()
    for node in ast.walk(ast.parse(py.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            target = [*here[:-1][:len(here) - node.level], *(node.module or "").split(".")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("loramux.server."):
            target = node.module.split(".")[2:]
        else:
            continue
        if target and target[0]:
            units.add(target[0])
    return units


def test_server_imports_go_one_way():
    layer = {unit: i for i, units in enumerate(SERVER_LAYERS) for unit in units}
    bad = []
    for py in (ROOT / "server").rglob("*.py"):
        unit = py.relative_to(ROOT / "server").parts[0].removesuffix(".py")
        assert unit in layer, f"put server/{unit} in a layer of SERVER_LAYERS"
        bad += [f"{py.relative_to(ROOT)} imports {u}" for u in _server_units(py) - {unit} if layer[u] >= layer[unit]]
    assert not bad, bad


def test_trainer_asks_the_method_record_not_the_name():
    """`cfg.method == "qlora"` and friends live only in trainer/methods.py's records."""
    names = {"lora", "qlora", "full"}
    bad = []
    for py in (ROOT / "trainer").rglob("*.py"):
        if py.name == "methods.py":
            continue
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                on_method = any(isinstance(x, ast.Attribute) and x.attr == "method" or
                                isinstance(x, ast.Name) and x.id == "method" for x in sides)
                if on_method and any(isinstance(x, ast.Constant) and x.value in names for x in sides):
                    bad.append(f"{py.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad
