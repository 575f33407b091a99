"""Frames over one agent stream (docs/protocol.md): the handshake, then requests multiplexed by `id`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, NoReturn

from hearth.engine.clock import MONOTONIC, Clock, Deadlines
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

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, clock: Clock = MONOTONIC) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: dict[str, asyncio.Future[Frame]] = {}
        self._clock = clock
        self._deadlines = Deadlines[str](clock, self._time_out)  # each pending request's
        self._loop: asyncio.AbstractEventLoop | None = None
        self._frames: _FrameProtocol | None = None  # reads the stream once multiplexing starts
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
        await self._write(frame)
        return await self._next_frame(timeout_s)

    async def init(self, frame: dict[str, Any], timeout_s: float) -> float:
        """Send init, wait for ready; then start multiplexing. Returns the agent's init ms."""
        await self._write(frame)
        reply = await self._next_frame(timeout_s)
        if reply.get("type") == "init_error":
            raise FunctionInitError(reply.get("error") or {"type": "InitError", "message": "unknown"})
        if reply.get("type") != "ready":
            raise ProtocolError(f"expected ready, got {reply.get('type')!r}")
        self.init_log = str(reply.get("log") or "")  # what the code wrote while it loaded: the first call's log
        self._multiplex()
        return float(reply.get("init_ms", 0.0))

    def _multiplex(self) -> None:
        """From now on frames are parsed as they arrive, in the transport's callback, and handed to their
        call's future: no reader task to wake for every reply (a share of each warm call's CPU)."""
        reader = self._reader
        # Anything the agent sent after `ready`: StreamReader has no public way to take it without awaiting.
        leftover = bytes(reader._buffer)
        reader._buffer.clear()
        if reader.at_eof() or reader.exception() is not None:
            self._fail("agent connection closed")
            return
        self._frames = _FrameProtocol(self)
        self._writer.transport.set_protocol(self._frames)
        if leftover:
            self._frames.data_received(leftover)

    async def request(self, frame: dict[str, Any], timeout_s: float) -> Frame:
        """Send a frame, wait for the answer with the same id (and its payload); TimeoutError after `timeout_s`."""
        if self.closed:
            raise SandboxCrashed(self.close_reason or "agent connection closed")
        loop = self._loop
        if loop is None:  # looked up once: asyncio.get_running_loop() is a getpid() system call each time
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Frame] = loop.create_future()
        request_id = frame["id"]
        self._pending[request_id] = future
        self._deadlines.add(request_id, self._clock.now() + timeout_s)
        try:
            if self._send(frame):
                await self._drain()
            return await future
        finally:
            self._pending.pop(request_id, None)
            self._deadlines.discard(request_id)

    def _time_out(self, request_id: str) -> None:
        future = self._pending.get(request_id)
        if future is not None and not future.done():
            future.set_exception(TimeoutError())

    def _send(self, frame: dict[str, Any]) -> bool:
        """Write a frame; True if the agent is behind on reading and the caller should `_drain` first.

        Not a coroutine: it is one on every call's path, and awaiting it would cost a frame each time."""
        try:
            transport = self._writer.transport
            transport.write(encode_frame(frame))
            return transport.get_write_buffer_size() > 1 << 20
        except (ConnectionError, RuntimeError) as exc:
            self._lost(exc)

    async def _write(self, frame: dict[str, Any]) -> None:
        if self._send(frame):
            await self._drain()

    async def _drain(self) -> None:
        try:
            await (self._frames.drained() if self._frames is not None else self._writer.drain())
        except (ConnectionError, RuntimeError) as exc:
            self._lost(exc)

    def _lost(self, exc: Exception) -> NoReturn:
        self._fail(f"agent connection lost while sending: {exc}")
        raise SandboxCrashed(self.close_reason or "agent connection lost") from None

    def _deliver(self, body: bytes) -> None:
        try:
            frame = decode_body(body)
        except ProtocolError as exc:
            self._fail(str(exc))
            return
        future = self._pending.get(str(frame[0].get("id")))
        if future is not None and not future.done():
            future.set_result(frame)

    def _fail(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._deadlines.cancel()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SandboxCrashed(reason))
        with contextlib.suppress(Exception):
            self._writer.close()

    async def close(self) -> None:
        self._fail("closed by host")


class _FrameProtocol(asyncio.Protocol):
    """The agent stream's protocol while multiplexing: splits the bytes into frames for the channel."""

    def __init__(self, channel: AgentChannel) -> None:
        self._channel = channel
        self._partial: list[bytes] = []  # an incomplete frame's bytes so far
        self._partial_size = 0
        self._needed = 0  # bytes the incomplete frame has in all (its header's length + 4)
        self._paused: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        if self._partial:
            self._partial.append(data)
            self._partial_size += len(data)
            if self._partial_size < self._needed:
                return
            data = b"".join(self._partial)
            self._partial.clear()
        size = len(data)
        offset = 0
        while size - offset >= HEADER.size:
            (length,) = HEADER.unpack_from(data, offset)
            if length > MAX_FRAME_BYTES:
                self._channel._fail(f"agent sent a frame of {length} bytes (limit {MAX_FRAME_BYTES})")
                return
            end = offset + HEADER.size + length
            if end > size:
                break
            self._channel._deliver(data[offset + HEADER.size : end])
            offset = end
        if offset < size:
            rest = data[offset:] if offset else data
            self._partial.append(rest)
            self._partial_size = len(rest)
            self._needed = HEADER.size + HEADER.unpack_from(rest)[0] if len(rest) >= HEADER.size else HEADER.size

    def eof_received(self) -> bool:
        self._channel._fail("agent connection closed")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._channel._fail("agent connection closed")
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._paused is None:
            self._paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._paused is not None:
            if not self._paused.done():
                self._paused.set_result(None)
            self._paused = None

    async def drained(self) -> None:
        if self._paused is not None:
            await asyncio.shield(self._paused)
