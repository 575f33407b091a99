"""What one HTTP client may hold of the API server: header bytes, time to send a request, connections.

uvicorn bounds none of this for its httptools parser, the one Hearth runs (h11 takes ~1.8x the CPU per request):
llhttp takes request headers of any size (httptools even joins a long header's pieces by repeated
concatenation), a new connection has no timer until its first response (only the keep-alive timer
after it), and `limit_concurrency` answers its 503 only once the headers are in, counts the connection
asking as one over, counts running requests too, and turns away long-kept connections alike. So this is
uvicorn's httptools protocol with:

- the request line and headers bounded to `max_header_bytes`: bytes fed to the parser while the headers
  are incomplete are counted (so a never-ending header is cut after about that much, not buffered), and
  the parsed head is measured exactly when it ends; over it: 431;
- the headers due within `header_timeout_s` of the connection opening (first request) or of their first
  byte (later requests on a kept-alive connection): else 408 (or a silent close if nothing came at all);
- the body due within `body_timeout_s` of the headers, plus a second per `body_min_rate` bytes received
  (so a large upload at a decent rate is never cut, a dribble is); time while the server itself holds
  reading back (flow control, `Expect: 100-continue`) is not the client's: else 408 or a close;
- at most `max_connections` open connections: one opened beyond them is answered 503 (JSON, with
  Retry-After) to its first request and closed; connections already open are never turned away.

Rejections write their answer, stop sending (FIN), discard what still arrives for `LINGER_S`, then
close: a client still sending gets the answer instead of a reset that would destroy it.

Both this protocol and the unbounded one write a response's head together with its first body bytes
(`CoalescingHttpToolsProtocol`): uvicorn writes them separately, two syscalls and two TCP segments per
small response.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

LINGER_S = 2.0
KEEP_ALIVE_SLACK_S = 0.001  # uvloop's timers run in whole ms: a timer that fires within this is on time
COALESCE_MAX_BYTES = 64 * 1024  # a larger first body chunk is written after the head, not copied onto it
# Request line overhead beyond the method and target: " HTTP/1.1\r\n"; each header adds ": " and "\r\n".
REQUEST_LINE_OVERHEAD = 11
HEADER_OVERHEAD = 4


@dataclass(frozen=True)
class HttpLimits:
    """0 turns a bound off; all off runs uvicorn's own protocol, only writing heads with bodies."""

    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    body_min_rate: int = 64 * 1024
    max_connections: int = 1000

    @property
    def active(self) -> bool:
        return bool(self.max_header_bytes or self.header_timeout_s or self.body_timeout_s or self.max_connections)


def error_response(status: int, reason: bytes, error_type: str, message: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"error": {"type": error_type, "message": message}})
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n%s\r\n"
        % (status, reason, len(body), extra)
    ) + body


class HeadHoldingTransport:
    """A request cycle's view of the connection: holds the response's head until the body's first write.

    Only a head with a `content-length` on a response that has a body (not HEAD) is held: uvicorn then
    always writes the body (`b""` too), and Starlette sends it right after the head. A chunked
    (streamed) response's head goes out at once, so a stream's client sees its headers before the first
    event.
    """

    __slots__ = ("cycle", "head", "head_done", "transport")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self.transport = transport
        self.cycle = cycle
        self.head: bytes | None = None
        self.head_done = False

    def write(self, data: bytes) -> None:
        head = self.head
        if head is not None:
            self.head = None
            if len(data) <= COALESCE_MAX_BYTES:
                self.transport.write(head + data)
                return
            self.transport.write(head)
        elif not self.head_done and self.cycle.response_started:  # uvicorn writes the head first
            self.head_done = True
            cycle = self.cycle
            if cycle.chunked_encoding is False and cycle.scope["method"] != "HEAD":
                self.head = data
                return
        self.transport.write(data)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        if self.head is not None:  # a response cut short after its head: the head goes out, as uvicorn's would
            self.transport.write(self.head)
            self.head = None
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing a response's head and its (small) body in one write, and
    timing idle kept-alive connections with one lazy timer.

    uvicorn sets a keep-alive timer after every response and cancels it when the next request's first
    bytes arrive: a uvloop timer set and cancelled costs ~5 µs, on every call of a busy connection.
    Here a connection keeps one timer: a response notes when the connection went idle and arms the
    timer only if none is armed; when it fires, it closes the connection if it has been idle for the
    whole keep-alive time, waits for the rest if it went idle later, and does nothing while a request
    is under way (its response arms the timer again). Same closing times, no timer per request.
    """

    idle_since: float | None = None  # loop time of the last response, while no request is under way

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:  # a new request's cycle
            cycle.transport = cast(asyncio.Transport, HeadHoldingTransport(self.transport, cycle))

    def _unset_keepalive_if_required(self) -> None:  # uvicorn's hook: bytes arrived, or a response ended
        self.idle_since = None

    def on_response_complete(self) -> None:  # uvicorn's, with the lazy timer
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # the next pipelined request starts
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.keep_alive_due)

    def keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        if self.transport.is_closing() or self.idle_since is None:
            return
        left = self.idle_since + self.timeout_keep_alive - self.loop.time()
        if left > KEEP_ALIVE_SLACK_S:
            self.timeout_keep_alive_task = self.loop.call_later(left, self.keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.idle_since = None
        if self.timeout_keep_alive_task is not None:  # not left to hold the connection until it fires
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None


class BoundedHttpToolsProtocol(CoalescingHttpToolsProtocol):
    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # uvicorn's check is replaced by `admitted` below
        self.timer: asyncio.TimerHandle | None = None
        self.admitted = True
        self.rejected = False
        self.awaiting_headers = True  # between requests or inside a request's head
        self.head_started = False  # a byte of the current request's head has arrived
        self.head_bytes = 0  # bytes fed while the head was incomplete from the chunk's start to its end
        self.chunk_bytes = 0
        self.heads_in_chunk = 0
        self.body_started_at = 0.0
        self.body_bytes = 0

    # ----- timers (one at a time: header, body, linger)
    def arm(self, delay_s: float, handler: Any) -> None:
        self.disarm()
        self.timer = self.loop.call_later(delay_s, handler)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # ----- connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap = self.limits.max_connections
        self.admitted = not cap or len(self.connections) <= cap
        if self.limits.header_timeout_s:
            self.arm(self.limits.header_timeout_s, self.header_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.rejected:
            return  # lingering: discard
        head_before = self.awaiting_headers
        if head_before:
            self.head_started = True
        self.chunk_bytes = len(data)
        self.heads_in_chunk = 0
        super().data_received(data)
        if self.rejected or self.transport.is_closing():
            return
        # Timers only for what is still incomplete after this chunk: a request that arrives whole arms none.
        if not self.awaiting_headers:
            self.body_bytes += len(data)
            if self.timer is None and self.limits.body_timeout_s:
                self.body_started_at = time.monotonic()
                self.arm(self.limits.body_timeout_s, self.body_timed_out)
            return
        if self.head_started and self.timer is None and self.limits.header_timeout_s:
            self.arm(self.limits.header_timeout_s, self.header_timed_out)  # a later request on a kept-alive connection
        # The head is still incomplete: if it was all through this chunk, every byte of it was head.
        self.head_bytes = self.head_bytes + len(data) if head_before and not self.heads_in_chunk else 0
        limit = self.limits.max_header_bytes
        if limit and self.head_bytes > limit:
            self.reject_head_too_large()

    # ----- parser callbacks
    def on_message_begin(self) -> None:
        self.awaiting_headers = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.awaiting_headers = False
        self.heads_in_chunk += 1
        self.disarm()
        limit = self.limits.max_header_bytes
        # Measured exactly only when the bytes fed could hold more than the limit.
        if limit and self.head_bytes + self.chunk_bytes > limit and self.head_size() > limit:
            self.reject_head_too_large()
            return
        if not self.admitted:
            self.reject(
                503,
                b"Service Unavailable",
                "ServiceUnavailable",
                f"the server holds its limit of {self.limits.max_connections} open connections "
                "(HEARTH_HTTP_MAX_CONNECTIONS); retry later",
                b"retry-after: 1\r\n",
            )
            return
        self.head_bytes = 0
        self.body_bytes = 0
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.rejected:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.rejected:
            return
        self.awaiting_headers = True
        self.head_started = False
        self.disarm()
        super().on_message_complete()

    def head_size(self) -> int:
        return (
            len(self.url)
            + len(self.parser.get_method())
            + REQUEST_LINE_OVERHEAD
            + sum(len(name) + len(value) + HEADER_OVERHEAD for name, value in self.headers)
        )

    # ----- timeouts and rejections
    def header_timed_out(self) -> None:
        self.timer = None
        if not self.awaiting_headers or self.transport.is_closing():
            return
        if not self.head_started:  # nothing sent at all: close like an idle keep-alive connection
            self.transport.close()
            return
        self.reject(
            408,
            b"Request Timeout",
            "RequestTimeout",
            f"request headers not received within {self.limits.header_timeout_s:g} s",
        )

    def body_timed_out(self) -> None:
        self.timer = None
        if self.awaiting_headers or self.transport.is_closing():
            return
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            # The server holds reading back (the app has not taken the body yet): not the client's time.
            self.arm(self.limits.body_timeout_s, self.body_timed_out)
            return
        allowed = self.limits.body_timeout_s + self.body_bytes / max(self.limits.body_min_rate, 1)
        left = self.body_started_at + allowed - time.monotonic()
        if left > 0:
            self.arm(left, self.body_timed_out)
            return
        self.reject(
            408,
            b"Request Timeout",
            "RequestTimeout",
            f"request body not received in time ({self.limits.body_timeout_s:g} s, plus 1 s per "
            f"{self.limits.body_min_rate} bytes received)",
        )

    def reject_head_too_large(self) -> None:
        self.reject(
            431,
            b"Request Header Fields Too Large",
            "RequestHeaderFieldsTooLarge",
            f"request line and headers over the limit of {self.limits.max_header_bytes} bytes",
        )

    def reject(self, status: int, reason: bytes, error_type: str, message: str, extra: bytes = b"") -> None:
        """Answer `status` unless a response is under way, stop reading the request, and close soon."""
        self.rejected = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            answered = cycle.response_started
            cycle.disconnected = True  # the app's receive() gets http.disconnect, its sends are dropped
            cycle.message_event.set()
            if answered:
                self.transport.close()
                return
        self.flow.resume_reading()  # keep reading, to discard
        self.transport.write(error_response(status, reason, error_type, message, extra))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.arm(LINGER_S, self.transport.close)


def protocol_for(limits: HttpLimits) -> type[BoundedHttpToolsProtocol]:
    """The protocol class uvicorn is given (`http=`), with `limits` bound."""
    return type("HearthHttpProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})
