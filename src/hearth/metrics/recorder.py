"""Write-behind recording of invocations: the engine appends each record (hearth.engine.records), a
background task hands batches to the invocation writer (hearth.metrics.writer), a process of its own.

The loss window on a crash is at most one flush interval (default 0.5 s) of records; a clean
shutdown flushes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from hearth.metrics.writer import RecordWriter

log = logging.getLogger(__name__)


class InvocationRecorder:
    def __init__(self, writer: RecordWriter, interval_s: float = 0.5, batch: int = 500) -> None:
        self._writer = writer
        self._interval_s = interval_s
        self._batch = batch
        self._buffer: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self.written = 0
        self.dropped = 0  # records given up after the database refused them (disk full) for too long
        self.max_buffered = 100_000
        self.listeners: list[Callable[[list[dict[str, Any]]], None]] = []  # after a batch is written
        self.observers: list[Callable[[dict[str, Any]], None]] = []  # each record as it comes (cheap)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def add(self, row: dict[str, Any]) -> None:
        for observe in self.observers:
            observe(row)
        self._buffer.append(row)
        if len(self._buffer) >= self._batch:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            await self._writer.start()  # its start-up (imports, the database) paid now, not at the first flush
        except Exception:
            log.exception("could not start the invocation writer; the first flush tries again")
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write what is buffered; returns once everything added before the call is written (or kept)."""
        async with self._flushing:  # a flush under way may hold rows added before this call
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        try:
            await self._writer.write(rows)
        except Exception as exc:
            log.warning("could not write %d invocation records (%s); keeping them for the next flush", len(rows), exc)
            self._buffer[:0] = rows
            overflow = len(self._buffer) - self.max_buffered
            if overflow > 0:  # the database has refused writes for long: keep the newest, count the rest
                del self._buffer[:overflow]
                self.dropped += overflow
            return
        self.written += len(rows)
        for listener in self.listeners:
            try:
                listener(rows)
            except Exception:
                log.exception("invocation listener failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        await self._writer.close()
