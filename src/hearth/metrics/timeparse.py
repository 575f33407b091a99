"""Windows (`5m`, `1h`, `3600`) and points in time (`15m` ago, ISO 8601, unix seconds) of query strings."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(value: str) -> float:
    """`90`, `90s`, `5m`, `1h`, `7d`, `2w` → seconds; ValueError otherwise."""
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a duration (e.g. 30s, 5m, 1h, 7d or a number of seconds)")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def parse_since(value: str, now: float | None = None) -> float:
    """A duration means that long ago; otherwise unix seconds or an ISO 8601 time (UTC if no zone)."""
    now = time.time() if now is None else now
    text = value.strip()
    if _DURATION.match(text) and text[-1:].isalpha():
        return now - parse_duration(text)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not a time (e.g. 15m, 2026-11-23T10:00:00Z or unix seconds)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
