"""Recent start times of a backend's VMs by kind (boot/<runtime>, restore-to-ready/<runtime>, ...)."""

from __future__ import annotations

import statistics
from collections import deque


class StartTimings:
    def __init__(self, keep: int = 50) -> None:
        self._keep = keep
        self._samples: dict[str, deque[float]] = {}

    def record(self, key: str, ms: float) -> None:
        self._samples.setdefault(key, deque(maxlen=self._keep)).append(ms)

    def summary(self) -> dict[str, dict[str, float | int]]:
        """Median and last of the recent samples of each kind."""
        return {
            key: {"p50_ms": round(statistics.median(v), 1), "last_ms": round(v[-1], 1), "samples": len(v)}
            for key, v in sorted(self._samples.items())
            if v
        }
