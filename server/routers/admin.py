"""Adapter admin: vLLM-compatible POST /v1/load_lora_adapter and /v1/unload_lora_adapter, and
loramux's residency calls under /v1/admin/adapters (list, pin, unpin, reload).

Admin key only. The catalog admits an adapter (checked against the served base) before the
engine sees it, so a bad adapter is a 400 listing every problem, never a broken engine.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from loramux.adapters.errors import Conflict

from ..catalog import AdapterCatalog
from ..errors import error_responses
from ..keys import InvalidApiKey, PermissionDenied
from ..openai_protocol import AdapterNameRequest, LoadAdapterRequest, UnloadAdapterRequest
from .deps import Catalog

router = APIRouter()


def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """The server's --admin-key, or a key created with --admin; another live key is a 403."""
    expected, keyring = request.app.state.settings.admin_key, request.app.state.keyring
    given = (authorization or "").removeprefix("Bearer ").strip()
    if expected and secrets.compare_digest(given.encode(), expected.encode()):
        return
    if keyring is not None:
        if keyring.check(authorization).admin:
            return
        raise PermissionDenied("This key may not call admin endpoints; use a key created with "
                               "`loramux keys create --admin` or the server's --admin-key.")
    if not expected:
        raise InvalidApiKey("Adapter admin is disabled: start the server with --admin-key "
                            "(or LORAMUX_ADMIN_KEY), or with --keys and an --admin key, to enable it.")
    raise InvalidApiKey("Incorrect admin key provided.")


Admin = Annotated[None, Depends(require_admin)]
# Admin refusals (401, 403), then what each call can meet: 404 unknown name, 409 the state refuses
# (not pinned, every slot pinned, the base named), 503 the engine or the store.
_ADMIN = (401, 403)


async def _reload(catalog: AdapterCatalog, name: str):
    """Forget cached alias answers and load what `name` names now."""
    catalog.refresh()
    handle = await catalog.acquire(name)
    await catalog.release(handle)
    if handle is None:
        raise Conflict(f"`{name}` is the base model, always loaded; name an adapter", param="name")
    return handle


@router.post("/v1/load_lora_adapter", responses=error_responses(*_ADMIN, 400, 404, 409, 503))
async def load_adapter(body: LoadAdapterRequest, catalog: Catalog, _: Admin):
    if body.lora_path is not None:
        handle = await catalog.load(body.lora_name, catalog.admissible_path(Path(body.lora_path)))
    else:  # a registry name, read afresh (after an alias move)
        handle = await _reload(catalog, body.lora_name)
    return JSONResponse({"status": "loaded", "lora_name": body.lora_name, "version": handle.version[:12]})


@router.post("/v1/unload_lora_adapter", responses=error_responses(*_ADMIN, 400, 404))
async def unload_adapter(body: UnloadAdapterRequest, catalog: Catalog, _: Admin):
    await catalog.unload(body.lora_name)
    return JSONResponse({"status": "unloaded", "lora_name": body.lora_name})


@router.get("/v1/admin/adapters", responses=error_responses(*_ADMIN, 503))
async def list_adapters(catalog: Catalog, _: Admin):
    """Every adapter this server can serve: version, state (device | host | store), pin, in-flight, load times."""
    return JSONResponse({"object": "list", "data": [asdict(row) for row in await catalog.states()]})


@router.post("/v1/admin/adapters/pin", responses=error_responses(*_ADMIN, 400, 404, 409, 503))
async def pin_adapter(body: AdapterNameRequest, catalog: Catalog, _: Admin):
    handle = await catalog.pin(body.name)
    return JSONResponse({"status": "pinned", "name": body.name, "version": handle.version[:12]})


@router.post("/v1/admin/adapters/unpin", responses=error_responses(*_ADMIN, 400, 409))
async def unpin_adapter(body: AdapterNameRequest, catalog: Catalog, _: Admin):
    await catalog.unpin(body.name)
    return JSONResponse({"status": "unpinned", "name": body.name})


@router.post("/v1/admin/adapters/reload", responses=error_responses(*_ADMIN, 400, 404, 409, 503))
async def reload_adapter(body: AdapterNameRequest, catalog: Catalog, _: Admin):
    handle = await _reload(catalog, body.name)
    return JSONResponse({"status": "loaded", "name": body.name, "version": handle.version[:12]})
