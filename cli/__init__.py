"""`loramux`: the one command, with a group per job.

    loramux serve ...        the base and its adapters behind the OpenAI API  (server/cli.py)
    loramux adapters ...     the registry: publish, list, show, alias, ...    (adapters/cli.py)
    loramux trainer ...      train, add-tenant, merge, plan, compare, demo    (trainer/cli.py; also `trainer`)
    loramux keys ...         tenant API keys: create, list, revoke             (cli/keys.py)
    loramux base ...         get a known base (tiny, smollm2), import a GGUF   (cli/base.py; build-tiny = get tiny)

Each group lives with the package it drives and is imported only when named, so `loramux --help`
loads neither the registry nor torch. Every group's commands go through the one error printer
(`loramux.adapters.cli_errors`). This package sits above the other three; none of them imports it.
"""

from __future__ import annotations

import importlib

import click
import typer
from typer.core import TyperGroup

import loramux.adapters.logs  # noqa: F401  first, as vLLM's spawned children re-import this script: quiet there too
from loramux.adapters.cli_errors import Typer

# name -> (module whose `app` is the group, its line in `loramux --help`)
GROUPS: dict[str, tuple[str, str]] = {
    "serve": ("loramux.server.cli", "Serve a base and its adapters through vLLM behind the OpenAI API."),
    "adapters": ("loramux.adapters.cli", "The adapter registry: publish, list, show, alias, rollback, rm, validate."),
    "trainer": ("loramux.trainer.cli", "Train, gate and publish adapters: train, add-tenant, merge, plan, compare, "
                                       "demo, demo-data."),
    "keys": ("loramux.cli.keys", "Tenant API keys for `serve --keys`: create, list, revoke."),
    "base": ("loramux.cli.base", "Base models: get (tiny, smollm2), import FILE.gguf, build-tiny."),
}
SINGLE = {"serve"}  # groups of one in their module: mounted as the command itself
COMPLETION = {"install_completion", "show_completion"}


class LazyGroup(TyperGroup):
    """Imports a group's module when the group is named; the help lists GROUPS without importing."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(GROUPS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in GROUPS:
            return None
        command = typer.main.get_command(importlib.import_module(GROUPS[name][0]).app)
        if name in SINGLE:
            return command.commands[name]
        command.params = [p for p in command.params if p.name not in COMPLETION]  # the root has them
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, text) in GROUPS.items()])


app = Typer(cls=LazyGroup, help="loramux: one base model, many tenants' LoRA adapters.")


@app.callback()
def _loramux() -> None:
    """The umbrella: a callback, so typer builds a group whose commands LazyGroup supplies."""


def main() -> None:
    app()
