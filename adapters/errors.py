"""Typed errors shared by every layer.

Each carries the HTTP status and OpenAI error `type`/`code` it maps to, so the server has
one handler and the CLIs one printer; nobody matches on message text.
"""

from __future__ import annotations


class LoramuxError(Exception):
    """Base of every error loramux raises on purpose."""

    status_code: int = 500
    type: str = "internal_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides the body (e.g. Retry-After)."""
        return {}


class InvalidRequest(LoramuxError):
    """The caller asked for something malformed; `param` names the field to fix."""

    status_code = 400
    type = "invalid_request_error"


class Forbidden(LoramuxError):
    """The caller may not do this: a key without the right, or a path the server does not load from."""

    status_code = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(LoramuxError):
    """Unknown name. Also used for names the caller may not see: never reveals existence."""

    status_code = 404
    type = "invalid_request_error"
    code = "model_not_found"


class Conflict(LoramuxError):
    """The request contradicts the current state (e.g. deleting a version an alias uses)."""

    status_code = 409
    type = "invalid_request_error"
    code = "conflict"


class StoreUnavailable(LoramuxError):
    """The adapter store cannot be reached (S3 endpoint down, credentials refused...)."""

    status_code = 503
    type = "service_unavailable"
    code = "store_unavailable"
