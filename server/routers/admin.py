"""vLLM-compatible adapter admin: POST /v1/load_lora_adapter, /v1/unload_lora_adapter.

Admin key only. An adapter is validated against the served base before the engine sees
it, so a bad adapter is a 400 listing every problem, never a broken engine.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from loramux.adapters.errors import LoramuxError, NotFound
from loramux.adapters.names import AdapterRef

from ..engine.protocol import AdapterSpec
from ..openai_protocol import LoadAdapterRequest, UnloadAdapterRequest
from ..startup import validate_for_serving

router = APIRouter()


class InvalidAdminKey(LoramuxError):
    status_code = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    expected = request.app.state.settings.admin_key
    if not expected:
        raise InvalidAdminKey("Adapter admin is disabled: start the server with --admin-key "
                              "(or LORAMUX_ADMIN_KEY) to enable it.")
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise InvalidAdminKey("Incorrect admin key provided.")


Admin = Annotated[None, Depends(require_admin)]


@router.post("/v1/load_lora_adapter")
async def load_adapter(body: LoadAdapterRequest, request: Request, _: Admin):
    AdapterRef.parse(body.lora_name)  # TENANT/NAME, safe characters; raises InvalidRequest
    state = request.app.state
    path = Path(body.lora_path)
    validate_for_serving(body.lora_name, path, state.settings)
    await state.engine.add_adapter(AdapterSpec(body.lora_name, path))
    return JSONResponse({"status": "loaded", "lora_name": body.lora_name})


@router.post("/v1/unload_lora_adapter")
async def unload_adapter(body: UnloadAdapterRequest, request: Request, _: Admin):
    if not await request.app.state.engine.remove_adapter(body.lora_name):
        raise NotFound(f"The model `{body.lora_name}` does not exist.", param="lora_name")
    return JSONResponse({"status": "unloaded", "lora_name": body.lora_name})
