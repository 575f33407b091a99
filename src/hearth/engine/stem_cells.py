"""Stem cells: generic sandboxes started ahead of need, not yet bound to any function.

The first call of a function with no warm instance takes one, loads the function into it (code,
env, limits) and is served without starting a sandbox on the request path; a replacement starts in
the background. A stem cell serves exactly one function version for its whole life.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hearth.engine.sandbox import Backend, Purpose, Runtime, Sandbox
from hearth.images.catalog import LANGUAGES, default_runtime, runtime_image

PROBE_SETTLE_S = 10.0  # a start-cost probe waits (at most this long) for the boot's own sandbox starts to finish

log = logging.getLogger(__name__)
# Stem cells are kept for each language's default runtime from the start; for another runtime (another
# version, or `provided`) once a function on it has taken its first sandbox (`take` refills what it was asked for).
RUNTIMES: tuple[Runtime, ...] = tuple(default_runtime(language) for language in LANGUAGES)


class StemCells:
    def __init__(self, backends: dict[str, Backend], per_runtime: int) -> None:
        self.backends = backends
        self.per_runtime = per_runtime
        self.ready: dict[tuple[str, Runtime], list[Sandbox]] = {}
        self.starting: dict[tuple[str, Runtime], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.enabled_backends: set[str] = set()
        self.standby_backends: set[str] = set()  # available, stem cells once first needed

    def enable(self, backend: str) -> None:
        """Keep stem cells for `backend` (called once it is known to be available).

        A backend with `stem_cells_at_start` False gets them at its first `take` instead; meanwhile one
        sandbox is started and stopped in the background so that its start cost is measured (GET /api/backends).
        """
        if self._keeps(backend):
            if not self.backends[backend].stem_cells_at_start:
                self.standby_backends.add(backend)
                if self.backends[backend].probe_at_start:
                    self._spawn(self._probe(backend))
                return
            self.enabled_backends.add(backend)
            for runtime in RUNTIMES:
                self._refill((backend, runtime))

    def take(self, backend: str, runtime: Runtime) -> Sandbox | None:
        # First use of this backend, or of one that became available after the start (its guest image
        # was built meanwhile, say): keep stem cells for it from now on.
        if backend in self.standby_backends or (backend not in self.enabled_backends and self._keeps(backend)):
            self.standby_backends.discard(backend)
            self.enabled_backends.add(backend)
        key = (backend, runtime_image(runtime).name)
        cells = self.ready.get(key, [])
        while cells:
            sandbox = cells.pop()
            if sandbox.healthy:
                self._refill(key)
                return sandbox
            self._spawn(sandbox.stop())
        self._refill(key)
        return None

    def _keeps(self, backend: str) -> bool:
        return self.per_runtime > 0 and self.backends[backend].stem_limits(RUNTIMES[0]) is not None

    def count(self) -> int:
        return sum(len(cells) for cells in self.ready.values())

    def counts(self) -> dict[str, int]:
        """Ready stem cells by `backend/runtime` (the default runtimes always, the others once used)."""
        runtimes = (*RUNTIMES, *sorted({rt for (_, rt) in self.ready if rt not in RUNTIMES}))
        return {f"{b}/{rt}": len(self.ready.get((b, rt), [])) for b in sorted(self.enabled_backends) for rt in runtimes}

    def _refill(self, key: tuple[str, Runtime]) -> None:
        if self._closed or key[0] not in self.enabled_backends:
            return
        missing = self.per_runtime - len(self.ready.get(key, [])) - self.starting.get(key, 0)
        for _ in range(max(0, missing)):
            self.starting[key] = self.starting.get(key, 0) + 1
            self._spawn(self._start(key))

    async def _start(self, key: tuple[str, Runtime]) -> None:
        backend = self.backends[key[0]]
        limits = backend.stem_limits(key[1])
        try:
            assert limits is not None
            sandbox = await backend.create(key[1], limits, Purpose.stem_cell())
        except Exception as exc:
            log.warning("could not start a %s stem cell on %s: %s", key[1], key[0], exc)
            return
        finally:
            self.starting[key] -= 1
        if self._closed:
            await sandbox.stop()
            return
        self.ready.setdefault(key, []).append(sandbox)

    async def _probe(self, name: str) -> None:
        """Start and stop one generic sandbox on `name`: its start cost, measured before any function needs it."""
        backend = self.backends[name]
        deadline = asyncio.get_running_loop().time() + PROBE_SETTLE_S
        while not self._closed and any(self.starting.values()) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        limits = backend.stem_limits(RUNTIMES[0])
        if self._closed or limits is None or name not in self.standby_backends:
            return
        try:
            sandbox = await backend.create(RUNTIMES[0], limits, Purpose.probe())
        except Exception as exc:  # recorded in the backend's start costs by its create
            log.warning("start-cost probe of the %s backend failed: %s", name, exc)
            return
        await sandbox.stop()

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop_all(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        cells = [sandbox for sandboxes in self.ready.values() for sandbox in sandboxes]
        self.ready.clear()
        await asyncio.gather(*(sandbox.stop() for sandbox in cells), return_exceptions=True)
