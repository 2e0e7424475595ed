"""The app's services as FastAPI dependencies, so routes declare what they use."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..catalog import AdapterCatalog
from ..engine.protocol import Engine
from ..generation import GenerationService


def _catalog(request: Request) -> AdapterCatalog:
    return request.app.state.catalog


def _service(request: Request) -> GenerationService:
    return request.app.state.service


def _engine(request: Request) -> Engine:
    return request.app.state.engine


Catalog = Annotated[AdapterCatalog, Depends(_catalog)]
Service = Annotated[GenerationService, Depends(_service)]
EngineDep = Annotated[Engine, Depends(_engine)]
