"""Request ids, the per-request context and its outcome, and the last-resort 500, as plain ASGI.

Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware costs
measurable time per streamed chunk, and it cannot put `x-request-id` on a 500 raised below it.
"""

from __future__ import annotations

import json
import logging
import uuid

from .context import ADMISSION_KEY, SCOPE_KEY, RequestContext
from .metrics import Metrics
from .openai_protocol import error_body

log = logging.getLogger("loramux.server")
COUNTED = {"/v1/completions": "completions", "/v1/chat/completions": "chat"}
ROUTING_KEY = b"x-loramux-routing-key"
_INTERNAL = json.dumps(error_body("Internal server error; see the server log for this request id.",
                                  "internal_error", None, None)).encode()


class ContextMiddleware:
    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1") or uuid.uuid4().hex
        key = headers.get(ROUTING_KEY, b"").decode("latin-1") or None
        ctx = scope[SCOPE_KEY] = RequestContext(rid, COUNTED.get(scope["path"]), routing_key=key)
        if ADMISSION_KEY in scope:  # a retry of a request another replica had taken counts once
            ctx.admission = scope[ADMISSION_KEY]
        status, started = 500, False

        async def send_with_id(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                extra = ctx.headers() if ctx.headers is not None else {}
                message["headers"] = [*message.get("headers", []), (b"x-request-id", ctx.request_id.encode()),
                                      *((k.encode(), v.encode()) for k, v in extra.items())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unexpected error", extra=ctx.log_fields())
            if not started:
                await send_with_id({"type": "http.response.start", "status": 500,
                                    "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": _INTERNAL})
        finally:
            outcome = await ctx.close(status)
            if ctx.endpoint:
                self.metrics.record(outcome)
                log.info("request", extra=ctx.log_fields() | {"status": status, "seconds": round(outcome.seconds, 4)})
