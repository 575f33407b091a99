"""Lambda-style errors: `x-amzn-ErrorType` names the exception, the body carries the message.

Bodies also carry Hearth's own `{"error": {"type", "message"}}`, so that every error Hearth answers
has that shape; botocore reads the code from the header and the message from `message`.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response

from hearth.api.errors import ApiError

# Hearth's API error types -> (HTTP status, Lambda exception).
FROM_HEARTH: dict[str, tuple[int, str]] = {
    "NotFound": (404, "ResourceNotFoundException"),
    "Conflict": (409, "ResourceConflictException"),
    "ValidationError": (400, "InvalidParameterValueException"),
    "InvalidJSON": (400, "InvalidRequestContentException"),
    "BuildFailed": (400, "InvalidParameterValueException"),
    "PayloadTooLarge": (413, "RequestTooLargeException"),
    "TooManyRequests": (429, "TooManyRequestsException"),
    "UnsupportedMediaType": (415, "UnsupportedMediaTypeException"),
    "Unauthorized": (403, "UnrecognizedClientException"),
    "Forbidden": (403, "AccessDeniedException"),
    "QuotaExceeded": (403, "AccessDeniedException"),
}
# Fields of Hearth's errors that Lambda errors carry too.
PASSED_ON = ("build_id", "log_tail", "fields", "quota", "limit", "requested", "capability")


class LambdaError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def not_found(name: str, arn: str | None = None) -> LambdaError:
    return LambdaError(404, "ResourceNotFoundException", f"Function not found: {arn or name}")


def invalid(message: str) -> LambdaError:
    return LambdaError(400, "InvalidParameterValueException", message)


def from_api_error(exc: ApiError) -> LambdaError:
    status, code = FROM_HEARTH.get(exc.error_type, (500, "ServiceException"))
    extra = {k: v for k, v in exc.extra.items() if k in PASSED_ON}
    return LambdaError(status, code, exc.message, dict(exc.headers or {}), **extra)


def error_response(exc: LambdaError, request_id: str | None = None) -> Response:
    body = {
        "Type": "User" if exc.status < 500 else "Service",
        "message": exc.message,
        **exc.extra,
        "error": {"type": exc.code, "message": exc.message},
    }
    headers = {**exc.headers, "x-amzn-ErrorType": exc.code}
    if request_id:
        headers["x-amzn-RequestId"] = request_id
    return Response(orjson.dumps(body), status_code=exc.status, headers=headers, media_type="application/json")
