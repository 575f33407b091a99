"""Per-user request rates: a token bucket per user whose `max_requests_per_s` is set.

Every request a user's key authenticates (/api, key-protected triggers, the Lambda API) takes a
token; the bucket holds one second's worth (at least one) and refills continuously. Past it: 429
`TooManyRequests` with `Retry-After`. Buckets live in each node's memory, so with several nodes a
user gets the rate on each. The admin key is never limited.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from fastapi import Request

from hearth.api.errors import ApiError

if TYPE_CHECKING:
    from hearth.api.auth import Principal  # auth calls check_rate


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, when they were counted)

    def wait_s(self, user: str, rate: float) -> float:
        """Takes a token of `user`'s bucket: 0 if there was one, else how long until there is."""
        now = time.monotonic()
        capacity = max(1.0, rate)
        tokens, counted = self._buckets.get(user, (capacity, now))
        tokens = min(capacity, tokens + (now - counted) * rate)
        if tokens >= 1.0:
            self._buckets[user] = (tokens - 1.0, now)
            return 0.0
        self._buckets[user] = (tokens, now)
        return (1.0 - tokens) / rate


def check_rate(request: Request, caller: Principal) -> None:
    """Raises 429 if the caller's user is over their `max_requests_per_s` (None: no limit)."""
    user, rate = caller.user, caller.max_requests_per_s
    if rate is None:
        return
    wait = request.app.state.hearth.rates.wait_s(user, rate)
    if wait > 0:
        raise ApiError(
            429,
            "TooManyRequests",
            f"user {user!r} is limited to {rate:g} requests per second; retry in {wait:.2f} s",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
            limit=rate,
        )
