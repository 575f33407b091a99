"""VersionPool against the fake backend: hand-off, capacity, keep-alive, min_warm, retirement, replacement."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from hearth.engine.backends.fake import FakeBackend
from hearth.engine.clock import ManualClock
from hearth.engine.pool import CapacityError, Instance, PoolRetired, SandboxFactory, VersionPool
from hearth.engine.sandbox import FunctionInitError, FunctionSpec, Sandbox, SandboxStartError

Settle = Callable[[], Awaitable[None]]
MakeSpec = Callable[..., FunctionSpec]
MakePool = Callable[..., VersionPool]

pytestmark = pytest.mark.anyio


def factory_of(fake: FakeBackend) -> SandboxFactory:
    async def produce(spec: FunctionSpec) -> tuple[Sandbox, str, float]:
        sandbox = await fake.create(spec.sandbox_runtime, fake.limits_for(spec), {"hearth.function": spec.name})
        try:
            await sandbox.load(spec)
        except BaseException:
            await sandbox.stop()
            raise
        return sandbox, "cold", 0.0

    return produce


@pytest.fixture
def make_pool(fake: FakeBackend, clock: ManualClock, spec: MakeSpec) -> MakePool:
    fake.define("f", lambda event: event)

    def make(max_waiting: int = 100, **settings: object) -> VersionPool:
        return VersionPool(spec("f", **settings), factory_of(fake), max_waiting, clock)

    return make


async def test_a_released_instance_is_reused_warm(make_pool: MakePool, fake: FakeBackend) -> None:
    pool = make_pool()
    first, path = await pool.acquire(10)
    assert path == "cold" and first.inflight == 1
    pool.release(first)
    again, path = await pool.acquire(10)
    assert (again, path) == (first, "warm")
    assert len(fake.sandboxes) == 1


async def test_concurrency_shares_one_instance_up_to_its_limit(
    make_pool: MakePool, fake: FakeBackend, settle: Settle
) -> None:
    pool = make_pool(concurrency=2, max_instances=1)
    first, path = await pool.acquire(10)
    assert (path, first.inflight) == ("cold", 1)  # the call that started it, not a warm hit on its spare slot
    second, path = await pool.acquire(10)
    assert (second, path, first.inflight) == (first, "warm", 2)
    third = asyncio.create_task(pool.acquire(10))
    await settle()
    assert not third.done() and pool.waiting == 1  # the one instance is full and no other may start
    pool.release(first)
    assert (await third) == (first, "warm")
    assert first.inflight == 2 and len(fake.sandboxes) == 1


async def test_instances_start_up_to_max_instances_then_calls_wait(
    make_pool: MakePool, fake: FakeBackend, settle: Settle
) -> None:
    pool = make_pool(max_instances=2)
    a, _ = await pool.acquire(10)
    b, _ = await pool.acquire(10)
    assert a is not b
    waiting = asyncio.create_task(pool.acquire(10))
    await settle()
    assert not waiting.done() and len(fake.sandboxes) == 2
    pool.release(b)
    assert (await waiting) == (b, "warm")


async def test_a_waiter_gives_up_after_the_capacity_wait(
    make_pool: MakePool, clock: ManualClock, settle: Settle
) -> None:
    pool = make_pool(max_instances=1)
    await pool.acquire(10)
    waiting = asyncio.create_task(pool.acquire(10))
    await settle()
    clock.advance(9.9)
    await settle()
    assert not waiting.done()
    clock.advance(0.2)
    await settle()
    with pytest.raises(CapacityError, match="within 10 s"):
        await waiting
    assert pool.waiting == 0


async def test_each_waiter_gives_up_at_its_own_deadline(
    make_pool: MakePool, clock: ManualClock, settle: Settle
) -> None:
    """One timer serves the pool's waiters: it fails each at its own deadline and arms again for the next."""
    pool = make_pool(max_instances=1)
    held, _ = await pool.acquire(10)
    first = asyncio.create_task(pool.acquire(10))
    await settle()
    clock.advance(4)
    second = asyncio.create_task(pool.acquire(10))
    served = asyncio.create_task(pool.acquire(10))
    await settle()
    clock.advance(6.1)  # the first's deadline, not yet the others'
    await settle()
    with pytest.raises(CapacityError):
        await first
    assert not second.done() and not served.done()
    pool.release(held)  # to the oldest still waiting
    await settle()
    assert (await second)[1] == "warm"
    clock.advance(3.8)
    await settle()
    assert not served.done()
    clock.advance(0.2)
    await settle()
    with pytest.raises(CapacityError):
        await served
    assert pool.waiting == 0


async def test_a_full_wait_queue_refuses_at_once(make_pool: MakePool, settle: Settle) -> None:
    pool = make_pool(max_waiting=2, max_instances=1)
    await pool.acquire(10)
    queued = [asyncio.create_task(pool.acquire(10)) for _ in range(2)]
    await settle()
    with pytest.raises(CapacityError, match="2 requests already waiting"):
        await pool.acquire(10)
    for task in queued:
        task.cancel()
    await settle()


async def test_freed_slots_go_to_waiters_in_arrival_order(make_pool: MakePool, settle: Settle) -> None:
    pool = make_pool(max_instances=1)
    instance, _ = await pool.acquire(10)
    order: list[str] = []

    async def call(name: str) -> None:
        got, _ = await pool.acquire(10)
        order.append(name)
        pool.release(got)

    first = asyncio.create_task(call("first"))
    await settle()
    second = asyncio.create_task(call("second"))
    await settle()
    pool.release(instance)
    newcomer = asyncio.create_task(call("newcomer"))  # arrives in the same instant the slot frees
    await asyncio.gather(first, second, newcomer)
    assert order == ["first", "second", "newcomer"]


async def test_a_cancelled_waiter_passes_its_handed_slot_to_the_next(make_pool: MakePool, settle: Settle) -> None:
    pool = make_pool(max_instances=1)
    instance, _ = await pool.acquire(10)
    first = asyncio.create_task(pool.acquire(10))
    second = asyncio.create_task(pool.acquire(10))
    await settle()
    pool.release(instance)  # hands the slot to `first`...
    first.cancel()  # ...which goes away before it could run again
    await settle()
    assert first.cancelled()
    assert (await second) == (instance, "warm")
    assert instance.inflight == 1


async def test_a_caller_cancelled_during_its_cold_start_leaves_the_instance_to_the_pool(
    make_pool: MakePool, fake: FakeBackend, clock: ManualClock, settle: Settle
) -> None:
    fake.start_s = 5.0
    pool = make_pool(max_instances=1)
    caller = asyncio.create_task(pool.acquire(10))
    await settle()
    assert pool.starting == 1
    caller.cancel()
    await settle()
    clock.advance(5.0)
    await settle()
    [instance] = pool.instances
    assert (instance.inflight, instance.served, pool.starting) == (0, 0, 0)
    assert (await pool.acquire(10)) == (instance, "warm")


async def test_retiring_fails_waiters_and_stops_instances_once_idle(
    make_pool: MakePool, fake: FakeBackend, settle: Settle
) -> None:
    pool = make_pool(max_instances=2)
    busy, _ = await pool.acquire(10)
    idle, _ = await pool.acquire(10)
    pool.release(idle)
    busy_too, _ = await pool.acquire(10)
    assert busy_too is idle
    waiting = asyncio.create_task(pool.acquire(10))
    await settle()
    pool.retire()
    with pytest.raises(PoolRetired):
        await waiting
    await settle()
    assert not any(s.stopped for s in fake.sandboxes)  # both still serve a call: drained, not cut off
    pool.release(busy)
    await settle()
    assert fake.sandboxes[0].stopped and not fake.sandboxes[1].stopped
    pool.release(idle)
    await settle()
    assert all(s.stopped for s in fake.sandboxes) and pool.empty
    with pytest.raises(PoolRetired):
        await pool.acquire(10)


async def test_a_background_start_that_ends_after_retirement_is_stopped(
    make_pool: MakePool, fake: FakeBackend, clock: ManualClock, settle: Settle
) -> None:
    fake.start_s = 3.0
    pool = make_pool(min_warm=1)
    pool.top_up()
    await settle()
    pool.retire()
    clock.advance(3.0)
    await settle()
    assert pool.instances == [] and [s.stopped for s in fake.sandboxes] == [True]


async def test_idle_instances_past_the_keep_alive_are_evicted(
    make_pool: MakePool, fake: FakeBackend, clock: ManualClock, settle: Settle
) -> None:
    pool = make_pool()
    instance, _ = await pool.acquire(10)
    clock.advance(100)
    pool.release(instance)  # idle from now
    clock.advance(60)
    assert pool.evict_idle(60, clock.now()) == 0
    clock.advance(0.1)
    assert pool.evict_idle(60, clock.now()) == 1
    await settle()
    assert pool.instances == [] and fake.sandboxes[0].stopped


async def test_min_warm_is_started_and_kept_past_the_keep_alive(
    make_pool: MakePool, fake: FakeBackend, clock: ManualClock, settle: Settle
) -> None:
    pool = make_pool(min_warm=2)
    pool.top_up()
    await settle()
    assert len(pool.instances) == 2
    extra = [await pool.acquire(10) for _ in range(3)]
    assert [path for _, path in extra] == ["warm", "warm", "cold"]
    for instance, _ in extra:
        pool.release(instance)
    clock.advance(1000)
    assert pool.evict_idle(60, clock.now()) == 1  # down to min_warm, never below
    assert len(pool.instances) == 2
    pool.top_up()
    await settle()
    assert len(fake.sandboxes) == 3  # nothing missing: no start


async def test_a_dead_instance_is_discarded_and_a_waiter_starts_a_replacement(
    make_pool: MakePool, fake: FakeBackend, settle: Settle
) -> None:
    pool = make_pool(max_instances=1)
    instance, _ = await pool.acquire(10)
    waiting = asyncio.create_task(pool.acquire(10))
    await settle()
    fake.sandboxes[0].dead = True  # crashed during its call
    pool.release(instance)
    replacement, path = await waiting
    assert path == "cold" and replacement is not instance
    await settle()
    assert fake.sandboxes[0].stopped and pool.instances == [replacement]


async def test_a_failed_load_reaches_the_caller_that_started_it(make_pool: MakePool, fake: FakeBackend) -> None:
    fake.define("f", lambda event: event, init_error={"type": "SyntaxError", "message": "bad"})
    pool = make_pool()
    with pytest.raises(FunctionInitError, match="SyntaxError: bad"):
        await pool.acquire(10)
    assert pool.starting == 0 and pool.instances == [] and fake.sandboxes[0].stopped


async def test_a_failed_start_reaches_the_caller_and_frees_its_place(make_pool: MakePool, fake: FakeBackend) -> None:
    fake.fail_starts = 1
    pool = make_pool(max_instances=1)
    with pytest.raises(SandboxStartError):
        await pool.acquire(10)
    assert pool.starting == 0
    instance, path = await pool.acquire(10)
    assert path == "cold" and isinstance(instance, Instance)
