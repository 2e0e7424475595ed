"""GET /health (200 only when the engine answers) and GET /metrics (Prometheus text)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from ..engine.protocol import EngineUnavailable
from ..errors import error_responses
from .deps import EngineDep

router = APIRouter()


class Health(BaseModel):
    status: Literal["ok"] = "ok"


@router.get("/health", responses=error_responses(503))
async def health(engine: EngineDep) -> Health:
    """Probes read the status code; the body says the same for people."""
    await engine.check_health()  # EngineUnavailable -> 503
    return Health()


class PrometheusText(Response):
    media_type = CONTENT_TYPE_LATEST


@router.get("/metrics", response_class=PrometheusText, responses={
    200: {"description": "Prometheus text: vLLM's `vllm:*` series and loramux's `loramux_*`.",
          "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
async def metrics(request: Request, engine: EngineDep) -> PrometheusText:
    """The engine's health is asked at each scrape, so an alert sees a dead engine behind a live server."""
    try:
        await engine.check_health()
        healthy = 1
    except EngineUnavailable:
        healthy = 0
    request.app.state.metrics.engine_healthy.set(healthy)
    return PrometheusText(request.app.state.metrics.render())
