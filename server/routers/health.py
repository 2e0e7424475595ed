"""GET /health (200 only when the engine answers) and GET /metrics (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .deps import EngineDep

router = APIRouter()


@router.get("/health")
async def health(engine: EngineDep) -> Response:
    await engine.check_health()  # EngineUnavailable -> 503
    return Response(status_code=200)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
