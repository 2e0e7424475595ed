"""GET /v1/models: the base and every servable adapter, adapters with `parent` = base."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..openai_protocol import ModelCard, ModelList

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    engine = request.app.state.engine
    cards = [ModelCard(id=engine.base_name, root=engine.base_name)]
    # root is the served name, not the adapter's folder: clients never learn server paths
    cards += [ModelCard(id=spec.name, root=spec.name, parent=engine.base_name)
              for spec in sorted(engine.adapters(), key=lambda s: s.name)]
    return ModelList(data=cards)
