"""`create_app(settings, engine_factory)`: the FastAPI app over any `Engine`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from loramux.adapters.registry import Resolver
from loramux.adapters.settings import StoreSettings

from .catalog import AdapterCatalog
from .engine.protocol import Engine
from .errors import install_error_handlers
from .fairness import FairShare
from .generation import GenerationService
from .keys import Keyring
from .quotas import QuotaBook, Quotas
from .metrics import Metrics
from .middleware import ContextMiddleware
from .routers import admin, completions, health, models
from .settings import ServerSettings
from .slots import LoraSlots

EngineFactory = Callable[[ServerSettings], Awaitable[Engine]]


def registry_resolver(settings: ServerSettings) -> Resolver | None:
    """The registry served on demand, when one is configured."""
    if settings.registry is None:
        return None
    return Resolver(StoreSettings.of(settings.registry).open(), ttl_s=settings.refresh_s)


def _lora_requests(catalog: AdapterCatalog | None, slots: LoraSlots | None) -> tuple[set[str], set[str]]:
    """Served adapter names with requests in the engine, and those waiting for a batch slot
    (without fair share every held request counts as in the engine: vLLM's queue is its own)."""
    held = catalog.held() if catalog is not None else {}
    if slots is None:
        return set(held.values()), set()
    in_slot, waiting = slots.adapters()
    return {held[i] for i in in_slot if i in held}, {held[i] for i in waiting if i in held}


def create_app(settings: ServerSettings, engine_factory: EngineFactory,
               quotas: Callable[[Callable[[str, str], None]], QuotaBook] = Quotas) -> FastAPI:
    """The engine starts in the lifespan, inside the server's event loop, and is shut down
    with it; adapters named in `settings` are admitted and loaded before the first request.
    `quotas` builds the quota book from the metrics' rejection counter (a Ray replica's is the
    cluster's)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = await engine_factory(settings)
        policy = None
        try:
            catalog = AdapterCatalog(engine, settings, registry_resolver(settings), events=app.state.metrics)
            for name, path in settings.adapters.items():
                await catalog.load(name, path)
            for name in settings.pins:
                await catalog.pin(name)
            policy = asyncio.create_task(catalog.run_policy(), name="loramux-residency")
            app.state.engine, app.state.catalog = engine, catalog
            app.state.service = (GenerationService(engine, FairShare(), slots) if settings.fair_share
                                 else GenerationService(engine))
            yield
        finally:
            if policy is not None:
                policy.cancel()
            engine.shutdown()
            if (catalog := getattr(app.state, "catalog", None)) is not None:
                catalog.close()

    app = FastAPI(title="loramux", lifespan=lifespan)
    slots = LoraSlots(settings.max_loras) if settings.fair_share else None
    app.state.settings = settings
    app.state.keyring = Keyring(settings.keys) if settings.keys is not None else None
    app.state.metrics = Metrics(settings.metrics_top_k, residency=lambda: (
        getattr(app.state, "catalog", None) and app.state.catalog.snapshot or [], settings.max_loras),
        tenants=slots.tenants if slots is not None else None,
        lora_requests=lambda: _lora_requests(getattr(app.state, "catalog", None), slots),
        max_loras=settings.max_loras if settings.enable_lora else 0)
    app.state.quotas = quotas(app.state.metrics.quota_rejected)
    install_error_handlers(app)

    app.add_middleware(ContextMiddleware, metrics=app.state.metrics)
    for module in (models, completions, admin, health):
        app.include_router(module.router)
    return app
