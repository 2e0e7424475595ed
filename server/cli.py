"""The `loramux` command: `serve`, `base build-tiny`, and the registry's `adapters` group."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from pydantic import ValidationError

from loramux.adapters.cli import app as adapters_app
from loramux.adapters.errors import InvalidRequest, LoramuxError, NotFound
from loramux.adapters.logs import configure_logging
from loramux.adapters.settings import StoreSettings

from .settings import ServerSettings

app = typer.Typer(help="loramux: one base model, many tenants' LoRA adapters.", no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None)
base_app = typer.Typer(help="Base models.", no_args_is_help=True)
app.add_typer(base_app, name="base")
err = Console(stderr=True)


app.add_typer(adapters_app, name="adapters", help="The adapter registry.")


def _flag(field: str) -> Any:
    """A `serve` option documented by its ServerSettings field, so help, default and env var are stated once."""
    info = ServerSettings.model_fields[field]
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    shown = f" [default: {default}]" if default not in (None, {}) else ""
    return typer.Option(help=f"{info.description}{shown} [env: LORAMUX_{field.upper()}]", show_default=False)


def _parse_adapters(values: list[str], store: StoreSettings) -> dict[str, Path]:
    """`NAME=PATH` as given; a bare `TENANT/NAME[@VERSION|@ALIAS]` resolved in the registry."""
    from loramux.adapters.names import AdapterRef

    out, bad = {}, []
    for v in values:
        name, sep, path = v.partition("=")
        if sep and name and path:
            out[name] = Path(path)
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
                raise NotFound(f"--adapter {name}: not in the registry {store.store} (--registry or "
                               "LORAMUX_STORE); publish it there, or give TENANT/NAME=PATH", param="adapter") from None
    return out


def _settings(given: dict[str, Any]) -> ServerSettings:
    """Flags given on the command line, then `LORAMUX_*`, then the defaults; every bad value in one error."""
    try:
        return ServerSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        problems = [f"--{str(e['loc'][0]).replace('_', '-')} (env LORAMUX_{str(e['loc'][0]).upper()}): {e['msg']}"
                    for e in exc.errors()]
        raise InvalidRequest("invalid server settings:\n" + "\n".join(problems), param="settings") from None


def _fail(exc: LoramuxError) -> None:
    err.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False)
    raise typer.Exit(2)


@app.command()
def serve(
    base: Annotated[Path | None, _flag("base")] = None,
    adapter: Annotated[list[str] | None, typer.Option(
        help="TENANT/ADAPTER=PATH, or TENANT/ADAPTER[@VERSION|@ALIAS] from --registry; repeatable.")] = None,
    registry: Annotated[str | None, typer.Option(
        help="Adapter registry for bare adapter names: a folder or s3://BUCKET/PREFIX. [env: LORAMUX_STORE]",
        show_default=False)] = None,
    served_name: Annotated[str | None, _flag("served_name")] = None,
    max_loras: Annotated[int | None, _flag("max_loras")] = None,
    max_lora_rank: Annotated[int | None, _flag("max_lora_rank")] = None,
    max_cpu_loras: Annotated[int | None, _flag("max_cpu_loras")] = None,
    dtype: Annotated[str | None, _flag("dtype")] = None,
    max_model_len: Annotated[int | None, _flag("max_model_len")] = None,
    host: Annotated[str | None, _flag("host")] = None,
    port: Annotated[int | None, _flag("port")] = None,
    admin_key: Annotated[str | None, _flag("admin_key")] = None,
    log_level: Annotated[str | None, _flag("log_level")] = None,
) -> None:
    """Serve the base and adapters through vLLM behind the OpenAI API."""
    given = dict(base=base, served_name=served_name, max_loras=max_loras, max_lora_rank=max_lora_rank,
                 max_cpu_loras=max_cpu_loras, dtype=dtype, max_model_len=max_model_len, host=host, port=port,
                 admin_key=admin_key, log_level=log_level)
    try:
        if adapter:
            given["adapters"] = _parse_adapters(adapter, StoreSettings.of(registry))
        settings = _settings(given)
        configure_logging(settings.log_level)
        from .catalog import admit_configured

        admit_configured(settings)
    except LoramuxError as exc:
        _fail(exc)
    run_server(settings)


def run_server(settings: ServerSettings) -> None:
    """Start uvicorn over the app; the vLLM engine starts inside the app's lifespan."""
    import uvicorn

    from .app import create_app
    from .engine.vllm_engine import EngineConfig, VLLMEngine

    async def start_engine(s: ServerSettings):
        started = time.perf_counter()
        engine = VLLMEngine.start(EngineConfig(
            base=s.base, served_name=s.base_name, max_loras=s.max_loras, max_lora_rank=s.max_lora_rank,
            max_cpu_loras=s.max_cpu_loras, dtype=s.dtype, max_model_len=s.max_model_len,
            progress_bars=s.log_level in ("debug", "info")))
        err.print(f"engine ready in {time.perf_counter() - started:.1f}s; serving {s.base_name} and "
                  f"{len(s.adapters)} adapter(s) on http://{s.host}:{s.port}/v1", highlight=False)
        return engine

    uvicorn.run(create_app(settings, start_engine), host=settings.host, port=settings.port,
                log_level=settings.log_level, access_log=False)


@base_app.command("build-tiny")
def build_tiny(
    out: Annotated[Path, typer.Option(help="Directory to write the model to.")],
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical files.")] = 0,
    steps: Annotated[int, typer.Option(help="Pretraining steps on the generated corpus.")] = 120,
) -> None:
    """Build the tiny offline Llama base and its BPE tokenizer (no network)."""
    configure_logging()
    from loramux.adapters.tiny_base import build_tiny as build

    with err.status("building the tiny base (tokenizer, init, short pretraining)..."):
        path = build(out, seed=seed, steps=steps)
    typer.echo(str(path))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
