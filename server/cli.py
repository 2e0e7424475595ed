"""`loramux serve`: the base and its adapters behind the OpenAI API.

The umbrella `loramux` command (`loramux.cli`) mounts `serve` from here; `python -m
loramux.server.cli serve` runs it alone. Flags > `LORAMUX_*` env > ServerSettings' defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand

from pydantic import ValidationError

from loramux.adapters.cli_errors import Typer
from loramux.adapters.errors import InvalidRequest, NotFound
from loramux.adapters.logs import configure_logging
from loramux.adapters.settings import StoreSettings

from .settings import ServerSettings

app = Typer(help="Serve a base and its adapters (the `loramux` command has every other group).")
err = Console(stderr=True)


@app.callback()
def _serve_group() -> None:
    """A group of one, so `python -m loramux.server.cli serve ...` reads like `loramux serve ...`."""


def _flag(field: str) -> Any:
    """A `serve` option documented by its ServerSettings field, so help, default and env var are stated once."""
    info = ServerSettings.model_fields[field]
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    shown = f" [default: {default}]" if default not in (None, {}) else ""
    return typer.Option(help=f"{info.description}{shown} [env: LORAMUX_{field.upper()}]", show_default=False)


class VllmSpellings(TyperCommand):
    """Reads vLLM's `--lora-modules A B C` (one flag, many values) as `--lora-modules` repeated,
    so a manifest written for `vllm serve` passes its arguments unchanged."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        spread, many = [], False
        for arg in args:
            if arg.startswith("-"):
                many = arg == "--lora-modules"
                if many:
                    continue
            elif many:
                spread.append("--lora-modules")
            spread.append(arg)
        return super().parse_args(ctx, spread)


def _explicit(value: str, base_name: str | None) -> tuple[str, Path] | None:
    """`NAME=PATH`, or vLLM's JSON `{"name", "path", "base_model_name"}`: a name and its folder;
    None for anything else (a registry name, or a mistake)."""
    if value.lstrip().startswith("{"):
        try:
            spec = json.loads(value)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"{value!r} is not JSON ({exc.msg})", param_hint="--lora-modules") from None
        extra = set(spec) - {"name", "path", "base_model_name"} if isinstance(spec, dict) else set()
        if not isinstance(spec, dict) or extra or not all(isinstance(spec.get(k), str) for k in ("name", "path")):
            raise typer.BadParameter(f'expected {{"name": ..., "path": ..., "base_model_name": ...}}, got {value}',
                                     param_hint="--lora-modules")
        parent = spec.get("base_model_name")
        if parent is not None and base_name is not None and parent != base_name:
            raise typer.BadParameter(f"{spec['name']}: base_model_name {parent!r} is not the served base "
                                     f"{base_name!r}; drop it, or serve the base under that name (--served-name)",
                                     param_hint="--lora-modules")
        return spec["name"], Path(spec["path"])
    name, sep, path = value.partition("=")
    return (name, Path(path)) if sep and name and path else None


def _parse_adapters(values: list[str], store: StoreSettings, base_name: str | None = None) -> dict[str, Path]:
    """`NAME=PATH` (or vLLM's JSON form) as given; a bare `TENANT/NAME[@VERSION|@ALIAS]`
    resolved in the registry."""
    from loramux.adapters.names import AdapterRef

    out, bad = {}, []
    for v in values:
        if (given := _explicit(v, base_name)) is not None:
            out[given[0]] = given[1]
            continue
        try:
            AdapterRef.parse(v)
            out[v] = None
        except InvalidRequest:
            bad.append(v)
    if bad:
        raise typer.BadParameter(f"expected TENANT/NAME=PATH, or TENANT/NAME[@VERSION|@ALIAS] from the registry; "
                                 f"got {', '.join(map(repr, bad))}", param_hint="--adapter")
    if any(p is None for p in out.values()):
        from loramux.adapters.registry import Resolver

        resolver = Resolver(store.open())
        for name in [n for n, p in out.items() if p is None]:
            try:
                out[name] = resolver.resolve(name).path
            except NotFound:
                raise NotFound(f"--adapter {name}: not in the registry {store.store} (--registry, else "
                               "LORAMUX_STORE); publish it there, or give TENANT/NAME=PATH", param="adapter") from None
    return out


def _settings(given: dict[str, Any]) -> ServerSettings:
    """Flags given on the command line, then `LORAMUX_*`, then the defaults; every bad value in one error."""
    try:
        return ServerSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        problems = [f"--{str(e['loc'][0]).replace('_', '-')} (env LORAMUX_{str(e['loc'][0]).upper()}): {e['msg']}"
                    if e["loc"] else e["msg"].removeprefix("Value error, ") for e in exc.errors()]
        raise InvalidRequest("invalid server settings:\n" + "\n".join(problems), param="settings") from None


@app.command(cls=VllmSpellings)
def serve(
    base: Annotated[Path | None, _flag("base")] = None,
    adapter: Annotated[list[str] | None, typer.Option(
        "--adapter", "--lora-modules",
        help="TENANT/ADAPTER=PATH, or TENANT/ADAPTER[@VERSION|@ALIAS] from the registry (checked at start); "
             'repeatable. vLLM\'s spelling works too: --lora-modules NAME=PATH ... or \'{"name": ..., "path": ...}\'.'
             )] = None,
    registry: Annotated[str | None, _flag("registry")] = None,
    refresh_s: Annotated[float | None, _flag("refresh_s")] = None,
    served_name: Annotated[str | None, _flag("served_name")] = None,
    pin: Annotated[list[str] | None, _flag("pins")] = None,
    idle_s: Annotated[float | None, _flag("idle_s")] = None,
    cache_gib: Annotated[float | None, _flag("cache_gib")] = None,
    max_loras: Annotated[int | None, _flag("max_loras")] = None,
    max_lora_rank: Annotated[int | None, _flag("max_lora_rank")] = None,
    max_cpu_loras: Annotated[int | None, _flag("max_cpu_loras")] = None,
    enable_lora: Annotated[bool | None, _flag("enable_lora")] = None,
    max_num_seqs: Annotated[int | None, _flag("max_num_seqs")] = None,
    fair_share: Annotated[bool | None, _flag("fair_share")] = None,
    tool_call_parser: Annotated[str | None, _flag("tool_call_parser")] = None,
    replicas: Annotated[int | None, _flag("replicas")] = None,
    dtype: Annotated[str | None, _flag("dtype")] = None,
    max_model_len: Annotated[int | None, _flag("max_model_len")] = None,
    host: Annotated[str | None, _flag("host")] = None,
    port: Annotated[int | None, _flag("port")] = None,
    keep_alive_s: Annotated[float | None, _flag("keep_alive_s")] = None,
    keys: Annotated[Path | None, _flag("keys")] = None,
    admin_key: Annotated[str | None, _flag("admin_key")] = None,
    admin_path: Annotated[list[Path] | None, _flag("admin_paths")] = None,
    metrics_top_k: Annotated[int | None, _flag("metrics_top_k")] = None,
    log_level: Annotated[str | None, _flag("log_level")] = None,
) -> None:
    """Serve the base and adapters through vLLM behind the OpenAI API."""
    given = dict(base=base, served_name=served_name, max_loras=max_loras, max_lora_rank=max_lora_rank,
                 max_cpu_loras=max_cpu_loras, dtype=dtype, max_model_len=max_model_len, host=host, port=port,
                 keep_alive_s=keep_alive_s,
                 admin_key=admin_key, log_level=log_level, registry=registry, refresh_s=refresh_s,
                 admin_paths=admin_path or None, keys=keys, metrics_top_k=metrics_top_k, pins=pin or None,
                 idle_s=idle_s, cache_gib=cache_gib, max_num_seqs=max_num_seqs, fair_share=fair_share,
                 tool_call_parser=tool_call_parser, enable_lora=enable_lora, replicas=replicas)
    settings = _settings(given)
    configure_logging(settings.log_level)
    # bare names resolve in the served registry, else in LORAMUX_STORE (or the default store)
    adapters = _parse_adapters(adapter or [], StoreSettings.of(settings.registry), settings.base_name)
    from .admission import admit_configured

    # every problem at once, before the engine starts; a LoramuxError is one line and exit 2
    if settings.keys is not None:
        from .keys import KeysFile

        KeysFile.read(settings.keys)
    admit_configured(settings.model_copy(update={"adapters": {**settings.adapters, **adapters}}))
    if settings.registry is not None:  # registry names are served on demand and follow their aliases
        explicit = {given[0] for v in adapter or [] if (given := _explicit(v, None)) is not None}
        adapters = {n: p for n, p in adapters.items() if n in explicit}
    run_server(settings.model_copy(update={"adapters": {**settings.adapters, **adapters}}))


def run_server(settings: ServerSettings) -> None:
    """Start uvicorn over the app (the vLLM engine starts inside the app's lifespan), or, with
    `--replicas`, the Ray Serve application."""
    if settings.replicas:
        from .ray_serve import run_on_ray

        return run_on_ray(settings)
    import uvicorn

    from .app import create_app
    from .engine_factory import start_vllm_engine

    uvicorn.run(create_app(settings, start_vllm_engine), host=settings.host, port=settings.port,
                log_level=settings.log_level, access_log=False,
                timeout_keep_alive=settings.keep_alive_s)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
