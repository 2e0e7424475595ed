"""`loramux adapters ...`: the registry from the shell (publish, list, show, alias, delete, validate).

Each command is a thin wrapper over the registry API; a LoramuxError prints its message
and exits 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.errors import InvalidRequest, LoramuxError
from loramux.adapters.manifest import Method
from loramux.adapters.names import AdapterRef
from loramux.adapters.registry import Resolver, publish
from loramux.adapters.settings import StoreSettings
from loramux.adapters.store import AdapterStore
from loramux.adapters.validation import validate_adapter

app = typer.Typer(help="The adapter registry: publish, list, alias, delete.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
out, err = Console(), Console(stderr=True)

StoreOpt = Annotated[str | None, typer.Option(
    "--store", help="Store URL: a folder or s3://BUCKET/PREFIX. [env: LORAMUX_STORE]", show_default=False)]
BaseOpt = Annotated[Path, typer.Option("--base", help="Base model folder the adapter was trained on.")]
MaxRankOpt = Annotated[int | None, typer.Option(help="Refuse ranks above this (the server's cap).")]


def _store(url: str | None) -> AdapterStore:
    return (StoreSettings(store=url) if url else StoreSettings()).open()


def cli_errors(fn: Callable) -> Callable:
    """Print a LoramuxError's message and exit 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LoramuxError as e:
            err.print(f"[red]error:[/red] {escape(e.message)}", highlight=False)
            raise typer.Exit(2) from None
    return wrapper


def _pairs(values: list[str], param: str) -> dict[str, float]:
    """`KEY=NUMBER` options as a dict; every malformed one named in a single error."""
    scores, bad = {}, []
    for v in values:
        key, _, num = v.partition("=")
        try:
            scores[key or None] = float(num)
        except ValueError:
            bad.append(v)
    if bad or None in scores:
        raise InvalidRequest(f"--{param}: expected KEY=NUMBER, got {', '.join(map(repr, bad or values))}",
                             param=param)
    return scores


@app.command("publish")
@cli_errors
def publish_cmd(
    path: Annotated[Path, typer.Argument(help="Adapter folder (adapter_config.json + adapter_model.safetensors).")],
    name: Annotated[str, typer.Argument(help="TENANT/ADAPTER to publish under.")],
    base: BaseOpt,
    base_id: Annotated[str | None, typer.Option(help="Served id of the base; defaults to its folder name.")] = None,
    method: Annotated[str, typer.Option(help="lora | qlora")] = "lora",
    data_hash: Annotated[str | None, typer.Option(help="Hash of the training data.")] = None,
    score: Annotated[list[str], typer.Option(help="Eval score KEY=NUMBER, repeatable.")] = [],
    alias: Annotated[list[str], typer.Option(help="Alias to point at the new version (e.g. prod), repeatable.")] = [],
    max_rank: MaxRankOpt = None,
    store: StoreOpt = None,
) -> None:
    """Validate an adapter and publish it as an immutable version."""
    ref = AdapterRef.parse(name)
    if method not in get_args(Method):
        raise InvalidRequest(f"--method must be one of {', '.join(get_args(Method))}, not {method!r}",
                             param="method")
    if ref.selector:
        raise InvalidRequest(f"publish under TENANT/ADAPTER, without @: {name!r}", param="name")
    done = publish(_store(store), path, tenant=ref.tenant, name=ref.name, base=BaseSpec.from_dir(base, base_id),
                   method=method, data_hash=data_hash, eval_scores=_pairs(score, "score"),
                   aliases=tuple(alias), max_rank=max_rank)
    for w in done.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(w.message)}", highlight=False)
    suffix = f" (aliases: {', '.join(alias)})" if alias else ""
    out.print(f"published {done.manifest.served_name}{suffix}", highlight=False)


@app.command("list")
@cli_errors
def list_cmd(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's adapters.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON manifest per line.")] = False,
    store: StoreOpt = None,
) -> None:
    """Every published version, with the aliases that point at it."""
    s = _store(store)
    manifests = s.list(tenant)
    if as_json:
        for m in manifests:
            print(m.model_dump_json())
        return
    aliases: dict[str, dict[str, str]] = {}
    table = Table()
    for col in ("adapter", "version", "aliases"):
        table.add_column(col, no_wrap=True)
    for col in ("method", "rank", "base", "created", "eval"):
        table.add_column(col)
    for m in manifests:
        key = f"{m.tenant}/{m.name}"
        if key not in aliases:
            aliases[key] = s.aliases(key)
        names = ", ".join(a for a, v in aliases[key].items() if v == m.version)
        evals = ", ".join(f"{k}={v:g}" for k, v in m.eval_scores.items())
        table.add_row(key, m.short_version, names, m.method, str(m.rank), m.base_model,
                      m.created_at.strftime("%Y-%m-%d %H:%M"), evals)
    out.print(table)


@app.command("show")
@cli_errors
def show_cmd(model: Annotated[str, typer.Argument(help="TENANT/ADAPTER[@VERSION|@ALIAS]")],
             store: StoreOpt = None) -> None:
    """The manifest a name resolves to, its aliases, and its local path."""
    s = _store(store)
    resolved = Resolver(s).resolve(model)
    doc = {**json.loads(resolved.manifest.model_dump_json()), "aliases": s.aliases(model),
           "path": str(resolved.path)}
    print(json.dumps(doc, indent=2))


@app.command("resolve")
@cli_errors
def resolve_cmd(model: Annotated[str, typer.Argument(help="TENANT/ADAPTER[@VERSION|@ALIAS]")],
                store: StoreOpt = None) -> None:
    """Print the local folder a name resolves to (for scripts)."""
    print(Resolver(_store(store)).resolve(model).path)


@app.command("alias")
@cli_errors
def alias_cmd(model: Annotated[str, typer.Argument(help="Version to point at: TENANT/ADAPTER@VERSION or @ALIAS.")],
              alias: Annotated[str, typer.Argument(help="Alias to set, e.g. prod or canary.")],
              store: StoreOpt = None) -> None:
    """Point an alias at a version (`alias acme/support@canary prod` promotes canary)."""
    manifest = _store(store).set_alias(model, alias)
    out.print(f"{manifest.tenant}/{manifest.name}@{alias} -> {manifest.short_version}", highlight=False)


@app.command("unalias")
@cli_errors
def unalias_cmd(name: Annotated[str, typer.Argument(help="TENANT/ADAPTER")],
                alias: Annotated[str, typer.Argument(help="Alias to remove.")],
                store: StoreOpt = None) -> None:
    """Remove an alias (the version stays)."""
    _store(store).remove_alias(name, alias)
    out.print(f"removed {AdapterRef.parse(name).key}@{alias}", highlight=False)


@app.command("delete")
@cli_errors
def delete_cmd(model: Annotated[str, typer.Argument(help="TENANT/ADAPTER@VERSION")],
               store: StoreOpt = None) -> None:
    """Delete one version; refused while an alias points at it."""
    _store(store).delete(model)
    out.print(f"deleted {model}", highlight=False)


@app.command("validate")
@cli_errors
def validate_cmd(path: Annotated[Path, typer.Argument(help="Adapter folder.")],
                 base: Annotated[Path | None, typer.Option(help="Base model folder to check against.")] = None,
                 max_rank: MaxRankOpt = None) -> None:
    """Report every problem that would stop the adapter from being served (exit 1 if any)."""
    report = validate_adapter(path, base=BaseSpec.from_dir(base) if base else None, max_rank=max_rank)
    for p in report.problems:
        colour = "red" if p.severity == "error" else "yellow"
        out.print(f"[{colour}]{p.severity}[/{colour}] {escape(f'[{p.check}] {p.message}')}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)
    out.print("ok: servable", highlight=False)
