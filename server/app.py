"""`create_app(settings, engine_factory)`: the FastAPI app over any `Engine`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .engine.protocol import AdapterSpec, Engine
from .errors import install_error_handlers
from .generation import GenerationService
from .metrics import Metrics
from .middleware import RequestContext
from .routers import admin, completions, health, models
from .settings import ServerSettings

EngineFactory = Callable[[ServerSettings], Awaitable[Engine]]


def create_app(settings: ServerSettings, engine_factory: EngineFactory) -> FastAPI:
    """The engine starts in the lifespan, inside the server's event loop, and is shut down
    with it; adapters named in `settings` are loaded before the first request."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = await engine_factory(settings)
        try:
            for name, path in settings.adapters.items():
                await engine.add_adapter(AdapterSpec(name, path))
            app.state.engine = engine
            app.state.service = GenerationService(engine, app.state.metrics)
            yield
        finally:
            engine.shutdown()

    app = FastAPI(title="loramux", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)

    app.add_middleware(RequestContext, metrics=app.state.metrics)
    for module in (models, completions, admin, health):
        app.include_router(module.router)
    return app
