"""The one CLI error printer, shared by every `loramux` command group (serve, adapters, trainer, base).

A user's mistake is one line on stderr, never a traceback: a LoramuxError prints `error: MESSAGE`
and exits 2, and so does an OSError (a missing file, an unwritable folder). Anything else is our
bug: one line naming its type, exit 1. `LORAMUX_DEBUG=1` re-raises all but LoramuxError, for the
developer who wants the traceback. It lives here, in the package every other imports, so each
group uses it without importing the umbrella CLI (`loramux.cli`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.exceptions import TyperException

from .errors import LoramuxError

err = Console(stderr=True)


def print_error(message: str) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)  # the terminal wraps


def cli_errors(fn: Callable) -> Callable:
    """Run `fn`, turning every error into one printed line and an exit code (see the module)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, typer.Exit, TyperException):
            raise  # typer's own exits and usage errors (bad flag values; typer vendors click) print themselves
        except LoramuxError as e:
            print_error(e.message)
            raise typer.Exit(2) from None
        except Exception as e:
            if os.environ.get("LORAMUX_DEBUG"):
                raise
            if isinstance(e, OSError):
                print_error(str(e))
                raise typer.Exit(2) from None
            print_error(f"unexpected {type(e).__name__}: {e} (LORAMUX_DEBUG=1 shows the traceback)")
            raise typer.Exit(1) from None
    return wrapper


class Typer(typer.Typer):
    """`typer.Typer` with loramux's defaults, whose every command and callback goes through
    `cli_errors`, so no group can forget the printer."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"no_args_is_help": True, "pretty_exceptions_enable": False,
                            "rich_markup_mode": None, **kwargs})

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
        return _guarded(super().command(*args, **kwargs))

    def callback(self, *args: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
        return _guarded(super().callback(*args, **kwargs))


def _guarded(register: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """A typer decorator that registers `cli_errors(fn)` and hands back `fn` itself (callable in tests)."""
    def decorator(fn: Callable) -> Callable:
        register(cli_errors(fn))
        return fn
    return decorator
