"""Reading a request body under a size cap: the one reader the API's routes share."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from starlette.requests import ClientDisconnect


async def read_capped_body(request: Request, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """The body, refused with `too_large()` as soon as it is over `limit` bytes (as declared, or as it
    arrives); kept for the route (Starlette's `request.body()` returns it from then on).

    Reads the ASGI messages itself rather than through `request.stream()`: this runs on every warm
    invocation, and the async generator and header parsing that would add show in its profile."""
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise too_large()
            break
    chunks: list[bytes] = []
    size = 0
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise too_large()
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = body
    return body
