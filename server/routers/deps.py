"""The app's services as FastAPI dependencies, so routes declare what they use."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from ..catalog import AdapterCatalog
from ..engine.protocol import Engine
from ..context import request_context
from ..generation import GenerationService
from ..keys import KeyRecord
from ..quotas import QuotaBook


def _catalog(request: Request) -> AdapterCatalog:
    return request.app.state.catalog


def _service(request: Request) -> GenerationService:
    return request.app.state.service


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> KeyRecord | None:
    """The key a request came with (401 unless it is live); None on a server without --keys."""
    keyring = request.app.state.keyring
    if keyring is None:
        return None
    record = keyring.check(authorization)
    ctx = request_context(request)
    ctx.tenant, ctx.key_id = record.tenant, record.id
    if record.rpm or record.tpm:  # every answer to a limited key says where it stands
        quotas: QuotaBook = request.app.state.quotas
        ctx.headers = lambda: quotas.headers(record)
    return record


Caller = Annotated[KeyRecord | None, Depends(_caller)]
def _quotas(request: Request) -> QuotaBook:
    return request.app.state.quotas


Catalog = Annotated[AdapterCatalog, Depends(_catalog)]
QuotasDep = Annotated[QuotaBook, Depends(_quotas)]
Service = Annotated[GenerationService, Depends(_service)]
EngineDep = Annotated[Engine, Depends(_engine)]
