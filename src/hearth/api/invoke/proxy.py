"""The HTTP trigger's answer: a function's result read by the rules of its payload format, as AWS reads it.

2.0 (function URLs, HTTP APIs): a result with `statusCode` is a response (`headers`, `cookies` -> one
Set-Cookie each, `body`, `isBase64Encoded`); any other JSON result is sent as JSON with status 200.
1.0 (API Gateway proxy): the result must be a response (`headers` and `multiValueHeaders` merged);
anything else is a malformed response, 502.

A public trigger answers a failed invocation as AWS's front does, `502 {"message": "Internal Server
Error"}`, without the function's error: its owner reads that in the invocation record. A trigger
that needs a key answers Hearth's own error body (the caller holds the owner's key).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from fastapi.responses import Response
from starlette.datastructures import MutableHeaders

from hearth.api.invoke.responses import JsonResponse, dumps, error_response, hearth_headers
from hearth.engine.engine import InvocationResult

# What a public trigger answers when the invocation did not give a response (AWS's gateway bodies).
PUBLIC_FAILURES: dict[str, tuple[int, str]] = {
    "throttled": (429, "Too Many Requests"),
    "timeout": (504, "Endpoint request timed out"),
}
PUBLIC_FAILURE = (502, "Internal Server Error")
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field names
FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # visible Latin-1, spaces and tabs: no line breaks
JSON_OBJECT = re.compile(rb"[ \t\r\n]*\{")  # a JSON text that is an object
# Set by Hearth's server from the body it sends, never taken from the function's headers.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class MalformedResponse(ValueError):
    """The function's result is not a response its payload format allows."""


def trigger_response(res: InvocationResult, payload_format: str, *, public: bool) -> Response:
    if res.status == "ok":
        try:
            return http_response(res, payload_format)
        except MalformedResponse as exc:
            res.status = "error"
            res.error = {"type": "InvalidResponse", "message": str(exc)}
    return public_failure(res) if public else error_response(res)


def public_failure(res: InvocationResult) -> Response:
    """AWS's gateway answer; the error the caller does not see goes to the invocation's log, as Lambda's
    runtime logs it (the record keeps its type and message too)."""
    error = res.error or {}
    if res.status == "error" and error:
        detail = error.get("traceback") or f"{error.get('type', 'Error')}: {error.get('message', '')}\n"
        res.stderr += ("" if not res.stderr or res.stderr.endswith("\n") else "\n") + f"[ERROR] {detail}"
    status, message = PUBLIC_FAILURES.get(res.status, PUBLIC_FAILURE)
    headers = hearth_headers(res)
    if res.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(res.retry_after_s)))
    return Response(dumps({"message": message}), status_code=status, headers=headers, media_type="application/json")


def http_response(res: InvocationResult, payload_format: str) -> Response:
    raw = res.result_json or b"null"
    # Only an object can be a response to unpack; any other result passes through as the agent encoded it.
    result = res.result if JSON_OBJECT.match(raw) else None
    is_response = isinstance(result, dict) and "statusCode" in result
    if payload_format == "1.0" and not is_response:
        raise MalformedResponse("payload format 1.0 needs a result with statusCode (and headers, body)")
    if not is_response:  # 2.0: any JSON value is the body of a 200
        return JsonResponse(raw, res)
    headers = hearth_headers(res)
    assert isinstance(result, dict)
    status = result.get("statusCode")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise MalformedResponse(f"statusCode must be an integer 100-599, got {status!r}")
    response = Response(status_code=status, headers=headers)
    out = response.headers
    if payload_format == "1.0":
        for name, values in merged_headers(result).items():
            for value in values:
                if name.lower() not in FRAMING_HEADERS:
                    out.append(name, value)
    else:
        for name, value in single_headers(result.get("headers")).items():
            if name.lower() not in FRAMING_HEADERS:
                out.append(name, value)
        for cookie in string_list(result.get("cookies"), "cookies"):
            out.append("set-cookie", cookie)
    set_body(response, out, result)
    return response


def header_value(name: str, value: Any) -> str:
    """`value` as a header value; a name or value HTTP cannot carry is a malformed response."""
    text = value if isinstance(value, str) else dumps(value).decode()
    if not TOKEN.fullmatch(name):
        raise MalformedResponse(f"{name!r} is not a header name")
    if not FIELD_VALUE.fullmatch(text):
        raise MalformedResponse(f"header {name!r} has a line break, a control or a non-Latin-1 character")
    return text


def single_headers(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise MalformedResponse("headers must be an object of strings")
    return {str(name): header_value(str(name), value) for name, value in raw.items()}


def string_list(raw: Any, what: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise MalformedResponse(f"{what} must be a list of strings")
    return [header_value("set-cookie" if what == "cookies" else what, value) for value in raw]


def merged_headers(result: dict[str, Any]) -> dict[str, list[str]]:
    """1.0: `headers` and `multiValueHeaders` merged into one list per name; a name-value pair in both
    is sent once (AWS: "only the values from multiValueHeaders will appear")."""
    raw_multi = result.get("multiValueHeaders")
    if raw_multi is not None and not isinstance(raw_multi, dict):
        raise MalformedResponse("multiValueHeaders must be an object of string lists")
    merged: dict[str, list[str]] = {}
    names: dict[str, str] = {}  # lower-case -> the spelling first seen
    for name, values in (raw_multi or {}).items():
        key = names.setdefault(str(name).lower(), str(name))
        merged.setdefault(key, []).extend(string_list(values, str(name)))
    for name, value in single_headers(result.get("headers")).items():
        key = names.setdefault(name.lower(), name)
        if value not in merged.setdefault(key, []):
            merged[key].append(value)
    return merged


def set_body(response: Response, headers: MutableHeaders, result: dict[str, Any]) -> None:
    body = result.get("body")
    has_type = "content-type" in headers
    if body is None:
        content = b""
    elif isinstance(body, str):
        if result.get("isBase64Encoded"):
            try:
                content = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                raise MalformedResponse("isBase64Encoded is true but body is not base64") from None
        else:
            content = body.encode()
        if not has_type:
            headers["content-type"] = "text/plain; charset=utf-8"
    else:  # not AWS's: a body that is not a string is sent as JSON
        content = dumps(body)
        if not has_type:
            headers["content-type"] = "application/json"
    response.body = content
    if response.status_code >= 200 and response.status_code not in (204, 304):
        headers["content-length"] = str(len(content))
