"""Turning an InvocationResult into an HTTP response, and HTTP requests into Lambda-style events."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from hearth.engine.engine import InvocationResult

STATUS_HTTP = {"ok": 200, "error": 500, "timeout": 504, "oom": 502, "crashed": 502, "throttled": 429}


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits, which Python's json (the agents) allows
        return json.dumps(value, separators=(",", ":")).encode()


def hearth_headers(res: InvocationResult) -> dict[str, str]:
    return {
        "X-Hearth-Invocation-Id": res.invocation_id,
        "X-Hearth-Duration-Ms": f"{res.duration_ms:.3f}",
        "X-Hearth-Cold": "true" if res.cold else "false",
        "X-Hearth-Path": res.path or "none",
        "X-Hearth-Version": str(res.version),
    }


def error_response(res: InvocationResult) -> Response:
    headers = hearth_headers(res)
    if res.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(res.retry_after_s)))
    error = dict(res.error or {"type": "Error", "message": "the invocation failed"})
    error["invocation_id"] = res.invocation_id
    return Response(
        dumps({"error": error}),
        status_code=STATUS_HTTP[res.status],
        headers=headers,
        media_type="application/json",
    )


def result_response(res: InvocationResult) -> Response:
    if res.status != "ok":
        return error_response(res)
    return Response(dumps(res.result), headers=hearth_headers(res), media_type="application/json")


async def http_event(request: Request, path: str, body: bytes) -> dict[str, Any]:
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    scope = request.scope
    return {
        "method": scope["method"],
        "path": path,
        "query": dict(request.query_params) if scope.get("query_string") else {},
        "headers": {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
        "body": text,
        "isBase64Encoded": encoded,
        "requestContext": {"http": {"method": scope["method"], "path": path}},
    }


def proxy_response(res: InvocationResult) -> Response:
    """API-Gateway proxy style: a result with `statusCode` sets status, headers and body."""
    if res.status != "ok":
        return error_response(res)
    result = res.result
    headers = hearth_headers(res)
    if not (isinstance(result, dict) and "statusCode" in result):
        return Response(dumps(result), headers=headers, media_type="application/json")
    status = result.get("statusCode")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        res.status = "error"
        res.error = {
            "type": "InvalidResponse",
            "message": f"statusCode must be an integer 100-599, got {status!r}",
        }
        return error_response(res)
    for key, value in (result.get("headers") or {}).items():
        if isinstance(key, str) and key and "\n" not in key + str(value) and "\r" not in key + str(value):
            headers[key] = str(value)
    has_type = any(key.lower() == "content-type" for key in headers)
    body = result.get("body", "")
    if body is None:
        content = b""
    elif isinstance(body, str):
        try:
            content = base64.b64decode(body, validate=True) if result.get("isBase64Encoded") else body.encode()
        except (binascii.Error, ValueError):
            res.status = "error"
            res.error = {
                "type": "InvalidResponse",
                "message": "isBase64Encoded is true but body is not base64",
            }
            return error_response(res)
        if not has_type:
            headers["content-type"] = "text/plain; charset=utf-8"
    else:
        content = dumps(body)
        if not has_type:
            headers["content-type"] = "application/json"
    return Response(content, status_code=status, headers=headers)
