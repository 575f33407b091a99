"""The invocation writer process: batches stored from it, a refused batch kept, a killed writer replaced."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tests.metrics.rows import synthetic_rows

from hearth.metrics.recorder import InvocationRecorder
from hearth.metrics.writer import RecordWriter
from hearth.store.db import make_engine, make_sessionmaker, migrate
from hearth.store.models import Invocation


def stored(url: str) -> int:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            return int(session.scalar(select(func.count()).select_from(Invocation)) or 0)
    finally:
        engine.dispose()


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A migrated SQLite file's URL."""
    url = f"sqlite:///{tmp_path / 'hearth.db'}"
    migrate(url)
    return url


def test_a_killed_writer_is_replaced_and_no_record_is_lost(url: str) -> None:
    rows = synthetic_rows(300, 60, seed=7)

    async def go() -> None:
        writer = RecordWriter(url)
        recorder = InvocationRecorder(writer, interval_s=60, batch=10**6)
        for row in rows[:100]:
            recorder.add(row)
        await recorder.flush()
        first = writer._proc
        assert first is not None and recorder.written == 100
        os.kill(first.pid, signal.SIGKILL)
        await first.wait()
        for row in rows[100:200]:
            recorder.add(row)
        await recorder.flush()  # a new writer takes the batch
        assert writer._proc is not None and writer._proc.pid != first.pid
        os.kill(writer._proc.pid, signal.SIGKILL)  # killed without the server having noticed yet
        for row in rows[200:]:
            recorder.add(row)
        await recorder.flush()  # this flush may find the writer gone: its batch is kept ...
        await recorder.flush()  # ... and written by the next
        assert recorder.written == 300 and recorder.buffered == 0
        await recorder.close()
        assert writer._proc is None

    asyncio.run(go())
    assert stored(url) == 300


def test_a_refused_batch_is_kept_until_the_database_takes_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hearth.db'}"  # no tables yet: every write fails
    rows = synthetic_rows(50, 60, seed=8)

    async def go() -> None:
        recorder = InvocationRecorder(RecordWriter(url), interval_s=60, batch=10**6)
        for row in rows:
            recorder.add(row)
        await recorder.flush()
        assert recorder.written == 0 and recorder.buffered == 50
        await asyncio.to_thread(migrate, url)
        await recorder.flush()
        assert recorder.written == 50 and recorder.buffered == 0
        await recorder.close()

    asyncio.run(go())
    assert stored(url) == 50


def test_the_writer_outlives_a_ctrl_c_to_the_process_group(url: str) -> None:
    """Ctrl-C reaches every process of the terminal's group: the server's last flush still needs the writer."""
    rows = synthetic_rows(20, 60, seed=9)

    async def go() -> None:
        writer = RecordWriter(url)
        await writer.write(rows[:10])  # answered: it is past its start-up
        assert writer._proc is not None
        os.kill(writer._proc.pid, signal.SIGINT)
        os.kill(writer._proc.pid, signal.SIGTERM)
        await writer.write(rows[10:])
        await writer.close()

    asyncio.run(go())
    assert stored(url) == 20
