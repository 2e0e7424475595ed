"""Typed errors and validation failures -> OpenAI-shaped error responses.

Anything unexpected is answered by `middleware.ContextMiddleware` (a 500 with the request id)."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from loramux.adapters.errors import LoramuxError

from .context import request_context
from .openai_protocol import error_body

log = logging.getLogger("loramux.server")


def _param(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
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
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", None, None),
                            status_code=exc.status_code)


def sse_error(exc: BaseException) -> str:
    """An error event for a stream that already sent its 200 headers."""
    if isinstance(exc, LoramuxError):
        body = error_body(exc.message, exc.type, exc.param, exc.code)
    else:
        log.error("stream failed", exc_info=exc)
        body = error_body("Internal server error while streaming.", "internal_error", None, None)
    return f"data: {json.dumps(body)}\n\n"
