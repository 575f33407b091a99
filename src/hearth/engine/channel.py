"""Frames over one agent stream (docs/protocol.md): the handshake, then requests multiplexed by `id`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from hearth.engine.protocol import HEADER, MAX_FRAME_BYTES, ProtocolError, decode_body, encode_frame
from hearth.engine.sandbox import FunctionInitError, SandboxCrashed

Frame = tuple[dict[str, Any], bytes | None]  # a frame's JSON object and its payload
__all__ = ["AgentChannel", "Frame", "ProtocolError", "encode_frame", "read_frame"]


async def read_frame(reader: asyncio.StreamReader, max_bytes: int = MAX_FRAME_BYTES) -> Frame:
    header = await reader.readexactly(HEADER.size)
    (length,) = HEADER.unpack(header)
    if length > max_bytes:
        raise ProtocolError(f"agent sent a frame of {length} bytes (limit {max_bytes})")
    return decode_body(await reader.readexactly(length))


class AgentChannel:
    """Request/response multiplexing over one agent stream; responses are matched by `id`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: dict[str, asyncio.Future[Frame]] = {}
        self._reader_task: asyncio.Task[None] | None = None
        self.closed = False
        self.close_reason: str | None = None
        self.hello: dict[str, Any] = {}
        self.init_log = ""

    async def _next_frame(self, timeout_s: float) -> dict[str, Any]:
        """The next frame before multiplexing starts; a broken stream is a crashed sandbox."""
        try:
            frame, _ = await asyncio.wait_for(read_frame(self._reader), timeout_s)
            return frame
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self._fail(f"agent connection lost: {exc or type(exc).__name__}")
            raise SandboxCrashed(self.close_reason or "agent connection lost") from None

    async def handshake(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the agent's hello."""
        self.hello = await self._next_frame(timeout_s)
        if self.hello.get("type") != "hello":
            raise ProtocolError(f"expected hello, got {self.hello.get('type')!r}")
        return self.hello

    async def exchange(self, frame: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send a frame and read the agent's answer, before `init` (the optional `warm` frame)."""
        await self._send(frame)
        return await self._next_frame(timeout_s)

    async def init(self, frame: dict[str, Any], timeout_s: float) -> float:
        """Send init, wait for ready; then start multiplexing. Returns the agent's init ms."""
        await self._send(frame)
        reply = await self._next_frame(timeout_s)
        if reply.get("type") == "init_error":
            raise FunctionInitError(reply.get("error") or {"type": "InitError", "message": "unknown"})
        if reply.get("type") != "ready":
            raise ProtocolError(f"expected ready, got {reply.get('type')!r}")
        self.init_log = str(reply.get("log") or "")  # what the code wrote while it loaded: the first call's log
        self._reader_task = asyncio.create_task(self._read_loop())
        return float(reply.get("init_ms", 0.0))

    async def request(self, frame: dict[str, Any], timeout_s: float) -> Frame:
        """Send a frame, wait for the answer with the same id (and its payload); TimeoutError after `timeout_s`."""
        if self.closed:
            raise SandboxCrashed(self.close_reason or "agent connection closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Frame] = loop.create_future()
        request_id = frame["id"]
        self._pending[request_id] = future
        # A timer instead of asyncio.wait_for: no extra task per request on the hot path.
        timer = loop.call_later(timeout_s, _expire, future)
        try:
            await self._send(frame)
            return await future
        finally:
            timer.cancel()
            self._pending.pop(request_id, None)

    async def _send(self, frame: dict[str, Any]) -> None:
        try:
            self._writer.write(encode_frame(frame))
            if self._writer.transport.get_write_buffer_size() > 1 << 20:
                await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._fail(f"agent connection lost while sending: {exc}")
            raise SandboxCrashed(self.close_reason or "agent connection lost") from None

    async def _read_loop(self) -> None:
        try:
            while True:
                frame = await read_frame(self._reader)
                future = self._pending.get(str(frame[0].get("id")))
                if future is not None and not future.done():
                    future.set_result(frame)
        except (asyncio.IncompleteReadError, ConnectionError):
            self._fail("agent connection closed")
        except ProtocolError as exc:
            self._fail(str(exc))
        except asyncio.CancelledError:
            self._fail("agent channel closed")
            raise

    def _fail(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SandboxCrashed(reason))
        with contextlib.suppress(Exception):
            self._writer.close()

    async def close(self) -> None:
        self._fail("closed by host")
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task


def _expire(future: asyncio.Future[Frame]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
