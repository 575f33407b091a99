"""The time source of the pool and the batcher: the real monotonic clock, or a manual one in tests.

Keep-alive, capacity waits and batch windows read the time and set timers only through a `Clock`, so
unit tests (tests/unit/) move time forward explicitly instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K")


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` on the event loop once `delay_s` seconds have passed."""
        ...

    async def sleep(self, delay_s: float) -> None: ...


class MonotonicClock:
    """The real clock: `time.monotonic` and the running event loop's timers."""

    def __init__(self) -> None:
        self._loops = threading.local()  # each thread's last running loop

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        # asyncio.get_running_loop() makes a getpid() system call each time (~5% of the event loop's time
        # with a queue of waiting calls, each setting a timer): a thread runs one loop at a time, so the
        # loop this thread last ran is still the running one as long as it runs.
        loop: asyncio.AbstractEventLoop | None = getattr(self._loops, "loop", None)
        if loop is None or not loop.is_running():
            loop = self._loops.loop = asyncio.get_running_loop()
        return loop.call_later(delay_s, callback)

    async def sleep(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)


MONOTONIC = MonotonicClock()


class ManualClock:
    """A clock that moves only when told (`advance`), firing the timers that fall due: for tests."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        timer = _ManualTimer(callback)
        heapq.heappush(self._timers, (self._now + max(0.0, delay_s), next(self._order), timer))
        return timer

    async def sleep(self, delay_s: float) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_later(delay_s, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            timer.cancel()

    def advance(self, seconds: float) -> None:
        """Move time forward and run every timer due by then, in due order (callbacks run synchronously)."""
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            due, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, due)
            if not timer.cancelled:
                timer.callback()
        self._now = target

    @property
    def pending(self) -> int:
        """Timers set and neither fired nor cancelled."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)


class _ManualTimer:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Deadlines(Generic[K]):
    """Many deadlines, one timer: for the calls waiting on a channel or a pool.

    Not a timer per call (set, then cancelled when the call ends in time, as nearly all do): the one timer
    sits at the earliest deadline that may be due; when it fires it expires what is due and moves to the
    next. A key that leaves before its deadline (`discard`) leaves the timer as it is.
    """

    SLACK_S = 0.001  # a loop's timer may fire this early by its clock (uvloop's is in ms): within it is due

    def __init__(self, clock: Clock, expire: Callable[[K], None]) -> None:
        self._clock = clock
        self._expire = expire
        self._due: dict[K, float] = {}
        self._timer: Timer | None = None
        self._timer_at = 0.0

    def add(self, key: K, at: float) -> None:
        """`key` expires at `at` (on the clock's scale) unless discarded first."""
        self._due[key] = at
        if self._timer is None or at < self._timer_at:
            self._arm(at)

    def discard(self, key: K) -> None:
        self._due.pop(key, None)

    def cancel(self) -> None:
        """Stop the timer (its owner is closing); keys added later arm it again."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, at: float) -> None:
        self.cancel()
        self._timer_at = at
        self._timer = self._clock.call_later(max(0.0, at - self._clock.now()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._clock.now() + self.SLACK_S
        due = [key for key, at in self._due.items() if at <= now]
        for key in due:
            self._expire(key)
        later = [at for at in self._due.values() if at > now]
        if later:
            self._arm(min(later))
