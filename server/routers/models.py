"""GET /v1/models: the base and every servable adapter, adapters with `parent` = base."""

from __future__ import annotations

from fastapi import APIRouter

from ..openai_protocol import ModelCard, ModelList
from .deps import Catalog

router = APIRouter()


@router.get("/v1/models")
async def list_models(catalog: Catalog) -> ModelList:
    base = catalog.base_name
    # root is the served name, not the adapter's folder: clients never learn server paths
    cards = [ModelCard(id=base, root=base)]
    cards += [ModelCard(id=name, root=name, parent=base) for name in await catalog.servable()]
    return ModelList(data=cards)
