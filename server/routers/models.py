"""GET /v1/models: the base and every servable adapter, adapters with `parent` = base."""

from __future__ import annotations

from fastapi import APIRouter

from ..errors import error_responses
from ..openai_protocol import ModelCard, ModelList
from .deps import Caller, Catalog

router = APIRouter()


@router.get("/v1/models", responses=error_responses(401, 503))  # 503: the store
async def list_models(catalog: Catalog, caller: Caller) -> ModelList:
    """What this caller may use: an open server lists everything, a key only its grants."""
    base = catalog.base_name
    allowed = (lambda name: True) if caller is None else (lambda name: caller.may_use(name, base))
    # root is the served name, not the adapter's folder: clients never learn server paths
    cards = [ModelCard(id=base, root=base)] if allowed(base) else []
    cards += [ModelCard(id=name, root=name, parent=base) for name in await catalog.servable() if allowed(name)]
    return ModelList(data=cards)
