"""`loramux trainer` (also the `trainer` command): train, add a tenant (train + gate + publish),
merge, plan, compare, demo.

Each command is a thin function over a pydantic TrainConfig (recipe YAML + `key=value`
overrides). Errors go through the one printer (`loramux.adapters.cli_errors`): a user's mistake
is one line and exit 2, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loramux.adapters.cli_errors import Typer
from loramux.adapters.errors import LoramuxError
from loramux.adapters.logs import LEVELS, configure_logging
from loramux.trainer.config import load_config, recipe_path
from loramux.trainer.methods import METHODS

app = Typer(help="Turn a tenant's data into a checked, registered adapter.")
out, err = Console(), Console(stderr=True)

Overrides = Annotated[list[str] | None, typer.Argument(
    help="Recipe overrides KEY=VALUE, dotted for nested fields: lora.r=16 training.max_steps=500.",
    show_default=False)]
StoreOpt = Annotated[str | None, typer.Option(
    "--registry", "--store", help="Adapter store: a folder or s3://BUCKET/PREFIX. [env: LORAMUX_STORE]",
    show_default=False)]


def _level(value: str) -> str:
    if value.lower() not in LEVELS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LEVELS)}")
    return value.lower()


@app.callback()
def _logging(log_level: Annotated[str, typer.Option(
        callback=_level, help="debug | info | warning | error; below warning, the libraries' own notes show too.")] = "warning") -> None:
    configure_logging(log_level)


def _summary(m: dict) -> Table:
    t = Table(show_header=False, box=None)
    base = f" (base {m['base_score']:.3f})" if m.get("base_score") is not None else ""
    for k, v in [(m["metric"], f"{m['score']:.3f}{base}"), ("eval loss", f"{m['eval_loss']:.4f}"),
                 ("tokens/s", f"{m['tokens_per_s']:,.0f}"), ("peak memory", f"{m['peak_memory_mb']:,.0f} MiB"),
                 ("wall time", f"{m['wall_time_s']:.1f} s"),
                 ("trainable", f"{m['trainable_params']:,} ({m['trainable_pct']:.2f}%)")]:
        t.add_row(k, v)
    from loramux.trainer.probe import probe_line

    if (probe := probe_line(m)) is not None:
        t.add_row("general probe", probe)
    return t


@app.command()
def train(
    config: Annotated[str, typer.Option("--config", "-c", help="Recipe YAML, or a shipped recipe: lora, qlora, full.")],
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option(help="Continue from the newest complete checkpoint.")] = False,
) -> None:
    """Fine-tune a base with LoRA, QLoRA or full fine-tuning."""
    from loramux.trainer.train import train as run

    cfg = load_config(recipe_path(config), overrides or [])
    result = run(cfg, resume=resume, console=err)
    out.print(_summary(result.metrics))
    out.print(f"{METHODS[cfg.method].artifact}: {result.artifact}\n"
              f"metrics: {result.output_dir / 'metrics.json'}  loss curve: {result.output_dir / 'loss.png'}")


@app.command("add-tenant")
def add_tenant(
    tenant: Annotated[str, typer.Option(help="Tenant name.")],
    name: Annotated[str, typer.Option(help="Adapter name within the tenant.")],
    data: Annotated[Path, typer.Option(help="Training JSONL (chat, prompt/completion or alpaca).")],
    base: Annotated[Path, typer.Option(help="Base model folder.")],
    eval: Annotated[Path | None, typer.Option("--eval", help="Held-out JSONL; else a fraction of --data.")] = None,
    registry: StoreOpt = None,
    method: Annotated[str, typer.Option(help="lora | qlora")] = "lora",
    config: Annotated[str | None, typer.Option(help="Recipe YAML; default: the shipped one for --method.")] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Run folder; default runs/TENANT/NAME.")] = None,
    min_gain: Annotated[float, typer.Option(help="Required score gain over the base.")] = 0.05,
    min_score: Annotated[float, typer.Option(help="Required absolute score.")] = 0.0,
    max_general_drop: Annotated[float | None, typer.Option(
        help="Refuse when the general-probe score falls more than this below the base's; default: report only.",
        show_default=False)] = None,
    alias: Annotated[list[str] | None, typer.Option(help="Aliases to point at the new version.")] = None,
    base_id: Annotated[str | None, typer.Option(help="Served id of the base; default its folder name.")] = None,
    server: Annotated[str | None, typer.Option(help="Running server to load the new version into.")] = None,
    overrides: Overrides = None,
) -> None:
    """Train on a tenant's data, check it beats the base, publish it (or nothing)."""
    from loramux.adapters.settings import StoreSettings
    from loramux.trainer.tenant import Gate
    from loramux.trainer.tenant import add_tenant as run

    cfg = load_config(recipe_path(config or method), [
        f"method={method}", f"base={base}", f"data.train={data}", f"data.eval={eval or 'null'}",
        f"output_dir={output_dir or Path('runs') / tenant / name}", *(overrides or [])])
    store = StoreSettings.of(registry)
    result = run(cfg, tenant=tenant, name=name, store=store, base_id=base_id,
                 gate=Gate(min_gain=min_gain, min_score=min_score, max_general_drop=max_general_drop),
                 aliases=tuple(alias or ["prod"]), server=server, console=err)
    out.print(_summary(result.metrics))
    for w in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(w)}")
    mf = result.manifest
    out.print(f"published {mf.served_name} ({', '.join(alias or ['prod'])}) to {store.store}"
              + (f"; loaded by {server}" if server else ""))


@app.command()
def merge(
    adapter: Annotated[str, typer.Option(help="TENANT/NAME[@VERSION|@ALIAS] in the registry, or a folder.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the merged model.")],
    base: Annotated[Path | None, typer.Option(help="16-bit base folder; default: the adapter's recorded base.")] = None,
    registry: StoreOpt = None,
    dtype: Annotated[str, typer.Option(help="auto (the base's own dtype) | float32 | bfloat16 | float16")] = "auto",
) -> None:
    """Write base + adapter merged into one model folder (safetensors, config, tokenizer)."""
    from loramux.adapters.settings import StoreSettings
    from loramux.trainer.merge import merge as run

    from loramux.adapters.hardware import checkpoint_dtype

    path = run(adapter, out_dir, base=base, store=StoreSettings.of(registry), dtype=dtype)
    out.print(f"merged model: {path} ({checkpoint_dtype(path)})")


@app.command()
def plan(
    base: Annotated[str, typer.Option(help="Base model folder or its config.json (no weights needed).")],
    gpu_mem: Annotated[str, typer.Option(help="Accelerator memory, e.g. 24GiB.")],
    examples: Annotated[int, typer.Option(help="Training examples you have.")],
    seq_len: Annotated[int, typer.Option(help="Tokens per sequence.")] = 2048,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 1,
    rank: Annotated[int | None, typer.Option(help="LoRA rank; default the recipes' for this base size.")] = None,
    targets: Annotated[str | None, typer.Option(help="attention | mlp | all-linear | q_proj,v_proj,...")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Memory estimate per method (weights, gradients, optimizer, activations), a recommendation, and the rate,
    rank and length the recipes use on this base."""
    from loramux.trainer.plan import GiB, make_plan, parse_bytes

    p = make_plan(base, gpu_mem=parse_bytes(gpu_mem), examples=examples, seq_len=seq_len,
                  batch_size=batch_size, r=rank, targets=targets)
    if as_json:
        out.print_json(json.dumps({"params": p.shape.params, "gpu_mem": p.gpu_mem,
                                   "recommendation": p.recommendation, "reason": p.reason, "defaults": p.defaults,
                                   "methods": [{**e.__dict__, "total": e.total} for e in p.estimates]}))
        return
    t = Table(title=f"{p.shape.params / 1e9:.2f}B parameters, {seq_len}x{batch_size} tokens/step, "
                    f"{p.gpu_mem / GiB:.0f} GiB")
    for c in ("method", "trainable", "weights", "gradients", "optimizer", "activations", "total GiB", "notes"):
        t.add_column(c, justify="left" if c in ("method", "notes") else "right")
    for e in p.estimates:
        t.add_row(e.method, f"{e.trainable:,}", *(f"{v / GiB:.2f}" for v in
                  (e.weights, e.gradients, e.optimizer, e.activations, e.total)),
                  e.notes + (" (grad. checkpointing)" if e.checkpointing else ""))
    out.print(t)
    out.print(f"[bold]recommendation:[/bold] {p.recommendation}: {escape(p.reason)}")
    d = p.defaults
    out.print(f"[bold]recipe defaults for this base:[/bold] LoRA/QLoRA rate {d['lora_learning_rate']:g} (full "
              f"{d['full_learning_rate']:g}), r={d['r']}, alpha={d['alpha']:g}, {d['targets']}; {d['epochs']:g} epochs "
              f"of {examples:,} examples ({d['examples_seen']:,} seen) unless early stopping ends it sooner")


@app.command()
def compare(
    config: Annotated[str, typer.Option("--config", "-c", help="Recipe YAML with the data and base (or lora, ...).")],
    methods: Annotated[str, typer.Option(help="Comma-separated methods.")] = "lora,qlora,full",
    overrides: Overrides = None,
) -> None:
    """Train each method on the same data; one table of score, forgetting, speed, memory, size."""
    from loramux.trainer.compare import compare as run
    from loramux.trainer.compare import table, write_rows

    plain = [o for o in overrides or [] if o.split(".", 1)[0] not in methods.split(",")]
    cfg = load_config(recipe_path(config), plain)
    rows = run(cfg, [m.strip() for m in methods.split(",") if m.strip()],
               [o for o in overrides or [] if o not in plain])
    out.print(table(rows))
    out.print(f"rows: {write_rows(rows, cfg.output_dir / 'compare.json')}")


@app.command("demo-data")
def demo_data(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for PERSONA.train/eval.jsonl.")],
    persona: Annotated[list[str] | None, typer.Option(
        help="pirate, robot (the tiny base's), support, orders (a real base's); default pirate and robot.")] = None,
) -> None:
    """Write the demo tenants' datasets (deterministic persona tasks)."""
    from loramux.trainer.demo import ALL_PERSONAS, PERSONAS, write_demo_data

    for name in persona or list(PERSONAS):
        if name not in ALL_PERSONAS:
            raise LoramuxError(f"unknown persona {name!r}; known: {sorted(ALL_PERSONAS)}")
        train_path, eval_path = write_demo_data(out_dir, name)
        out.print(f"{name}: {train_path} {eval_path}")


def _scores(scores: dict[str, float]) -> str:
    """`exact_match 1.00 vs base 0.00` from a manifest's eval scores."""
    return ", ".join(f"{k} {v:.2f} vs base {scores[f'base_{k}']:.2f}" for k, v in scores.items()
                     if f"base_{k}" in scores)


@app.command()
def demo(
    base: Annotated[Path, typer.Option(help="Base model folder (e.g. the tiny base).")],
    registry: StoreOpt = None,
    work_dir: Annotated[Path, typer.Option(help="Where data (data/) and runs (runs/PERSONA) go.")] = Path(".demo/trainer"),
    base_id: Annotated[str | None, typer.Option(help="Served id of the base; default its folder name.")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads (1 is fastest on a busy small CPU; 0 = torch default).")] = 1,
    server: Annotated[str | None, typer.Option(help="Running server to load the new versions into.")] = None,
    demo_set: Annotated[str, typer.Option("--set", help="tiny: demo/pirate (LoRA) and demo/robot (QLoRA); smollm2: "
                                          "acme/support (LoRA) and globex/orders (QLoRA), for a real instruct base.")
                        ] = "tiny",
) -> None:
    """Train and publish a set of demo tenants (one LoRA, one QLoRA), unless already published."""
    from loramux.adapters.settings import StoreSettings
    from loramux.trainer.demo import DEMO_SETS, DemoTenant, train_demo_tenants

    if demo_set not in DEMO_SETS:
        raise LoramuxError(f"unknown demo set {demo_set!r}; known: {', '.join(DEMO_SETS)}")
    store = StoreSettings.of(registry)

    def report(done: DemoTenant) -> None:
        mf = done.manifest
        for w in done.warnings:
            err.print(f"[yellow]warning:[/yellow] {escape(w)}", soft_wrap=True)
        verb = "published" if done.trained else "already published"
        out.print(f"{mf.tenant}/{mf.name}: {verb} {mf.short_version} ({mf.method}, {_scores(mf.eval_scores)}) "
                  f"in {store.store}", highlight=False, soft_wrap=True)

    train_demo_tenants(base, store, work_dir, threads=threads or None, server=server, base_id=base_id,
                       console=err, report=report, demo_set=demo_set)


if __name__ == "__main__":
    app()
