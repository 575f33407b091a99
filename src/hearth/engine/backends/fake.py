"""An in-process backend for tests: sandboxes whose function is a Python callable, with scripted failures.

As httpx ships `MockTransport`, Hearth ships this test double so that the pool, the batcher and the
engine can be tested without Docker. It isolates nothing and runs no user code, so it is never offered
to users: `hearth.api.app.build_backends` does not build it (GET /api/backends never lists it), and a
test selects it explicitly by handing it to an `Engine`:

    clock = ManualClock()
    fake = FakeBackend(clock)
    fake.define("echo", lambda event: event)
    engine = Engine({"fake": fake}, EngineConfig(stem_cells_per_runtime=0), clock=clock)
    spec = FunctionSpec("echo", 1, "python", "handler", Path("."), backend="fake")
    result = await engine.invoke(lambda: spec, 1, call=CallSite("sync"), answer=as_result)

A function's handler takes the event (or, for a batch handler, the list of events) and returns the result,
raises (the function's error), or returns a scripted outcome: `HANG` (never answers: the call times out and
the sandbox is poisoned), `CRASH`, `OUT_OF_MEMORY`, or `Output` (a result with logs). `scripted(...)` gives
a handler that plays outcomes in order. Slow starts, failed starts and failed loads are set on the backend
(`start_s`, `fail_starts`) and on the function (`init_s`, `init_error`). Everything asked of the backend is
recorded: `create_requests` (with each start's `Purpose`), and per sandbox its `spec`, `runs` (the calls of
each invoke), concurrency and whether it was stopped.
Time passes on the backend's clock: with a `ManualClock` a slow start or a hang lasts until the test advances it.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hearth.engine.clock import MONOTONIC, Clock
from hearth.engine.encoding import dumps
from hearth.engine.sandbox import (
    Backend,
    Call,
    FunctionInitError,
    FunctionSpec,
    Limits,
    Purpose,
    Reply,
    Runtime,
    Sandbox,
    SandboxCrashed,
    SandboxOutOfMemory,
    SandboxStartError,
    SandboxStats,
    SandboxTimeout,
)

Handler = Callable[[Any], Any]
"""The event (a list of events for a batch handler) in, the result out; may be async; may raise."""


class Outcome:
    """What a handler may return instead of a result, to act as a misbehaving sandbox."""


@dataclass(frozen=True)
class Hang(Outcome):
    """Never answer: the call runs into its timeout and the sandbox is poisoned."""


@dataclass(frozen=True)
class Crash(Outcome):
    """The sandbox dies mid-call (the agent's stream closes)."""

    reason: str = "agent connection closed"


@dataclass(frozen=True)
class OutOfMemory(Outcome):
    """The sandbox is killed for going over its memory limit."""


@dataclass(frozen=True)
class Output(Outcome):
    """A result with what the function wrote, as the agent captured it."""

    result: Any = None
    stdout: str = ""
    stderr: str = ""
    logs_truncated: bool = False


HANG = Hang()
CRASH = Crash()
OUT_OF_MEMORY = OutOfMemory()


def scripted(*outcomes: Any) -> Handler:
    """A handler that plays `outcomes` call after call (the last one repeats): a value is returned, an
    exception instance raised, an `Outcome` acted out."""
    if not outcomes:
        raise ValueError("scripted() needs at least one outcome")
    remaining: Iterator[Any] = iter(outcomes)
    last: list[Any] = [outcomes[-1]]

    def handler(_: Any) -> Any:
        outcome = next(remaining, last[0])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return handler


@dataclass
class FakeFunction:
    handler: Handler
    init_s: float = 0.0  # how long loading takes (on the backend's clock)
    init_error: dict[str, Any] | None = None  # loading fails with this error (FunctionInitError)


@dataclass(frozen=True)
class CreateRequest:
    runtime: Runtime
    limits: Limits
    purpose: Purpose


class FakeBackend(Backend):
    name = "fake"
    kind = "in-process test double: no isolation, tests only"
    probe_at_start = False

    def __init__(self, clock: Clock = MONOTONIC, *, start_s: float = 0.0, name: str = "fake") -> None:
        self.name = name
        self.clock = clock
        self.start_s = start_s  # how long a start takes (on the clock)
        self.fail_starts = 0  # the next this many starts fail (SandboxStartError)
        self.available: tuple[bool, str] = (True, "in-process")
        self.functions: dict[str, FakeFunction] = {}
        self.create_requests: list[CreateRequest] = []
        self.sandboxes: list[FakeSandbox] = []  # every sandbox started, in order
        self._ids = itertools.count(1)

    def define(
        self,
        name: str,
        handler: Handler,
        *,
        init_s: float = 0.0,
        init_error: dict[str, Any] | None = None,
    ) -> FakeFunction:
        """The code of the function called `name` (every version of it)."""
        function = self.functions[name] = FakeFunction(handler, init_s, init_error)
        return function

    async def create(self, runtime: Runtime, limits: Limits, purpose: Purpose) -> FakeSandbox:
        self.create_requests.append(CreateRequest(runtime, limits, purpose))
        if self.start_s:
            await self.clock.sleep(self.start_s)
        if self.fail_starts > 0:
            self.fail_starts -= 1
            self.start_costs.record_failure("scripted start failure")
            raise SandboxStartError("the fake backend was told to fail this start")
        sandbox = FakeSandbox(self, f"fake-{next(self._ids)}", runtime, limits, purpose)
        self.sandboxes.append(sandbox)
        self.start_costs.record(runtime, self.start_s * 1000)
        return sandbox

    def availability(self) -> tuple[bool, str]:
        return self.available

    # ----- what the tests read
    @property
    def running(self) -> list[FakeSandbox]:
        return [sandbox for sandbox in self.sandboxes if not sandbox.stopped]

    def runs(self) -> list[list[Call]]:
        """Every `invoke` of any sandbox (one call, or a batch of several), sandbox by sandbox, in order."""
        return [calls for sandbox in self.sandboxes for calls in sandbox.runs]


@dataclass(eq=False)
class FakeSandbox(Sandbox):
    owner: FakeBackend
    id: str
    runtime: Runtime
    limits: Limits
    purpose: Purpose
    spec: FunctionSpec | None = None
    runs: list[list[Call]] = field(default_factory=list)  # each invoke's calls (several: a batch)
    inflight: int = 0
    max_inflight: int = 0  # the most invokes it ever ran at once
    stopped: bool = False
    dead: bool = False  # crashed, killed, or poisoned by a timeout

    def __post_init__(self) -> None:
        self.backend = self.owner.name
        self._function: FakeFunction | None = None

    @property
    def healthy(self) -> bool:
        return not (self.stopped or self.dead)

    async def load(self, spec: FunctionSpec) -> float:
        if not self.healthy:
            raise SandboxCrashed("the sandbox is not running")
        function = self.owner.functions.get(spec.name)
        if function is None:
            raise FunctionInitError({"type": "Runtime.ImportModuleError", "message": f"no fake function {spec.name!r}"})
        if function.init_s:
            await self.owner.clock.sleep(function.init_s)
        if function.init_error is not None:
            raise FunctionInitError(dict(function.init_error))
        self.spec, self.limits, self._function = spec, self.owner.limits_for(spec), function
        return function.init_s * 1000

    async def invoke(self, calls: Sequence[Call], timeout_s: float) -> list[Reply]:
        if not self.healthy or self._function is None:
            raise SandboxCrashed("the sandbox is not running")
        self.runs.append(list(calls))
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        expired: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.owner.clock.call_later(timeout_s, lambda: expired.done() or expired.set_result(None))
        function = self._function
        work = asyncio.ensure_future(self._run_all(function, calls))
        try:
            await asyncio.wait({work, expired}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            timer.cancel()
            self.inflight -= 1
        if not work.done():
            work.cancel()
            self.dead = True
            raise SandboxTimeout(f"no answer within {timeout_s:g} s")
        return work.result()

    async def _run_all(self, function: FakeFunction, calls: Sequence[Call]) -> list[Reply]:
        return [await self._run(function, call) for call in calls]  # a batch: one after another, as agents do

    async def _run(self, function: FakeFunction, call: Call) -> Reply:
        try:
            outcome = function.handler(call.event)
            if inspect.isawaitable(outcome):
                outcome = await outcome
        except Exception as exc:
            error = {"type": type(exc).__name__, "message": str(exc), "traceback": ""}
            return Reply(call.id, False, error=error)
        if isinstance(outcome, Hang):
            await asyncio.get_running_loop().create_future()  # until the timeout cancels it
        if isinstance(outcome, Crash):
            self.dead = True
            raise SandboxCrashed(outcome.reason)
        if isinstance(outcome, OutOfMemory):
            self.dead = True
            raise SandboxOutOfMemory(f"the function exceeded its memory limit of {self.limits.memory_mb} MB")
        if isinstance(outcome, Output):
            return Reply(
                call.id,
                True,
                result=dumps(outcome.result),
                stdout=outcome.stdout,
                stderr=outcome.stderr,
                logs_truncated=outcome.logs_truncated,
            )
        return Reply(call.id, True, result=dumps(outcome))

    async def stop(self) -> None:
        self.stopped = True

    def stats(self) -> SandboxStats | None:
        return None
