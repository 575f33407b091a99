"""JSON errors: every error Hearth answers is `{"error": {"type": ..., "message": ..., ...}}`."""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers
        self.extra = extra


def error_body(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message, **extra}}


def not_found(name: str) -> ApiError:
    return ApiError(404, "NotFound", f"function {name!r} does not exist")


def field_error(field: str, message: str, status: int = 422) -> ApiError:
    return ApiError(status, "ValidationError", f"{field}: {message}", fields=[{"field": field, "message": message}])


HTTP_ERROR_TYPES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
}


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC from a file write, or SQLite's "database or disk is full", anywhere in the chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if "database or disk is full" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Turn a full disk into a clear 507 (the write did not happen) instead of an unexpected error."""
    try:
        yield
    except Exception as exc:
        if is_disk_full(exc):
            log.error("storage full: %s", exc)
            raise ApiError(507, "InsufficientStorage", "Hearth's data dir is full: nothing was changed") from exc
        raise


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> ORJSONResponse:
        return ORJSONResponse(
            error_body(exc.error_type, exc.message, **exc.extra), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> ORJSONResponse:
        fields = []
        for err in exc.errors():
            loc = [str(part) for part in err.get("loc", ()) if part not in ("body", "query", "path")]
            fields.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid")})
        message = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or "invalid request"
        return ORJSONResponse(error_body("ValidationError", message, fields=fields), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> ORJSONResponse:
        error_type = HTTP_ERROR_TYPES.get(exc.status_code, "HTTPError")
        return ORJSONResponse(error_body(error_type, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> ORJSONResponse:
        log.exception("unexpected error")
        return ORJSONResponse(
            error_body("InternalError", f"Hearth failed unexpectedly: {type(exc).__name__}"), status_code=500
        )
