"""`loramux base`: base models. `build-tiny` writes the offline tiny Llama base that tests and the
demo use (no model hub); the builder lives with the trainer (`loramux.trainer.tiny_base`), which
owns torch and transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from loramux.adapters.cli_errors import Typer
from loramux.adapters.logs import configure_logging

app = Typer(help="Base models.")
err = Console(stderr=True)


@app.callback()
def _base() -> None:
    """A group (of one command today), so the command reads `loramux base build-tiny`."""


@app.command("build-tiny")
def build_tiny(
    out: Annotated[Path, typer.Option(help="Directory to write the model to.")],
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical files.")] = 0,
    steps: Annotated[int, typer.Option(help="Pretraining steps on the generated corpus.")] = 120,
) -> None:
    """Build the tiny offline Llama base and its BPE tokenizer (no network)."""
    configure_logging()
    from loramux.trainer.tiny_base import build_tiny as build

    with err.status("building the tiny base (tokenizer, init, short pretraining)..."):
        path = build(out, seed=seed, steps=steps)
    typer.echo(str(path))
