"""Schemathesis against a real server (vLLM engine): every phase and check of `st run`, with
`model` drawn from the served names so requests reach the engine. Zero server errors and zero
conformance failures.

The fuzz holds the admin key, so it unloads, pins and reloads adapters: it gets a server of its
own rather than the session's, whose residency other tests assert on.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import schemathesis

from tests.integration.conftest import running_server
from tests.lora_factory import distinct_loras
from tests.schema_fuzz import Served, config, fuzz

pytestmark = pytest.mark.integration
ADMIN_KEY = "fuzz-admin-key"
ADAPTERS = ("acme/support", "globex/sales")


def test_schemathesis_against_the_real_engine(tiny_base: Path, tmp_path: Path):
    adapters = distinct_loras(tiny_base, tmp_path / "adapters", ADAPTERS)
    args = ["--base", str(tiny_base), "--served-name", "tiny", "--dtype", "float32", "--max-loras", "2",
            "--admin-key", ADMIN_KEY, "--admin-path", str(tmp_path / "adapters")]
    for name, path in adapters.items():
        args += ["--adapter", f"{name}={path}"]
    vocab = json.loads((tiny_base / "config.json").read_text())["vocab_size"]
    with running_server(args, tmp_path / "server.log") as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config(
            max_examples=10, headers={"Authorization": f"Bearer {ADMIN_KEY}"}))
        started = time.monotonic()
        report = fuzz(schema, Served(["tiny", *ADAPTERS], vocab, max_tokens=4))
        print(f"\nschemathesis (vLLM engine): {report.cases} cases in {time.monotonic() - started:.1f}s",
              file=sys.stderr)
    assert report.cases > 300
    assert not report.errors, report.errors
    assert not report.failures, "\n".join(report.failures) + "\n" + (tmp_path / "server.log").read_text()[-4000:]
