"""`import loramux.adapters` stays light; `open_store` picks the backend from the URL."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loramux.adapters.errors import InvalidRequest
from loramux.adapters.store import LocalStore, open_store


def test_importing_the_registry_pulls_in_no_heavy_library():
    code = ("import sys, loramux.adapters.registry, loramux.adapters.store, loramux.adapters.validation;"
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'boto3', 'vllm', 'safetensors')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_open_store_picks_the_backend(tmp_path):
    from loramux.adapters.store.s3 import S3Store

    assert isinstance(open_store(tmp_path / "a"), LocalStore)
    assert open_store(f"file://{tmp_path}/b").root == tmp_path / "b"
    s3 = open_store("s3://bucket/some/prefix", cache_dir=tmp_path / "cache", endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.root) == ("bucket", "some/prefix/", tmp_path / "cache")


@pytest.mark.parametrize("url", ["ftp://host/x", "s3:///no-bucket"])
def test_open_store_refuses_what_it_cannot_open(url):
    with pytest.raises(InvalidRequest) as err:
        open_store(url)
    assert err.value.param == "store"
