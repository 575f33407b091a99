"""The HTTP trigger served straight from ASGI, ahead of FastAPI's middleware and routing.

/fn/... is the platform's hot path; FastAPI's stack (middleware, routing, dependency solving) cost
about a quarter of the host's CPU per warm invocation in a py-spy profile. The FastAPI route of
the same path stays for the OpenAPI docs and behaves identically (both call `serve_trigger`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from hearth.api.errors import ApiError, error_body
from hearth.api.invoke.router import TRIGGER_METHODS, serve_trigger

log = logging.getLogger(__name__)


class HttpTriggerFastPath:
    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.methods = frozenset(TRIGGER_METHODS)

    def __getattr__(self, name: str) -> Any:  # `.state`, `.openapi()` ... of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/fn/") or scope["method"] not in self.methods:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        try:
            response = await serve_trigger(self.app.state.hearth, Request(scope, receive))
        except ApiError as exc:
            response = ORJSONResponse(
                error_body(exc.error_type, exc.message, **exc.extra), status_code=exc.status, headers=exc.headers
            )
        except Exception:
            log.exception("unexpected error in the HTTP trigger")
            response = ORJSONResponse(error_body("InternalError", "Hearth failed unexpectedly"), status_code=500)
        await response(scope, receive, send)
