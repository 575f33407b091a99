"""Write-behind recording of invocations: the engine appends each record (hearth.engine.records), a
background task writes batches.

The loss window on a crash is at most one flush interval (default 0.5 s) of records; a clean
shutdown flushes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import operator
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from hearth.metrics.aggregate import upsert_rollups
from hearth.store.models import Invocation

log = logging.getLogger(__name__)
COLUMNS = tuple(column.name for column in Invocation.__table__.columns)
# What the ORM would fill in for a key a row lacks (a column's scalar default), else NULL.
DEFAULTS = {
    column.name: column.default.arg
    for column in Invocation.__table__.columns
    if column.default is not None and column.default.is_scalar
}
PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


# Rows per INSERT statement: 400 x 21 columns stays under SQLite's 32,766 bound parameters (3.32+) and
# PostgreSQL's 65,535.
ROWS_PER_INSERT = 400
_row_values = operator.itemgetter(*COLUMNS)


@functools.lru_cache(maxsize=4)
def _driver_insert(paramstyle: str, rows: int) -> str | None:
    """An INSERT of `rows` rows in one statement, in the driver's own SQL (SQLite's `?`, psycopg's `%s`);
    None for another parameter style.

    Written out because a flush writes thousands of rows from a thread while the event loop needs the GIL:
    SQLAlchemy's per-row parameter processing holds it, and an executemany hands it back and forth once
    per row (the sqlite3 module releases it around each statement step: a futex wake-up on the other CPU
    each time). One statement binds every value in C and releases the GIL once."""
    mark = PLACEHOLDERS.get(paramstyle)
    if mark is None:
        return None
    row = f"({', '.join([mark] * len(COLUMNS))})"
    return f"INSERT INTO invocations ({', '.join(COLUMNS)}) VALUES {', '.join([row] * rows)}"


def _values(row: dict[str, Any]) -> tuple[Any, ...]:
    try:
        return _row_values(row)
    except KeyError:  # a row without some columns: they take the column's default
        return tuple(row.get(name, DEFAULTS.get(name)) for name in COLUMNS)


class InvocationRecorder:
    def __init__(self, sessions: sessionmaker[Session], interval_s: float = 0.5, batch: int = 500) -> None:
        self._sessions = sessions
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
            await asyncio.to_thread(self._write, rows)
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

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self._sessions.begin() as session:
            connection = session.connection()
            paramstyle = connection.dialect.paramstyle
            for start in range(0, len(rows), ROWS_PER_INSERT):
                chunk = rows[start : start + ROWS_PER_INSERT]
                insert = _driver_insert(paramstyle, len(chunk))
                if insert is None:
                    session.execute(Invocation.__table__.insert(), chunk)
                else:
                    connection.exec_driver_sql(insert, tuple(itertools.chain.from_iterable(map(_values, chunk))))
            upsert_rollups(session, rows)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
