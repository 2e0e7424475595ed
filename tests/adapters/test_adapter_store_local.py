"""LocalStore specifics: other processes never see a half-written version."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from loramux.adapters.manifest import Manifest
from loramux.adapters.store.local import STALE_STAGING_S, LocalStore
from loramux.adapters.registry import Resolver

READER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from loramux.adapters.errors import NotFound
    from loramux.adapters.manifest import content_hash
    from loramux.adapters.registry import Resolver
    from loramux.adapters.store.local import LocalStore

    store, stop = LocalStore(sys.argv[1]), Path(sys.argv[2])
    seen, bad, last = set(), [], False
    print("ready", flush=True)
    while not last:
        last = stop.exists()  # one full pass after the writer is done
        for m in store.list():
            if content_hash(Resolver(store).resolve(m.ref).path) != m.version:
                bad.append(m.version)
            seen.add(m.version)
        try:
            p = Resolver(store).resolve("acme/support").path
            if content_hash(p) != p.name:
                bad.append(p.name)
        except NotFound:
            pass
    print(len(seen), len(bad), flush=True)
""")


def test_a_reader_process_sees_whole_versions_or_none(tmp_path, adapter_dir, manifest_for, variant):
    store, stop = LocalStore(tmp_path / "store"), tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(store.root), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "ready"
    for i in range(8):
        src = variant(adapter_dir, tmp_path / f"v{i}", i)
        store.set_alias(store.put(src, manifest_for(src)).ref, "prod")
    stop.touch()
    out, _ = reader.communicate(timeout=120)
    seen, bad = map(int, out.split())
    assert (seen, bad) == (8, 0)


def test_crash_litter_is_invisible_and_swept(tmp_path, adapter_dir, manifest_for):
    store = LocalStore(tmp_path / "store")
    litter = store.root / ".staging" / "dead"
    litter.mkdir(parents=True)
    (litter / "adapter_config.json").write_text("{}")
    assert store.list() == []
    old = time.time() - STALE_STAGING_S - 60
    os.utime(litter, (old, old))
    store.put(adapter_dir, manifest_for(adapter_dir))
    assert not litter.exists()


def test_two_store_objects_on_one_root_agree(tmp_path, adapter_dir, manifest_for, variant):
    """A second server replica (another LocalStore on the same folder) sees alias moves at once."""
    writer, reader = LocalStore(tmp_path / "store"), LocalStore(tmp_path / "store")
    v1 = writer.put(adapter_dir, manifest_for(adapter_dir))
    writer.set_alias(v1.ref, "prod")
    assert Resolver(reader).resolve("acme/support").manifest == v1
    v2_dir = variant(adapter_dir, tmp_path / "v2", 1)
    v2 = writer.put(v2_dir, manifest_for(v2_dir))
    writer.set_alias(v2.ref, "prod")
    assert Resolver(reader).resolve("acme/support").manifest == v2


def test_published_files_are_read_only(tmp_path, adapter_dir, manifest_for):
    store = LocalStore(tmp_path / "store")
    path = Resolver(store).resolve(store.put(adapter_dir, manifest_for(adapter_dir)).ref).path
    assert all(p.stat().st_mode & 0o222 == 0 for p in path.iterdir())
    assert isinstance(Manifest.model_validate_json((path / "manifest.json").read_text()), Manifest)
