"""`loramux keys`: tenant API keys for `loramux serve --keys FILE`.

`create` prints the new key once on stdout (one line, nothing else, so `KEY=$(loramux keys
create ...)` works) and stores only its hash and grants; `list` shows ids, tenants and grants,
never keys; `revoke` takes a key id. A running server picks changes up within seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from loramux.adapters.cli_errors import Typer

app = Typer(help="Tenant API keys: create, list, revoke.")
KeysOpt = Annotated[Path, typer.Option("--keys", envvar="LORAMUX_KEYS",
                                       help="The keys file `loramux serve --keys` reads. [env: LORAMUX_KEYS]")]


@app.command()
def create(
    keys: KeysOpt,
    tenant: Annotated[str, typer.Option(help="The tenant the key belongs to.")],
    adapters: Annotated[list[str] | None, typer.Option(
        help="Adapters the key may use, as TENANT/NAME patterns (`acme/*`, `acme/support`); repeatable. "
             "Default: the tenant's own, TENANT/*.")] = None,
    no_base: Annotated[bool, typer.Option("--no-base", help="The key may not ask for the base model itself.")] = False,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens (prompt + completion) per minute.")] = None,
    max_inflight: Annotated[int | None, typer.Option(help="Requests running at once.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="The key may call the admin endpoints.")] = False,
) -> None:
    """Create a key; prints it once (it is not stored)."""
    from loramux.server.keys import create_key

    key, _ = create_key(keys, tenant, adapters=adapters, base=not no_base, rpm=rpm, tpm=tpm,
                        max_inflight=max_inflight, admin=admin)
    typer.echo(key)


@app.command("list")
def list_(keys: KeysOpt) -> None:
    """Key ids, tenants and grants (never the keys)."""
    from loramux.server.keys import KeysFile

    table = Table()
    for column in ("id", "tenant", "adapters", "base", "rpm", "tpm", "in-flight", "admin", "created", "revoked"):
        table.add_column(column)
    for r in KeysFile.read(keys).keys:
        table.add_row(r.id, r.tenant, " ".join(r.adapters), "yes" if r.base else "no",
                      *(str(v) if v else "-" for v in (r.rpm, r.tpm, r.max_inflight)), "yes" if r.admin else "",
                      f"{r.created_at:%Y-%m-%d %H:%M}", f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "")
    Console(width=None if sys.stdout.isatty() else 160).print(table)  # piped: ids and grants unfolded


@app.command()
def revoke(keys: KeysOpt, key_id: Annotated[str, typer.Argument(help="The id `list` shows.")]) -> None:
    """Revoke a key: a running server refuses it within seconds."""
    from loramux.server.keys import revoke_key

    record = revoke_key(keys, key_id)
    Console(stderr=True).print(f"revoked {record.id} ({record.tenant})", highlight=False)
