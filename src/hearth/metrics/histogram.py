"""Percentiles: exact over raw durations, and approximate over mergeable log-spaced histograms.

Buckets grow by 2**(1/32) (~2.2 %), so a percentile read from a histogram (the bucket's geometric
midpoint) is within ~1.1 % of the exact value. Bucket k holds durations in [B**k, B**(k+1)) µs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

GROWTH = 2 ** (1 / 32)
_LOG_GROWTH = math.log(GROWTH)
RELATIVE_ERROR = (math.sqrt(GROWTH) - 1) * 1.0001  # the promise the tests hold us to


def bucket_of(duration_ms: float) -> int:
    micros = max(duration_ms * 1000.0, 1.0)  # sub-microsecond durations share the first bucket
    return int(math.log(micros) / _LOG_GROWTH)


def bucket_value_ms(bucket: int) -> float:
    """The geometric midpoint of a bucket, in ms."""
    return GROWTH ** (bucket + 0.5) / 1000.0


def add(histogram: dict[str, int], durations_ms: Iterable[float]) -> None:
    for duration in durations_ms:
        key = str(bucket_of(duration))
        histogram[key] = histogram.get(key, 0) + 1


def merge(into: dict[str, int], other: Mapping[str, int]) -> None:
    for key, count in other.items():
        into[key] = into.get(key, 0) + int(count)


def quantiles_from_histogram(histogram: Mapping[str, int], qs: Sequence[float]) -> list[float | None]:
    """Nearest-rank percentiles: the bucket holding the ceil(q*n)-th smallest value."""
    buckets = sorted((int(k), int(v)) for k, v in histogram.items() if int(v) > 0)
    total = sum(count for _, count in buckets)
    if total == 0:
        return [None for _ in qs]
    out: list[float | None] = []
    for q in qs:
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket, count in buckets:
            seen += count
            if seen >= rank:
                out.append(bucket_value_ms(bucket))
                break
    return out


def exact_quantiles(values: Sequence[float], qs: Sequence[float]) -> list[float | None]:
    """Percentiles with linear interpolation between closest ranks (numpy's default method)."""
    if not values:
        return [None for _ in qs]
    ordered = sorted(values)
    last = len(ordered) - 1
    out: list[float | None] = []
    for q in qs:
        position = q * last
        low = math.floor(position)
        high = min(low + 1, last)
        out.append(ordered[low] + (ordered[high] - ordered[low]) * (position - low))
    return out
