"""The `loramux` command: `serve`, `base build-tiny`, and the registry's `adapters` group."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from loramux.adapters.cli import app as adapters_app
from loramux.adapters.errors import LoramuxError

app = typer.Typer(help="loramux: one base model, many tenants' LoRA adapters.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
base_app = typer.Typer(help="Base models.", no_args_is_help=True)
app.add_typer(base_app, name="base")
err = Console(stderr=True)


app.add_typer(adapters_app, name="adapters", help="The adapter registry.")


def _parse_adapters(values: list[str], registry: str | None) -> dict[str, Path]:
    """`NAME=PATH` as given; a bare `TENANT/NAME[@VERSION|@ALIAS]` resolved in the registry."""
    out, bad = {}, []
    for v in values:
        name, sep, path = v.partition("=")
        if sep and name and path:
            out[name] = Path(path)
        elif not sep and registry and name:
            out[name] = None
        else:
            bad.append(v)
    if bad:
        raise typer.BadParameter(f"expected NAME=PATH (or TENANT/NAME with --registry), got "
                                 f"{', '.join(map(repr, bad))}", param_hint="--adapter")
    if any(p is None for p in out.values()):
        from loramux.adapters.registry import Resolver
        from loramux.adapters.settings import StoreSettings

        resolver = Resolver(StoreSettings(store=registry).open())
        out = {n: p if p is not None else resolver.resolve(n).path for n, p in out.items()}
    return out


def _fail(exc: LoramuxError) -> None:
    err.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False)
    raise typer.Exit(2)


@app.command()
def serve(
    base: Annotated[Path, typer.Option(help="Base model directory.")],
    adapter: Annotated[list[str], typer.Option(
        help="TENANT/ADAPTER=PATH, or TENANT/ADAPTER[@VERSION|@ALIAS] from --registry; repeatable.")] = [],
    registry: Annotated[str | None, typer.Option(envvar="LORAMUX_STORE",
                                                 help="Adapter registry: a folder or s3://BUCKET/PREFIX.")] = None,
    served_name: Annotated[str | None, typer.Option(help="Name of the base for clients.")] = None,
    max_loras: Annotated[int, typer.Option(help="Adapters per batch.")] = 4,
    max_lora_rank: Annotated[int, typer.Option(help="Largest adapter rank accepted.")] = 16,
    max_cpu_loras: Annotated[int | None, typer.Option(help="Adapters kept in memory.")] = None,
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")] = "auto",
    max_model_len: Annotated[int | None, typer.Option(help="Context length.")] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    admin_key: Annotated[str | None, typer.Option(envvar="LORAMUX_ADMIN_KEY",
                                                  help="Key for the adapter admin endpoints.")] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "warning",
) -> None:
    """Serve the base and adapters through vLLM behind the OpenAI API."""
    import uvicorn

    from .app import create_app
    from .engine.vllm_engine import EngineConfig, VLLMEngine
    from .settings import ServerSettings
    from .startup import validate_settings

    from pythonjsonlogger.json import JsonFormatter

    # vLLM's own warnings (tcmalloc, triton, dtype casts) are noise at our default level
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR" if log_level == "warning" else log_level.upper())

    handler = logging.StreamHandler(sys.stderr)  # one JSON object per line, for log pipelines
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=log_level.upper(), handlers=[handler], force=True)
    try:
        settings = ServerSettings(base=base, served_name=served_name,
                                  adapters=_parse_adapters(adapter, registry), max_loras=max_loras,
                                  max_lora_rank=max_lora_rank, max_cpu_loras=max_cpu_loras, dtype=dtype,
                                  max_model_len=max_model_len, host=host, port=port, admin_key=admin_key)
        validate_settings(settings)
    except LoramuxError as exc:
        _fail(exc)

    async def start_engine(s: ServerSettings):
        started = time.perf_counter()
        engine = VLLMEngine.start(EngineConfig(
            base=s.base, served_name=s.base_name, max_loras=s.max_loras, max_lora_rank=s.max_lora_rank,
            max_cpu_loras=s.max_cpu_loras, dtype=s.dtype, max_model_len=s.max_model_len))
        err.print(f"engine ready in {time.perf_counter() - started:.1f}s; serving {s.base_name} and "
                  f"{len(s.adapters)} adapter(s) on http://{s.host}:{s.port}/v1", highlight=False)
        return engine

    uvicorn.run(create_app(settings, start_engine), host=host, port=port,
                log_level=log_level.lower(), access_log=False)


@base_app.command("build-tiny")
def build_tiny(
    out: Annotated[Path, typer.Option(help="Directory to write the model to.")],
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical files.")] = 0,
    steps: Annotated[int, typer.Option(help="Pretraining steps on the generated corpus.")] = 120,
) -> None:
    """Build the tiny offline Llama base and its BPE tokenizer (no network)."""
    from loramux.adapters.tiny_base import build_tiny as build

    with err.status("building the tiny base (tokenizer, init, short pretraining)..."):
        path = build(out, seed=seed, steps=steps)
    typer.echo(str(path))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
