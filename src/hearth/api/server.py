"""Runs the API under uvicorn, telling long-lived responses (log streams) when shutdown begins."""

from __future__ import annotations

import threading
import warnings
from types import FrameType

import uvicorn

from hearth.api.http_limits import CoalescingHttpToolsProtocol, HttpLimits, protocol_for

# Set on SIGINT/SIGTERM, before uvicorn waits for open responses: Server-Sent Event streams end at once
# instead of holding shutdown for the whole graceful timeout.
SHUTTING_DOWN = threading.Event()


class HearthUvicorn(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        SHUTTING_DOWN.set()
        super().handle_exit(sig, frame)


def run_server(host: str, port: int, keep_alive_s: float = 75.0, limits: HttpLimits | None = None) -> None:
    limits = limits or HttpLimits()
    # FastAPI deprecates ORJSONResponse (which Hearth still uses) with a warning per request.
    warnings.filterwarnings("ignore", message=".*ORJSONResponse is deprecated.*")
    config = uvicorn.Config(
        "hearth.api.app:create_asgi_app",
        factory=True,
        host=host,
        port=port,
        loop="uvloop",
        # uvicorn's httptools protocol, writing a response's head with its body, with bounds on header
        # size, header and body time, and connections
        http=protocol_for(limits) if limits.active else CoalescingHttpToolsProtocol,
        ws="none",  # Hearth serves no WebSocket: an Upgrade request is answered as plain HTTP
        server_header=False,  # no `server: uvicorn` on every response: it tells clients nothing they need
        log_level="warning",
        # The access log logs at INFO, below that level, so it never printed a line: off, uvicorn also skips
        # building its arguments (client address, path) on every response. Invocation records are the log.
        access_log=False,
        timeout_graceful_shutdown=10,
        # Longer than clients' and load balancers' idle pools (httpx 5 s, ALB 60 s): a server that closes
        # an idle connection first races a client sending on it, which then sees a disconnect.
        timeout_keep_alive=int(keep_alive_s),
    )
    HearthUvicorn(config).run()
