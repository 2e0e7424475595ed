"""`loramux serve --adapter` parsing: explicit paths, and names resolved in the registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.errors import NotFound
from loramux.adapters.registry import publish
from loramux.adapters.store import open_store
from loramux.server.cli import _parse_adapters
from tests.lora_factory import random_lora


def test_registry_names_resolve_to_the_published_version(tiny_base: Path, tmp_path: Path):
    store_dir = tmp_path / "registry"
    adapter = random_lora(tiny_base, tmp_path / "a", seed=5)
    published = publish(open_store(str(store_dir)), adapter, tenant="acme", name="support",
                        base=BaseSpec.from_dir(tiny_base), aliases=("prod",))
    explicit = tmp_path / "elsewhere"
    got = _parse_adapters(["acme/support", f"globex/x={explicit}"], str(store_dir))
    assert got["globex/x"] == explicit
    resolved = got["acme/support"]
    assert resolved.is_relative_to(store_dir.resolve()) and (resolved / "adapter_config.json").is_file()
    assert published.manifest.version in str(resolved)
    with pytest.raises(NotFound):
        _parse_adapters(["acme/unknown"], str(store_dir))


def test_bare_names_need_a_registry():
    with pytest.raises(typer.BadParameter, match="NAME=PATH"):
        _parse_adapters(["acme/support"], None)
