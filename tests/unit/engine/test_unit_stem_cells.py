"""Stem cells against the fake backend: kept per runtime, taken once, refilled, dead ones dropped, stopped at close."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from hearth.engine.backends.fake import FakeBackend
from hearth.engine.clock import ManualClock
from hearth.engine.sandbox import Purpose
from hearth.engine.stem_cells import RUNTIMES, StemCells

Settle = Callable[[], Awaitable[None]]

pytestmark = pytest.mark.anyio


async def test_each_default_runtime_gets_its_cells_and_a_take_refills(fake: FakeBackend, settle: Settle) -> None:
    cells = StemCells({"fake": fake}, per_runtime=1)
    cells.enable("fake")
    await settle()
    assert sorted(r.runtime for r in fake.create_requests) == sorted(RUNTIMES)
    assert all(r.purpose == Purpose.stem_cell() for r in fake.create_requests)
    assert cells.counts() == {f"fake/{runtime}": 1 for runtime in RUNTIMES}
    taken = cells.take("fake", RUNTIMES[0])
    assert taken is not None and taken.runtime == RUNTIMES[0]
    assert cells.take("fake", RUNTIMES[0]) is None  # one per runtime: the refill is still starting...
    await settle()
    refill = cells.take("fake", RUNTIMES[0])  # ...and now ready
    assert refill is not None and refill is not taken
    await cells.stop_all()


async def test_a_dead_cell_is_stopped_not_handed_out(fake: FakeBackend, settle: Settle) -> None:
    cells = StemCells({"fake": fake}, per_runtime=1)
    cells.enable("fake")
    await settle()
    [dead] = [s for s in fake.sandboxes if s.runtime == RUNTIMES[0]]
    dead.dead = True
    assert cells.take("fake", RUNTIMES[0]) is None
    await settle()
    assert dead.stopped
    fresh = cells.take("fake", RUNTIMES[0])
    assert fresh is not None and fresh.healthy
    await cells.stop_all()


async def test_a_backend_not_used_at_start_gets_cells_at_its_first_take(fake: FakeBackend, settle: Settle) -> None:
    fake.stem_cells_at_start = False
    cells = StemCells({"fake": fake}, per_runtime=1)
    cells.enable("fake")
    await settle()
    assert fake.create_requests == [] and cells.counts() == {}
    assert cells.take("fake", RUNTIMES[0]) is None
    await settle()
    assert [r.runtime for r in fake.create_requests] == [RUNTIMES[0]]
    await cells.stop_all()


async def test_stop_all_stops_cells_whose_start_was_under_way(
    fake: FakeBackend, clock: ManualClock, settle: Settle
) -> None:
    fake.start_s = 2.0
    cells = StemCells({"fake": fake}, per_runtime=1)
    cells.enable("fake")
    await settle()
    clock.advance(2.0)  # the starts finish while stop_all waits for them
    await cells.stop_all()
    assert fake.sandboxes and all(s.stopped for s in fake.sandboxes)
    assert cells.count() == 0
