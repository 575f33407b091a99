"""Engine.invoke against the fake backend: outcomes, replacement after timeouts and crashes, throttling,
draining retired versions, keep-alive, stem cells."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hearth.engine.backends.fake import CRASH, HANG, OUT_OF_MEMORY, FakeBackend, Output, scripted
from hearth.engine.clock import ManualClock
from hearth.engine.engine import Engine, EngineConfig, InvocationResult
from hearth.engine.records import CallSite, as_result
from hearth.engine.sandbox import Call, FunctionSpec, Purpose

Settle = Callable[[], Awaitable[None]]
MakeSpec = Callable[..., FunctionSpec]

pytestmark = pytest.mark.anyio


async def invoke(engine: Engine, resolve: Callable[[], FunctionSpec | None], event: Any) -> InvocationResult:
    return await engine.invoke(resolve, event, call=CallSite("sync"), answer=as_result)


@pytest.fixture
def engine(fake: FakeBackend, clock: ManualClock) -> Engine:
    config = EngineConfig(keep_alive_s=60, capacity_wait_s=10, stem_cells_per_runtime=0)
    return Engine({"fake": fake}, config, clock=clock)


def current(spec: FunctionSpec) -> Callable[[], FunctionSpec | None]:
    return lambda: spec


class Gate:
    """A handler that holds every call until the test opens it."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.entered = 0

    async def __call__(self, event: Any) -> Any:
        self.entered += 1
        await self.open.wait()
        return event


async def test_a_call_runs_cold_then_warm_with_the_functions_limits_and_labels(
    engine: Engine, fake: FakeBackend, spec: MakeSpec
) -> None:
    fake.define("echo", lambda event: {"got": event})
    version = spec("echo", 3, memory_mb=256)
    first = await invoke(engine, current(version), {"n": 1})
    second = await invoke(engine, current(version), {"n": 2})
    assert (first.status, first.result, first.path, first.version) == ("ok", {"got": {"n": 1}}, "cold", 3)
    assert (second.status, second.result, second.path) == ("ok", {"got": {"n": 2}}, "warm")
    assert first.sandbox_id == second.sandbox_id
    [request] = fake.create_requests
    assert request.purpose == Purpose(function="echo", version=3)
    assert request.limits.memory_mb == 256
    [[call], _] = fake.runs()
    assert call == Call(first.invocation_id, {"n": 1})


async def test_a_handler_error_is_the_calls_error_and_the_instance_stays(
    engine: Engine, fake: FakeBackend, spec: MakeSpec
) -> None:
    fake.define("f", scripted(ValueError("bad input"), "fine"))
    failed = await invoke(engine, current(spec("f")), None)
    assert failed.status == "error" and failed.error == {"type": "ValueError", "message": "bad input", "traceback": ""}
    assert (await invoke(engine, current(spec("f")), None)).path == "warm"


async def test_logs_and_their_truncation_mark_reach_the_result(
    engine: Engine, fake: FakeBackend, spec: MakeSpec
) -> None:
    fake.define("f", lambda event: Output("done", stdout="x" * 10, stderr="e", logs_truncated=True))
    res = await invoke(engine, current(spec("f")), None)
    assert (res.result, res.stdout, res.stderr, res.logs_truncated) == ("done", "x" * 10, "e", True)


async def test_a_timed_out_call_is_reported_and_its_sandbox_replaced(
    engine: Engine, fake: FakeBackend, clock: ManualClock, spec: MakeSpec, settle: Settle
) -> None:
    fake.define("f", scripted(HANG, "after"))
    version = spec("f", timeout_s=3)
    call = asyncio.create_task(invoke(engine, current(version), None))
    await settle()
    clock.advance(2.9)
    await settle()
    assert not call.done()
    clock.advance(0.2)
    res = await call
    assert res.status == "timeout" and res.error is not None and res.error["type"] == "Timeout"
    await settle()
    assert fake.sandboxes[0].stopped  # a timed-out sandbox is never used again
    after = await invoke(engine, current(version), None)
    assert (after.status, after.result, after.path) == ("ok", "after", "cold")
    assert after.sandbox_id == fake.sandboxes[1].id


@pytest.mark.parametrize(
    ("outcome", "status", "error_type"), [(CRASH, "crashed", "SandboxCrashed"), (OUT_OF_MEMORY, "oom", "OutOfMemory")]
)
async def test_a_sandbox_that_dies_is_reported_and_replaced(
    engine: Engine, fake: FakeBackend, spec: MakeSpec, settle: Settle, outcome: object, status: str, error_type: str
) -> None:
    fake.define("f", scripted(outcome, "again"))
    res = await invoke(engine, current(spec("f")), None)
    assert res.status == status and res.error is not None and res.error["type"] == error_type
    await settle()
    assert fake.sandboxes[0].stopped
    after = await invoke(engine, current(spec("f")), None)
    assert (after.result, after.path, after.sandbox_id) == ("again", "cold", fake.sandboxes[1].id)


async def test_a_call_that_finds_no_capacity_in_time_is_throttled(
    engine: Engine, fake: FakeBackend, clock: ManualClock, spec: MakeSpec, settle: Settle
) -> None:
    gate = Gate()
    fake.define("f", gate)
    version = spec("f", max_instances=1)
    busy = asyncio.create_task(invoke(engine, current(version), "busy"))
    await settle()
    waiting = asyncio.create_task(invoke(engine, current(version), "waits"))
    await settle()
    clock.advance(10.1)  # EngineConfig.capacity_wait_s
    throttled = await waiting
    assert throttled.status == "throttled" and throttled.error is not None
    assert throttled.error["type"] == "TooManyRequests" and throttled.retry_after_s == 1.0  # the API's 429
    gate.open.set()
    assert (await busy).result == "busy"
    assert len(fake.sandboxes) == 1


async def test_concurrency_runs_calls_side_by_side_in_one_sandbox(
    engine: Engine, fake: FakeBackend, spec: MakeSpec, settle: Settle
) -> None:
    gate = Gate()
    fake.define("f", gate)
    version = spec("f", concurrency=3, max_instances=1)
    calls = [asyncio.create_task(invoke(engine, current(version), n)) for n in range(3)]
    await settle()
    assert gate.entered == 3
    gate.open.set()
    results = await asyncio.gather(*calls)
    assert [(res.result, res.path) for res in results] == [(0, "cold"), (1, "warm"), (2, "warm")]
    assert results[0].init_ms is not None
    [sandbox] = fake.sandboxes
    assert sandbox.max_inflight == 3


async def test_an_update_drains_the_old_version_and_moves_its_waiters_to_the_new(
    engine: Engine, fake: FakeBackend, clock: ManualClock, spec: MakeSpec, settle: Settle
) -> None:
    gate = Gate()
    fake.define("f", gate)
    old, new = spec("f", 1, max_instances=1), spec("f", 2, max_instances=1)
    live = [old]

    def resolve() -> FunctionSpec:
        return live[0]

    in_flight = asyncio.create_task(invoke(engine, resolve, "first"))
    await settle()
    waiting = asyncio.create_task(invoke(engine, resolve, "second"))
    await settle()
    live[0] = new
    engine.deploy(new)  # retires version 1 while one call runs on it and one waits for it
    await settle()
    gate.open.set()
    first, moved = await asyncio.gather(in_flight, waiting)
    assert (first.version, first.result) == (1, "first")  # the call under way finishes on the old version
    assert (moved.version, moved.result, moved.path) == (2, "second", "cold")  # the waiter is served by the new
    await settle()
    old_sandbox, new_sandbox = fake.sandboxes
    assert old_sandbox.spec == old and old_sandbox.stopped
    assert new_sandbox.spec == new and not new_sandbox.stopped
    engine.reap()
    assert list(engine.pools) == [("f", 2)]


async def test_the_reaper_evicts_idle_instances_and_keeps_min_warm(
    engine: Engine, fake: FakeBackend, clock: ManualClock, spec: MakeSpec, settle: Settle
) -> None:
    fake.define("cold", lambda event: event)
    fake.define("warm", lambda event: event)
    await invoke(engine, current(spec("cold")), None)
    engine.deploy(spec("warm", min_warm=1))
    await settle()
    assert engine.instances_of("warm") == {"warm": 1, "busy": 0, "starting": 0}
    clock.advance(59)
    engine.reap()
    await settle()
    assert not any(s.stopped for s in fake.sandboxes)
    clock.advance(2)
    engine.reap()
    await settle()
    assert engine.instances_of("cold") == {"warm": 0, "busy": 0, "starting": 0}
    assert engine.instances_of("warm") == {"warm": 1, "busy": 0, "starting": 0}
    assert [s.spec.name for s in fake.sandboxes if s.stopped and s.spec] == ["cold"]


async def test_a_function_whose_code_does_not_load_fails_in_the_init_phase(
    engine: Engine, fake: FakeBackend, spec: MakeSpec
) -> None:
    fake.define("f", lambda event: event, init_error={"type": "SyntaxError", "message": "bad", "log": "printed"})
    res = await invoke(engine, current(spec("f")), None)
    assert res.status == "error" and res.error == {"type": "SyntaxError", "message": "bad", "phase": "init"}
    assert res.stdout == "printed"


async def test_a_sandbox_that_does_not_start_is_a_crashed_call(
    engine: Engine, fake: FakeBackend, spec: MakeSpec
) -> None:
    fake.define("f", lambda event: event)
    fake.fail_starts = 1
    res = await invoke(engine, current(spec("f")), None)
    assert res.status == "crashed" and res.error is not None and res.error["type"] == "SandboxStartError"
    assert (await invoke(engine, current(spec("f")), None)).status == "ok"


async def test_a_ready_stem_cell_serves_the_first_call(
    fake: FakeBackend, clock: ManualClock, spec: MakeSpec, settle: Settle
) -> None:
    engine = Engine({"fake": fake}, EngineConfig(stem_cells_per_runtime=1, reap_interval_s=3600), clock=clock)
    await engine.start()
    await settle()
    stems = list(fake.sandboxes)
    assert stems and all(s.purpose == Purpose.stem_cell() for s in stems)
    fake.define("f", lambda event: event)
    res = await invoke(engine, current(spec("f")), "hi")
    assert (res.result, res.path) == ("hi", "stem")
    assert res.sandbox_id in {s.id for s in stems}
    await engine.shutdown()
    assert all(s.stopped for s in fake.sandboxes)


async def test_every_call_is_recorded_once_with_its_outcome(
    fake: FakeBackend, clock: ManualClock, spec: MakeSpec, settle: Settle
) -> None:
    records: list[dict[str, Any]] = []
    engine = Engine({"fake": fake}, EngineConfig(stem_cells_per_runtime=0), records.append, clock=clock)
    fake.define("f", scripted("fine", ValueError("bad"), CRASH))
    version = spec("f", timeout_s=2)
    results = [await invoke(engine, current(version), n) for n in range(3)]
    assert [(r["id"], r["status"], r["mode"]) for r in records] == [
        (res.invocation_id, status, "sync") for res, status in zip(results, ["ok", "error", "crashed"], strict=True)
    ]
