"""Typed errors and validation failures -> OpenAI-shaped error responses.

Anything unexpected is answered by `middleware.ContextMiddleware` (a 500 with the request id)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from loramux.adapters.errors import LoramuxError

from .context import request_context
from .openai_protocol import error_body

log = logging.getLogger("loramux.server")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None
    """Machine-readable (`invalid_api_key`, `model_not_found`, ...) or null; never the HTTP status."""


class ErrorResponse(BaseModel):
    """OpenAI's error body: every 4xx and 5xx loramux sends has this shape."""

    error: ErrorDetail


# What each status means on loramux, as /openapi.json describes it to clients.
_MEANING = {
    400: "A malformed request or a bad parameter; `param` names the field.",
    401: "A missing or unknown API key (`invalid_api_key`).",
    403: "A live key that may not do this (admin calls), or a path the server does not load from.",
    404: "An unknown adapter, or one this key may not use: the same answer (`model_not_found`).",
    409: "The request contradicts the server's state (e.g. unpinning what is not pinned).",
    429: "Over the key's quota; `Retry-After` says when to try again.",
    500: "An unexpected failure; the server log has the `x-request-id`.",
    503: "The engine or the adapter store does not answer.",
}
_HEADERS = {429: {"Retry-After": {"description": "Seconds until the quota admits the request.",
                                  "schema": {"type": "integer"}}}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that can answer these statuses (and 500, which any route can)."""
    return {status: {"model": ErrorResponse, "description": _MEANING[status], **({"headers": _HEADERS[status]}
                     if status in _HEADERS else {})} for status in sorted({*statuses, 500})}


def _without_422(generate: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """FastAPI's schema without its 422 answers: a validation failure here is a 400 (OpenAI's)."""

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI caches it; removing twice is harmless
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema
    return openapi


def _param(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    app.openapi = _without_422(app.openapi)

    @app.exception_handler(LoramuxError)
    async def _typed(request: Request, exc: LoramuxError) -> JSONResponse:
        request_context(request).error = exc.code or exc.type
        if exc.status_code >= 500:
            log.error("request failed", extra={"request_id": request_context(request).request_id,
                                               "error": exc.message})
        return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code),
                            status_code=exc.status_code, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(error_body("The request body is not valid JSON.",
                                           "invalid_request_error", None, "invalid_json"), status_code=400)
        first = errors[0] if errors else {}
        problems = "; ".join(f"{_param(tuple(e.get('loc', ()))) or 'body'}: {e.get('msg')}" for e in errors)
        return JSONResponse(error_body(f"Invalid request: {problems}", "invalid_request_error",
                                       _param(tuple(first.get("loc", ()))), "invalid_value"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's 404 and 405; a 405 keeps the `Allow` header Starlette gives it (RFC 9110)."""
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", None, None),
                            status_code=exc.status_code, headers=exc.headers)


def sse_error(exc: BaseException) -> str:
    """An error event for a stream that already sent its 200 headers."""
    if isinstance(exc, LoramuxError):
        body = error_body(exc.message, exc.type, exc.param, exc.code)
    else:
        log.error("stream failed", exc_info=exc)
        body = error_body("Internal server error while streaming.", "internal_error", None, None)
    return f"data: {json.dumps(body)}\n\n"
