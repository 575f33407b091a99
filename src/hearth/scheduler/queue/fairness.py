"""The order in which a claim visits functions: they take turns, so one function's backlog delays no other.

Round robin from where the last claim stopped, each function's oldest job first: a deep backlog of
one function neither delays the jobs of others nor costs a scan per claim while that function is at
its cap. The queue tells the policy which functions may have due jobs: from its own enqueues, from
retries coming due, and from a look at the store (`refresh`) at most every `refresh_s` seconds or
when nothing known was claimable (the jobs of other nodes).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

FUNCTIONS_REFRESH_S = 1.0
MAX_FUNCTIONS_PER_CLAIM = 64


class RoundRobin:
    def __init__(self, refresh_s: float = FUNCTIONS_REFRESH_S, max_per_claim: int = MAX_FUNCTIONS_PER_CLAIM) -> None:
        self.refresh_s = refresh_s
        self.max_per_claim = max_per_claim
        self._last = ""  # the function the last claim took a job of
        self._known: set[str] = set()  # functions that may have due jobs
        self._refreshed_at = 0.0
        self._due_later: dict[str, float] = {}  # function -> earliest retry this process queued

    def queued(self, functions: Iterable[str]) -> None:
        """These functions have jobs due now."""
        self._known.update(functions)

    def due_at(self, function: str, at: float) -> None:
        """`function` has a job due at `at`."""
        self._due_later[function] = min(at, self._due_later.get(function, at))

    def stale(self, now: float) -> bool:
        """Retries that came due join the known functions; True when the store should be looked at again."""
        for name, due_at in list(self._due_later.items()):
            if due_at <= now:
                self._known.add(name)
                self._due_later.pop(name, None)
        return now - self._refreshed_at > self.refresh_s

    def refresh(self, functions: Iterable[str], now: float) -> None:
        """The functions the store has queued jobs of, as of `now`."""
        self._known = set(functions)
        self._refreshed_at = now

    def turn(self, exclude: Collection[str] = ()) -> list[str]:
        """The functions to visit this claim, in order: from the one after the last taken, wrapping around."""
        functions = sorted(self._known)
        start = next((k for k, name in enumerate(functions) if name > self._last), 0)
        return [name for name in functions[start:] + functions[:start] if name not in exclude][: self.max_per_claim]

    def took(self, function: str) -> None:
        self._last = function

    def drained(self, function: str) -> None:
        """Nothing more of `function` is due: known again once it gets jobs (or at the refresh)."""
        self._known.discard(function)
