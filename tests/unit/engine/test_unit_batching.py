"""Batching through the engine and the fake backend: a batch closes at its size or at its wait, and each item
keeps its own result."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hearth.engine.backends.fake import CRASH, FakeBackend, Output
from hearth.engine.clock import ManualClock
from hearth.engine.engine import Engine, EngineConfig, InvocationResult
from hearth.engine.records import CallSite, as_result
from hearth.engine.sandbox import BatchSettings, FunctionSpec

Settle = Callable[[], Awaitable[None]]
MakeSpec = Callable[..., FunctionSpec]

pytestmark = pytest.mark.anyio


async def invoke(engine: Engine, resolve: Callable[[], FunctionSpec | None], event: Any) -> InvocationResult:
    return await engine.invoke(resolve, event, call=CallSite("sync"), answer=as_result)


@pytest.fixture
def engine(fake: FakeBackend, clock: ManualClock) -> Engine:
    return Engine({"fake": fake}, EngineConfig(stem_cells_per_runtime=0), clock=clock)


def batched(spec: MakeSpec, max_size: int, max_wait_ms: float, batch_handler: bool = False) -> FunctionSpec:
    return spec("f", batch=BatchSettings(max_size, max_wait_ms, batch_handler))


def submit(engine: Engine, version: FunctionSpec, events: list[Any]) -> list[asyncio.Task[InvocationResult]]:
    return [asyncio.create_task(invoke(engine, lambda: version, event)) for event in events]


def batch_sizes(fake: FakeBackend) -> list[int]:
    return [len(calls) for calls in fake.runs()]


async def test_a_full_batch_goes_at_once_in_one_frame(
    engine: Engine, fake: FakeBackend, spec: MakeSpec, settle: Settle
) -> None:
    fake.define("f", lambda event: event * 10)
    calls = submit(engine, batched(spec, 4, 60_000), [1, 2, 3, 4])
    await settle()  # no time passes: the size closed the batch
    assert [res.result for res in await asyncio.gather(*calls)] == [10, 20, 30, 40]
    [run] = fake.runs()
    assert [call.event for call in run] == [1, 2, 3, 4]
    assert [call.id for call in run] == [res.invocation_id for res in (c.result() for c in calls)]


async def test_a_partial_batch_waits_for_its_window(
    engine: Engine, fake: FakeBackend, clock: ManualClock, spec: MakeSpec, settle: Settle
) -> None:
    fake.define("f", lambda event: event)
    calls = submit(engine, batched(spec, 8, 200), ["a", "b", "c"])
    await settle()
    clock.advance(0.199)
    await settle()
    assert fake.runs() == [] and not any(call.done() for call in calls)
    clock.advance(0.002)
    results = await asyncio.gather(*calls)
    assert batch_sizes(fake) == [3]
    assert [res.result for res in results] == ["a", "b", "c"]
    assert all(res.queue_ms >= 199 for res in results)  # each waited the window (measured on the clock)


async def test_calls_beyond_the_size_make_the_next_batch(
    engine: Engine, fake: FakeBackend, clock: ManualClock, spec: MakeSpec, settle: Settle
) -> None:
    fake.define("f", lambda event: event)
    calls = submit(engine, batched(spec, 4, 100), list(range(10)))
    await settle()
    assert sorted(batch_sizes(fake)) == [4, 4]  # two full batches at once; two calls wait for the window
    clock.advance(0.1)
    assert [res.result for res in await asyncio.gather(*calls)] == list(range(10))
    assert sorted(batch_sizes(fake)) == [2, 4, 4]


async def test_each_item_keeps_its_own_result_error_and_logs(engine: Engine, fake: FakeBackend, spec: MakeSpec) -> None:
    def handler(n: int) -> Any:
        if n == 3:
            raise ValueError("item 3 is bad")
        return Output(n * 10, stdout=f"item {n}\n")

    fake.define("f", handler)
    results = await asyncio.gather(*submit(engine, batched(spec, 6, 1000), list(range(6))))
    assert batch_sizes(fake) == [6]
    for n, res in enumerate(results):
        if n == 3:
            assert (res.status, res.error) == (
                "error",
                {"type": "ValueError", "message": "item 3 is bad", "traceback": ""},
            )
        else:
            assert (res.status, res.result, res.stdout) == ("ok", n * 10, f"item {n}\n")
    assert len({res.invocation_id for res in results}) == 6


async def test_a_batch_handler_gets_the_list_and_returns_one_result_per_item(
    engine: Engine, fake: FakeBackend, spec: MakeSpec
) -> None:
    fake.define("f", lambda events: [{"n": e, "batch": len(events)} for e in events])
    results = await asyncio.gather(*submit(engine, batched(spec, 3, 1000, batch_handler=True), [7, 8, 9]))
    assert [res.result for res in results] == [{"n": n, "batch": 3} for n in (7, 8, 9)]
    [[call]] = fake.runs()  # one call whose event is the batch's list (hearth.engine.batch_handler)
    assert call.event == [7, 8, 9]


async def test_a_batch_handler_returning_the_wrong_count_fails_every_item(
    engine: Engine, fake: FakeBackend, spec: MakeSpec
) -> None:
    fake.define("f", lambda events: events[:1])
    results = await asyncio.gather(*submit(engine, batched(spec, 2, 1000, batch_handler=True), [1, 2]))
    assert [(res.status, (res.error or {}).get("type")) for res in results] == [("error", "BatchResultMismatch")] * 2


async def test_a_sandbox_crash_fails_every_item_of_its_batch(engine: Engine, fake: FakeBackend, spec: MakeSpec) -> None:
    fake.define("f", lambda event: CRASH if event == 2 else event)
    results = await asyncio.gather(*submit(engine, batched(spec, 3, 1000), [1, 2, 3]))
    assert [res.status for res in results] == ["crashed"] * 3


async def test_without_batching_every_call_is_its_own_frame(engine: Engine, fake: FakeBackend, spec: MakeSpec) -> None:
    fake.define("f", lambda event: event)
    await asyncio.gather(*submit(engine, spec("f", max_instances=1), [1, 2, 3]))
    assert batch_sizes(fake) == [1, 1, 1]
