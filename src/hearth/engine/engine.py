"""The execution engine: backends + pools + the invocation path (acquire, invoke, classify, release)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hearth.engine.batch_handler import batch_call, split_reply
from hearth.engine.batching import Batcher, BatchPolicy
from hearth.engine.clock import MONOTONIC, Clock
from hearth.engine.pool import CapacityError, Instance, PoolRetired, VersionPool
from hearth.engine.protocol import decode_json
from hearth.engine.records import CallSite, RecordSink, invocation_record
from hearth.engine.sandbox import (
    Backend,
    Call,
    FunctionInitError,
    FunctionSpec,
    Purpose,
    Reply,
    Sandbox,
    SandboxError,
    SandboxOutOfMemory,
    SandboxTimeout,
)
from hearth.engine.snapshot import EngineSnapshot, InstanceCounts
from hearth.engine.stem_cells import StemCells

log = logging.getLogger(__name__)
A = TypeVar("A")

# Statuses of an invocation record (docs/api.md): ok, error, timeout, oom, crashed, throttled.
STATUS_BY_ERROR = {SandboxTimeout: "timeout", SandboxOutOfMemory: "oom"}


# Unique across restarts (start time + randomness) and cheap per call (no urandom syscall per id).
_ID_PREFIX = f"inv_{int(time.time()):x}{secrets.token_hex(3)}"
_id_counter = itertools.count()


def new_invocation_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):08x}"


@dataclass
class InvocationResult:
    invocation_id: str
    function: str
    version: int
    status: str
    backend: str
    # The handler's result as the agent encoded it (JSON): handed on as it is, parsed only when asked (`result`).
    result_json: bytes | None = None
    error: dict[str, Any] | None = None
    stdout: str = ""
    stderr: str = ""
    logs_truncated: bool = False
    path: str | None = None
    sandbox_id: str | None = None
    started_at: float = field(default_factory=time.time)
    duration_ms: float = 0.0
    queue_ms: float = 0.0
    init_ms: float | None = None
    cpu_ms: float | None = None  # the runtime process' CPU time during the call, as its agent measured it
    memory_peak_bytes: int | None = None  # the runtime process' peak RSS so far
    retry_after_s: float | None = None
    client_context: Any = None  # Lambda's client context (a JSON object), passed to custom runtimes' headers

    @property
    def cold(self) -> bool:
        return self.path in ("cold", "stem")

    @property
    def result(self) -> Any:
        """The result as a value: parsed from `result_json` (None when there is none)."""
        return None if self.result_json is None else decode_json(self.result_json)


@dataclass(frozen=True)
class EngineConfig:
    keep_alive_s: float = 600.0
    capacity_wait_s: float = 10.0
    max_waiting: int = 1000
    reap_interval_s: float = 1.0
    stem_cells_per_runtime: int = 1


class Engine:
    def __init__(
        self,
        backends: dict[str, Backend],
        config: EngineConfig,
        record: RecordSink | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        """`record` takes the invocation record of every call (hearth.engine.records); `clock` times keep-alive,
        capacity waits and batch windows (hearth.engine.clock: a manual one in unit tests)."""
        self.backends = backends
        self.config = config
        self.clock = clock
        self.pools: dict[tuple[str, int], VersionPool] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._record = record
        self.stem_cells = StemCells(backends, config.stem_cells_per_runtime)
        self.batchers: dict[tuple[str, int], Batcher] = {}

    # ----- lifecycle
    async def start(self) -> None:
        for name, backend in self.backends.items():
            ok, _ = await asyncio.to_thread(backend.availability)
            if ok:
                removed = await backend.cleanup_orphans()
                if removed:
                    log.info("removed %d sandboxes left by a previous run (%s)", removed, backend.name)
                self.stem_cells.enable(name)
        self._reaper = asyncio.create_task(self._reap_forever())

    async def shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(
            self.stem_cells.stop_all(), *(pool.stop_all() for pool in self.pools.values()), return_exceptions=True
        )
        self.pools.clear()
        for backend in self.backends.values():
            await backend.close()

    # ----- pools
    def pool_for(self, spec: FunctionSpec) -> VersionPool:
        pool = self.pools.get(spec.key)
        if pool is None:
            pool = VersionPool(spec, self._produce_sandbox, self.config.max_waiting, self.clock)
            self.pools[spec.key] = pool
            pool.top_up()
        return pool

    def deploy(self, spec: FunctionSpec) -> None:
        """A version became current: retire every other version of the function, warm this one."""
        self.retire(spec.name, keep_version=spec.version)
        if spec.min_warm:
            self.pool_for(spec)

    def retire(self, name: str, keep_version: int | None = None) -> None:
        for (function, version), pool in list(self.pools.items()):
            if function == name and version != keep_version:
                pool.retire()

    async def _produce_sandbox(self, spec: FunctionSpec) -> tuple[Sandbox, str, float]:
        """A sandbox loaded with `spec`: a stem cell if one is ready, else a freshly started one."""
        backend = self.backends[spec.backend]
        started = time.perf_counter()
        image = spec.image  # an image function: no stem cell fits
        sandbox = None if spec.network or image else self.stem_cells.take(spec.backend, spec.sandbox_runtime)
        path = "stem" if sandbox is not None else "cold"
        purpose = Purpose.serve(spec, str(image) if image else None)
        if sandbox is None:
            sandbox = await backend.create(spec.sandbox_runtime, backend.limits_for(spec), purpose)
        try:
            await sandbox.load(spec)
        except SandboxError:
            await sandbox.stop()
            if path != "stem":
                raise
            # The stem cell died while it waited (e.g. dockerd restarted): start one for this call instead.
            path = "cold"
            sandbox = await backend.create(spec.sandbox_runtime, backend.limits_for(spec), purpose)
            try:
                await sandbox.load(spec)
            except BaseException:
                await sandbox.stop()
                raise
        except BaseException:
            await sandbox.stop()
            raise
        return sandbox, path, (time.perf_counter() - started) * 1000

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.reap_interval_s)
            try:
                self.reap()
            except Exception:
                log.exception("pool reaper failed")

    def reap(self) -> None:
        now = self.clock.now()
        for key, pool in list(self.pools.items()):
            pool.evict_idle(self.config.keep_alive_s, now)
            if pool.retired and pool.empty:
                del self.pools[key]
                self.batchers.pop(key, None)
            else:
                pool.top_up()

    # ----- invocation
    async def invoke(
        self,
        resolve: Callable[[], FunctionSpec | None],
        event: Any,
        *,
        call: CallSite,
        answer: Callable[[InvocationResult], A],
        invocation_id: str | None = None,
        client_context: Any = None,
    ) -> A:
        """Run one invocation of the function `resolve()` names; raises LookupError if there is none.

        `resolve` is called again if the version it gave is retired while we wait, so a caller is
        never served by a version that an update has already replaced. Functions with batching
        enabled go through their batcher, which groups calls into one round trip.

        Returns `answer(result)`: the caller's reading of the result (an HTTP response, a job's
        outcome), which may still change it (a trigger's malformed response is the call's error).
        Then, whatever the outcome, the call is recorded here, once (`call` says how it arrived).
        """
        spec = resolve()
        if spec is None:
            raise LookupError("function not found")
        res = InvocationResult(invocation_id or new_invocation_id(), spec.name, spec.version, "ok", spec.backend)
        res.client_context = client_context
        policy = BatchPolicy.of(spec)
        if policy is not None:
            batcher = self.batchers.get(spec.key)
            if batcher is None or batcher.policy != policy:
                batcher = self.batchers[spec.key] = Batcher(policy, self.dispatch, self.clock)
            await batcher.submit(res, event, resolve)
        else:
            await self.dispatch(spec, resolve, [(res, event)], batch_handler=False)
        try:
            return answer(res)
        finally:
            self._on_result(res, call)

    def _on_result(self, res: InvocationResult, call: CallSite) -> None:
        """The one place an invocation is recorded."""
        if self._record is None:
            return
        try:
            self._record(invocation_record(res, call))
        except Exception:
            log.exception("recording invocation %s failed", res.invocation_id)

    async def dispatch(
        self,
        spec: FunctionSpec,
        resolve: Callable[[], FunctionSpec | None],
        items: list[tuple[InvocationResult, Any]],
        *,
        batch_handler: bool,
    ) -> None:
        """Acquire an instance and run `items` in one round trip (one invoke frame, or a batch frame).

        Fills in every item's result; never raises for a function or sandbox failure.
        """
        results = [res for res, _ in items]
        t0 = time.perf_counter()
        try:
            pool, instance, path = await self._acquire(spec, resolve)
        except CapacityError as exc:
            _fail_all(results, "throttled", _error("TooManyRequests", str(exc)), t0, retry_after_s=exc.retry_after_s)
            return
        except FunctionInitError as exc:
            error = {**exc.error, "phase": "init"}
            init_log = str(error.pop("log", "") or "")  # what the code printed while loading, and the error
            _fail_all(results, "error", error, t0)
            for res in results:
                res.stdout = init_log
            return
        except SandboxError as exc:
            _fail_all(results, "crashed", _error(exc.error_type, str(exc)), t0)
            return
        spec = instance.spec
        waited_ms = (time.perf_counter() - t0) * 1000
        init_ms = instance.init_ms if path != "warm" else None
        for res in results:
            res.version, res.path, res.sandbox_id, res.init_ms = spec.version, path, instance.sandbox.id, init_ms
            res.queue_ms += max(0.0, waited_ms - (init_ms or 0.0))
        calls = [Call(res.invocation_id, event, res.client_context) for res, event in items]
        batched = len(calls) > 1 or batch_handler
        t1 = time.perf_counter()
        try:
            if batch_handler:
                answer = await instance.sandbox.invoke([batch_call(calls)], spec.timeout_s)
                replies = split_reply(answer[0], calls) if answer else []
            else:
                replies = await instance.sandbox.invoke(calls, spec.timeout_s)
        except SandboxTimeout:
            error = _error("Timeout", f"the function did not finish within its timeout of {spec.timeout_s:g} s")
            _fail_all(results, "timeout", error, t1)
        except SandboxError as exc:
            _fail_all(results, STATUS_BY_ERROR.get(type(exc), "crashed"), _error(exc.error_type, str(exc)), t1)
        else:
            by_id = {reply.id: reply for reply in replies}
            elapsed_ms = (time.perf_counter() - t1) * 1000
            for res in results:
                _apply_reply(res, by_id.get(res.invocation_id), elapsed_ms, batched)
            if path != "warm" and (init_log := instance.sandbox.take_init_log()):  # as Lambda's log: init output first
                results[0].stdout = init_log + results[0].stdout
        finally:
            pool.release(instance)

    async def _acquire(
        self, spec: FunctionSpec, resolve: Callable[[], FunctionSpec | None]
    ) -> tuple[VersionPool, Instance, str]:
        while True:
            pool = self.pool_for(spec)
            try:
                instance, path = await pool.acquire(self.config.capacity_wait_s)
                return pool, instance, path
            except PoolRetired:
                fresh = resolve()
                if fresh is None:
                    raise LookupError("function not found") from None
                spec = fresh

    # ----- introspection
    def snapshot(self) -> EngineSnapshot:
        """Counts of instances, waiting calls and stem cells, as plain data (metrics read this)."""
        functions: dict[str, InstanceCounts] = {}
        warm = busy = starting = waiting = 0
        for (function, _), pool in self.pools.items():
            pool_busy = sum(1 for instance in pool.instances if instance.inflight)
            pool_warm = len(pool.instances) - pool_busy
            warm, busy, starting, waiting = (
                warm + pool_warm,
                busy + pool_busy,
                starting + pool.starting,
                waiting + pool.waiting,
            )
            counts = functions.get(function, InstanceCounts())
            if not pool.retired:
                counts = InstanceCounts(
                    counts.warm + pool_warm, counts.busy + pool_busy, counts.starting + pool.starting
                )
            functions[function] = counts
        return EngineSnapshot(
            functions=functions,
            total=InstanceCounts(warm, busy, starting),
            waiting_calls=waiting,
            stem_cells=self.stem_cells.counts(),
            stem_cells_ready=self.stem_cells.count(),
        )

    def live_sandboxes(self) -> list[tuple[str | None, Sandbox]]:
        """(function, sandbox) of every sandbox running now; a stem cell is no function's yet (None)."""
        found: list[tuple[str | None, Sandbox]] = [
            (instance.spec.name, instance.sandbox) for pool in self.pools.values() for instance in pool.instances
        ]
        found += [(None, sandbox) for cells in self.stem_cells.ready.values() for sandbox in cells]
        return found

    def instances_of(self, name: str) -> dict[str, int]:
        counts = {"warm": 0, "busy": 0, "starting": 0}
        for (function, _), pool in self.pools.items():
            if function != name or pool.retired:
                continue
            counts["starting"] += pool.starting
            for instance in pool.instances:
                counts["busy" if instance.inflight else "warm"] += 1
        return counts


def _error(error_type: str, message: str) -> dict[str, Any]:
    return {"type": error_type, "message": message}


def _fail_all(
    results: list[InvocationResult],
    status: str,
    error: dict[str, Any],
    since: float,
    retry_after_s: float | None = None,
) -> None:
    duration_ms = (time.perf_counter() - since) * 1000
    for res in results:
        res.status, res.error, res.duration_ms, res.retry_after_s = status, dict(error), duration_ms, retry_after_s


def _apply_reply(res: InvocationResult, reply: Reply | None, elapsed_ms: float, batched: bool) -> None:
    res.duration_ms = elapsed_ms
    if reply is None:
        res.status, res.error = "crashed", _error("ProtocolError", "the agent's answer had no result for this call")
        return
    if batched:  # items of a batch run one after another: each one's own time is the agent's measurement
        res.duration_ms = reply.duration_ms
    res.stdout = reply.stdout
    res.stderr = reply.stderr
    res.logs_truncated = reply.logs_truncated
    res.cpu_ms = reply.cpu_ms
    res.memory_peak_bytes = reply.max_rss_kb * 1024 if reply.max_rss_kb is not None else None
    if reply.ok:
        res.result_json = reply.result
    else:
        res.status = "error"
        res.error = reply.error or _error("HandlerError", "the handler failed")
