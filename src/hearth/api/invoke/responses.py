"""Turning an InvocationResult into the API's HTTP response (the trigger's: hearth.api.invoke.proxy)."""

from __future__ import annotations

from fastapi.responses import Response

from hearth.engine.encoding import dumps
from hearth.engine.engine import InvocationResult

STATUS_HTTP = {"ok": 200, "error": 500, "timeout": 504, "oom": 502, "crashed": 502, "throttled": 429}


def hearth_raw_headers(res: InvocationResult) -> list[tuple[bytes, bytes]]:
    """Hearth's headers on every invocation's response, as ASGI sends them."""
    return [
        (b"x-hearth-invocation-id", res.invocation_id.encode("latin-1")),
        (b"x-hearth-duration-ms", b"%.3f" % res.duration_ms),
        (b"x-hearth-cold", b"true" if res.cold else b"false"),
        (b"x-hearth-path", (res.path or "none").encode("latin-1")),
        (b"x-hearth-version", b"%d" % res.version),
    ]


def hearth_headers(res: InvocationResult) -> dict[str, str]:
    """The same, for a response that adds its own (Starlette's headers argument)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in hearth_raw_headers(res)}


class JsonResponse(Response):
    """An encoded JSON body with Hearth's headers, built without Starlette's header normalising: this is
    every warm call's response, and that work showed in its profile. `headers` still reads and edits them."""

    media_type = "application/json"

    def __init__(self, body: bytes, res: InvocationResult, status_code: int = 200) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = [
            *hearth_raw_headers(res),
            (b"content-length", b"%d" % len(body)),
            (b"content-type", b"application/json"),
        ]


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
    # The agent's encoding of the result, as it is.
    return JsonResponse(res.result_json or b"null", res)
