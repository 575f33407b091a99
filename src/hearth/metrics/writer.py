"""The invocation writer: a process of its own that stores the recorder's batches (hearth.metrics.record_store).

A process, not a thread of the server: storing a batch is mostly Python (binding values, folding the
rollups, SQLAlchemy), and a thread doing it held the GIL that the event loop needs. Under load, with the
other CPU busy running sandboxes, that thread was often preempted while it held the GIL, and the event
loop stood still meanwhile (docs/performance.md has the figures).

Frames both ways are a 4-byte big-endian length and a JSON document. To the writer: first
`{"database_url": ...}`, then each batch (a list of records); from it, per batch, `{"ok": true}` or
`{"ok": false, "error": "..."}`. The server ends the writer by closing its stdin, after the last flush.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import IO, Any

import orjson

from hearth.engine.protocol import HEADER  # the agent protocol's framing: a 4-byte length, then the JSON

STOP_TIMEOUT_S = 30.0


class WriteFailed(Exception):
    """The batch was not stored (the database refused it, or the writer exited): the recorder keeps it."""


class RecordWriter:
    """The server's side: starts the writer process (again, if it exited) and hands it batches, one at a time."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            await self._running()

    async def write(self, rows: list[dict[str, Any]]) -> None:
        """Store `rows`; raises WriteFailed if they were not stored."""
        data = orjson.dumps(rows)
        # Shielded: a flush cancelled at shutdown lets its exchange finish, so the next one reads its own reply.
        exchange = asyncio.ensure_future(self._exchange(data))
        exchange.add_done_callback(_retrieve)
        await asyncio.shield(exchange)

    async def close(self) -> None:
        async with self._lock:
            proc, self._proc = self._proc, None
            if proc is None or proc.returncode is not None:
                return
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def _running(self) -> asyncio.subprocess.Process:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            proc = self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hearth.metrics.writer",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert proc.stdin is not None
            proc.stdin.write(frame(orjson.dumps({"database_url": self._url})))
        return proc

    async def _exchange(self, data: bytes) -> None:
        async with self._lock:
            proc = await self._running()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(frame(data))
                await proc.stdin.drain()
                (size,) = HEADER.unpack(await proc.stdout.readexactly(HEADER.size))
                reply = orjson.loads(await proc.stdout.readexactly(size))
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                self._proc = None
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
                raise WriteFailed(f"the invocation writer exited ({type(exc).__name__})") from None
        if not reply.get("ok"):
            raise WriteFailed(str(reply.get("error")))


def frame(data: bytes) -> bytes:
    return HEADER.pack(len(data)) + data


def _retrieve(exchange: asyncio.Future[None]) -> None:
    if not exchange.cancelled():
        exchange.exception()  # a shielded exchange whose caller is gone: its failure is the caller's to log


# ----- the writer process


def read_frame(stream: IO[bytes]) -> Any:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return orjson.loads(data)


def main() -> None:
    # The server ends this process by closing stdin after its last flush: a Ctrl-C or SIGTERM sent to the
    # whole process group must not end it first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, not into the frames
    config = read_frame(sys.stdin.buffer)
    if config is None:
        return
    from hearth.metrics.record_store import store_records
    from hearth.store.db import make_engine, make_sessionmaker

    sessions = make_sessionmaker(make_engine(config["database_url"]))
    while (rows := read_frame(sys.stdin.buffer)) is not None:
        try:
            store_records(sessions, rows)
            reply: dict[str, Any] = {"ok": True}
        except Exception as exc:  # the database refused the batch: the server keeps it and tries again
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:4000]}
        replies.write(frame(orjson.dumps(reply)))
        replies.flush()


if __name__ == "__main__":
    main()
