"""JSON bodies on /api whatever content type they declare.

`curl -d '{...}'` (the README's examples, and what users copy) sends
`application/x-www-form-urlencoded`; FastAPI reads a body as JSON only when it is declared JSON. /api
takes no forms, so a body declared as anything but multipart or a zip (the bundle uploads) is read
as JSON: one that is not JSON is still a 422.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

KEPT_TYPES = (
    b"application/json",
    b"multipart/form-data",
    b"application/zip",
    b"application/x-zip-compressed",
    b"application/octet-stream",
)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class JsonBodies:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in BODY_METHODS and scope["path"].startswith("/api/"):
            scope = {**scope, "headers": [as_json(name, value) for name, value in scope["headers"]]}
        await self.app(scope, receive, send)


def as_json(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    if name.lower() != b"content-type":
        return (name, value)
    kind = value.split(b";")[0].strip().lower()
    if kind in KEPT_TYPES or kind.endswith(b"+json"):
        return (name, value)
    return (name, b"application/json")
