"""The test doubles themselves: the manual clock fires timers in due order, and the fake backend is never
offered to users."""

from __future__ import annotations

from hearth.api.app import build_backends
from hearth.config import Settings
from hearth.engine.clock import ManualClock


def test_the_manual_clock_fires_due_timers_in_order_and_skips_cancelled_ones() -> None:
    clock = ManualClock(start=0)
    fired: list[str] = []
    clock.call_later(2, lambda: fired.append("two"))
    clock.call_later(1, lambda: fired.append("one"))
    clock.call_later(1.5, lambda: fired.append("cancelled")).cancel()
    clock.advance(1.9)
    assert (fired, clock.now()) == (["one"], 1.9)
    clock.advance(0.1)
    assert fired == ["one", "two"] and clock.pending == 0


def test_the_fake_backend_is_not_built_for_users() -> None:
    assert "fake" not in build_backends(Settings(), "unit-test")
