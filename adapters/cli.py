"""`loramux adapters ...`: the registry from the shell.

    publish DIR --tenant T --name N [--alias prod]     validate, then publish a version
    list [--tenant T]                                   every version, with its aliases
    show T/N[@VERSION|@ALIAS]                           one manifest, its aliases and path
    validate DIR --base BASE [--max-rank R]             every problem, with what to do about it
    alias T/N ALIAS VERSION [--canary V --weight W]     point an alias (optionally split traffic)
    rollback T/N [--alias prod]                         the alias back to its previous state
    rm T/N@VERSION                                      delete a version no alias uses

Every command takes `--registry DIR|s3://BUCKET/PREFIX` (also spelled `--store`; env
LORAMUX_STORE), prints a table by default and JSON with `--json`. Each is a thin wrapper
over the registry API; errors go through the one printer (`cli_errors.py`): a message, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loramux.adapters.aliases import AliasRecord
from loramux.adapters.base_spec import BaseSpec
from loramux.adapters.cli_errors import Typer
from loramux.adapters.errors import InvalidRequest, NotFound
from loramux.adapters.manifest import Manifest, Method
from loramux.adapters.names import DEFAULT_ALIAS, AdapterRef
from loramux.adapters.registry import Resolver, publish
from loramux.adapters.settings import StoreSettings
from loramux.adapters.store import AdapterStore
from loramux.adapters.validation import validate_adapter

app = Typer(help="The adapter registry: publish, list, show, alias, rollback, rm, validate.")
out, err = Console(), Console(stderr=True)

RegistryOpt = Annotated[str | None, typer.Option(
    "--registry", "--store", help="Registry: a folder or s3://BUCKET/PREFIX. [env: LORAMUX_STORE]",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON instead of a table.")]
MaxRankOpt = Annotated[int | None, typer.Option(help="Refuse ranks above this (the server's cap).")]


def _store(url: str | None) -> AdapterStore:
    return StoreSettings.of(url).open()


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


def _dump(doc: object) -> None:
    print(json.dumps(doc, indent=2, default=str))


def _alias_label(alias: str, record: AliasRecord, version: str) -> str:
    if version == record.canary:
        return f"{alias} (canary {record.weight:.0%})"
    return f"{alias} ({1 - record.weight:.0%})" if record.canary else alias


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, no_wrap=col in ("adapter", "version"))
    return table


@app.command("publish")
def publish_cmd(
    path: Annotated[Path, typer.Argument(help="Adapter folder (adapter_config.json + adapter_model.safetensors).")],
    model: Annotated[str | None, typer.Argument(help="TENANT/ADAPTER (or use --tenant and --name).")] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant to publish under.")] = None,
    name: Annotated[str | None, typer.Option(help="Adapter name.")] = None,
    base: Annotated[Path | None, typer.Option(envvar="LORAMUX_BASE", show_default=False,
                                              help="Base model folder it was trained on. [env: LORAMUX_BASE]")] = None,
    base_id: Annotated[str | None, typer.Option(help="Served id of the base; defaults to its folder name.")] = None,
    method: Annotated[str, typer.Option(help="lora | qlora")] = "lora",
    quant_type: Annotated[str | None, typer.Option(help="qlora: nf4 | fp4 (default nf4).")] = None,
    double_quant: Annotated[bool | None, typer.Option(help="qlora: double quantization was on.")] = None,
    compute_dtype: Annotated[str | None, typer.Option(help="qlora: compute dtype (bfloat16...).")] = None,
    data_hash: Annotated[str | None, typer.Option(help="Hash of the training data.")] = None,
    score: Annotated[list[str], typer.Option(help="Eval score KEY=NUMBER, repeatable.")] = [],
    alias: Annotated[list[str], typer.Option(help="Alias to point at the new version (e.g. prod), repeatable.")] = [],
    max_rank: MaxRankOpt = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate an adapter and publish it as an immutable version."""
    if model is not None:
        ref = AdapterRef.parse(model)
        if ref.selector:
            raise InvalidRequest(f"publish under TENANT/ADAPTER, without @: {model!r}", param="name")
        if (tenant or ref.tenant, name or ref.name) != (ref.tenant, ref.name):
            raise InvalidRequest(f"{model!r} contradicts --tenant/--name", param="name")
        tenant, name = ref.tenant, ref.name
    if not tenant or not name or base is None:
        missing = [o for o, v in (("--tenant", tenant), ("--name", name), ("--base", base)) if not v]
        raise InvalidRequest(f"publish needs {', '.join(missing)}", param="name")
    if method not in get_args(Method):
        raise InvalidRequest(f"--method must be one of {', '.join(get_args(Method))}, not {method!r}",
                             param="method")
    quant = {k: v for k, v in (("quant_type", quant_type), ("double_quant", double_quant),
                               ("compute_dtype", compute_dtype)) if v is not None}
    done = publish(_store(registry), path, tenant=tenant, name=name, base=BaseSpec.from_dir(base, base_id),
                   method=method, data_hash=data_hash, eval_scores=_pairs(score, "score"),
                   aliases=tuple(alias), max_rank=max_rank, quantization=quant or None)
    for w in done.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(str(w))}", highlight=False)
    if as_json:
        return _dump({**done.manifest.model_dump(mode="json"), "aliases": list(alias),
                      "warnings": [w.model_dump() for w in done.warnings]})
    suffix = f" (aliases: {', '.join(alias)})" if alias else ""
    out.print(f"published {done.manifest.served_name}{suffix}", highlight=False)


@app.command("list")
def list_cmd(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's adapters.")] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every published version, with the aliases that point at it."""
    s = _store(registry)
    manifests = s.list(tenant)
    records: dict[str, dict[str, AliasRecord]] = {}
    rows = []
    for m in manifests:
        key = f"{m.tenant}/{m.name}"
        if key not in records:
            records[key] = s.alias_records(key)
        rows.append((m, [_alias_label(a, r, m.version) for a, r in records[key].items()
                         if m.version in r.versions()]))
    if as_json:
        return _dump([{**m.model_dump(mode="json"), "aliases": labels} for m, labels in rows])
    table = _table("adapter", "version", "aliases", "method", "rank", "dtype", "base", "created", "eval")
    for m, labels in rows:
        evals = ", ".join(f"{k}={v:g}" for k, v in m.eval_scores.items())
        table.add_row(f"{m.tenant}/{m.name}", m.short_version, ", ".join(labels), m.method, str(m.rank),
                      m.dtype or "", m.base_model, m.created_at.strftime("%Y-%m-%d %H:%M"), evals)
    Console().print(table)  # a fresh console: honours COLUMNS when piped


def _show_doc(s: AdapterStore, model: str) -> dict:
    try:
        route = s.route(model)
    except NotFound:
        ref = AdapterRef.parse(model)
        versions = sorted((m for m in s.list(ref.tenant) if m.name == ref.name), key=lambda m: m.created_at)
        if not versions or ref.alias is None:
            raise
        listed = ", ".join(f"{m.short_version} ({m.created_at:%Y-%m-%d %H:%M})" for m in versions)
        raise NotFound(f"`{ref.key}` has no alias `{ref.alias}`; its versions: {listed}. Point it at one: "
                       f"loramux adapters alias {ref.key} {ref.alias} VERSION", param="model") from None
    records = s.alias_records(model)
    doc = {**route.primary.model_dump(mode="json"), "path": str(s.fetch(route.primary)),
           "aliases": {a: r.version for a, r in records.items()},
           "alias_records": {a: r.model_dump(mode="json") for a, r in records.items()}}
    if route.canary is not None:
        doc["canary"] = {"version": route.canary.version, "weight": route.weight, "alias": route.alias}
    return doc


@app.command("show")
def show_cmd(model: Annotated[str, typer.Argument(help="TENANT/ADAPTER[@VERSION|@ALIAS] (default @prod).")],
             registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """The manifest a name resolves to (and its canary), its aliases, and its local path."""
    doc = _show_doc(_store(registry), model)
    if as_json:
        return _dump(doc)
    m = Manifest.model_validate({k: v for k, v in doc.items() if k in Manifest.model_fields})
    table = Table(show_header=False, title=f"{m.tenant}/{m.name}@{m.short_version}")
    table.add_column(style="bold")
    table.add_column()
    skip = {"alias_records", "aliases", "canary", "tenant", "name", "schema_version"}
    for key, value in doc.items():
        if key not in skip:
            table.add_row(key, value if isinstance(value, str) else json.dumps(value))
    for alias, record in doc["alias_records"].items():
        split = f", canary {record['canary'][:12]} at {record['weight']:.0%}" if record["canary"] else ""
        table.add_row(f"@{alias}", f"{record['version'][:12]}{split} ({len(record['history'])} earlier)")
    Console().print(table)  # a fresh console: honours COLUMNS when piped


@app.command("resolve")
def resolve_cmd(model: Annotated[str, typer.Argument(help="TENANT/ADAPTER[@VERSION|@ALIAS]")],
                routing_key: Annotated[str | None, typer.Option(help="Request/user id for canary routing.")] = None,
                registry: RegistryOpt = None) -> None:
    """Print the local folder a name resolves to (for scripts)."""
    print(Resolver(_store(registry)).resolve(model, routing_key=routing_key).path)


@app.command("alias")
def alias_cmd(model: Annotated[str, typer.Argument(help="TENANT/ADAPTER (or TENANT/ADAPTER@VERSION|@ALIAS).")],
              alias: Annotated[str, typer.Argument(help="Alias to set, e.g. prod or canary.")],
              version: Annotated[str | None, typer.Argument(help="Version (hash prefix) or alias to point at.")] = None,
              canary: Annotated[str | None, typer.Option(help="Second version to get --weight of the traffic.")] = None,
              weight: Annotated[float | None, typer.Option(help="Share of traffic for --canary, 0 < W < 1.")] = None,
              registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Point an alias at a version, optionally splitting traffic with a canary version."""
    ref = AdapterRef.parse(model)
    if version is not None:
        if ref.selector:
            raise InvalidRequest(f"give the version once: {model!r} and {version!r}", param="version")
        ref = AdapterRef.parse(f"{ref.key}@{version}")
    elif not ref.selector:
        raise InvalidRequest("name the version: alias TENANT/ADAPTER ALIAS VERSION", param="version")
    s = _store(registry)
    s.set_alias(ref, alias, canary=canary, weight=weight)
    _print_alias(ref, alias, s.alias_records(ref)[alias], as_json)


def _print_alias(ref: AdapterRef, alias: str, record, as_json: bool, verb: str = "") -> None:
    if as_json:
        return _dump({"alias": f"{ref.key}@{alias}", **record.model_dump(mode="json")})
    split = f", canary {record.canary[:12]} at {record.weight:.0%}" if record.canary else ""
    out.print(f"{verb}{ref.key}@{alias} -> {record.version[:12]}{split}", highlight=False)


@app.command("rollback")
def rollback_cmd(model: Annotated[str, typer.Argument(help="TENANT/ADAPTER")],
                 alias: Annotated[str, typer.Option(help="Alias to roll back.")] = DEFAULT_ALIAS,
                 registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Point an alias back at its previous version (and canary split), as before the last change."""
    ref = AdapterRef.parse(model)
    _print_alias(ref, alias, _store(registry).rollback(ref, alias), as_json, verb="rolled back ")


@app.command("unalias")
def unalias_cmd(name: Annotated[str, typer.Argument(help="TENANT/ADAPTER")],
                alias: Annotated[str, typer.Argument(help="Alias to remove.")],
                registry: RegistryOpt = None) -> None:
    """Remove an alias (the versions stay)."""
    _store(registry).remove_alias(name, alias)
    out.print(f"removed {AdapterRef.parse(name).key}@{alias}", highlight=False)


def _rm(model: str, registry: str | None, as_json: bool) -> None:
    s = _store(registry)
    manifest = s.route(model).primary if AdapterRef.parse(model).alias is None else None
    s.delete(model)
    if as_json:
        return _dump({"deleted": manifest.served_name if manifest else model})
    out.print(f"deleted {manifest.served_name if manifest else model}", highlight=False)


ModelVersion = Annotated[str, typer.Argument(help="TENANT/ADAPTER@VERSION")]


@app.command("rm")
def rm_cmd(model: ModelVersion, registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Delete one version; refused while an alias (or canary) points at it."""
    _rm(model, registry, as_json)


@app.command("delete", hidden=True)
def delete_cmd(model: ModelVersion, registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Same as `rm` (the older spelling)."""
    _rm(model, registry, as_json)


@app.command("validate")
def validate_cmd(path: Annotated[Path, typer.Argument(help="Adapter folder.")],
                 base: Annotated[Path | None, typer.Option(help="Base model folder to check against.")] = None,
                 max_rank: MaxRankOpt = None,
                 method: Annotated[str | None, typer.Option(help="lora | qlora (how it was trained).")] = None,
                 as_json: JsonOpt = False) -> None:
    """Report every problem that would stop the adapter from being served (exit 1 if any)."""
    if method is not None and method not in get_args(Method):
        raise InvalidRequest(f"--method must be one of {', '.join(get_args(Method))}, not {method!r}",
                             param="method")
    report = validate_adapter(path, base=BaseSpec.from_dir(base) if base else None, max_rank=max_rank,
                              method=method)
    if as_json:
        _dump({"adapter": report.adapter, "ok": report.ok, "problems": [p.model_dump() for p in report.problems]})
    elif report.problems:
        table = _table("severity", "check", "problem", "fix", title=f"{len(report.problems)} problem(s)")
        for p in report.problems:
            colour = "red" if p.severity == "error" else "yellow"
            table.add_row(f"[{colour}]{p.severity}[/{colour}]", p.check, escape(p.message), escape(p.fix or ""))
        Console(width=max(out.width, 160)).print(table)
    if not report.ok:
        raise typer.Exit(1)
    if not as_json:
        out.print("ok: servable", highlight=False)
