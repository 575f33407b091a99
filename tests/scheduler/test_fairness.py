"""The claim order of the async queue's fairness policy (pure: no store, no clock)."""

from __future__ import annotations

from hearth.scheduler.queue.fairness import RoundRobin


def test_functions_take_turns_from_the_one_after_the_last_taken() -> None:
    turns = RoundRobin()
    turns.queued(["c", "a", "b"])
    assert turns.turn() == ["a", "b", "c"]
    turns.took("a")
    assert turns.turn() == ["b", "c", "a"]
    turns.took("c")
    assert turns.turn() == ["a", "b", "c"]  # wraps around
    assert turns.turn(exclude={"a"}) == ["b", "c"]


def test_a_claim_visits_at_most_max_per_claim_functions() -> None:
    turns = RoundRobin(max_per_claim=2)
    turns.queued(["a", "b", "c"])
    turns.took("a")
    assert turns.turn() == ["b", "c"]
    assert turns.turn(exclude={"b"}) == ["c", "a"]


def test_drained_functions_leave_until_queued_again_or_refreshed() -> None:
    turns = RoundRobin()
    turns.queued(["a", "b"])
    turns.drained("a")
    assert turns.turn() == ["b"]
    turns.queued(["a"])
    assert turns.turn() == ["a", "b"]
    turns.refresh(["z"], now=100.0)
    assert turns.turn() == ["z"]


def test_retries_join_when_due_and_the_store_is_looked_at_after_refresh_s() -> None:
    turns = RoundRobin(refresh_s=1.0)
    turns.refresh([], now=100.0)
    turns.due_at("late", 105.0)
    turns.due_at("late", 103.0)  # the earliest retry counts
    assert not turns.stale(100.5) and turns.turn() == []
    assert turns.stale(103.0) and turns.turn() == ["late"]
