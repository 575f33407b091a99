"""Reading a request body under a size cap: the one reader the API's routes share."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request


async def read_capped_body(request: Request, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """The body, refused with `too_large()` as soon as it is over `limit` bytes (as declared, or as it
    arrives); kept for the route (Starlette's `request.body()` returns it from then on)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body
    return body
