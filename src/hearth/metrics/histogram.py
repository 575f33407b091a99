"""Percentiles: exact over raw durations, and approximate over mergeable log-spaced histograms.

Buckets grow by 2**(1/32) (~2.2 %), so a percentile read from a histogram (the bucket's geometric
midpoint) is within ~1.1 % of the exact value. Bucket k holds durations in [B**k, B**(k+1)) µs.
Stored histograms are dense JSON lists, `[first bucket, count, count, ...]`: they decode and merge
several times faster than a mapping (measured on 1,220 minute rollups: the merge was the summary's
main cost).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence

GROWTH = 2 ** (1 / 32)
_LOG_GROWTH = math.log(GROWTH)
RELATIVE_ERROR = (math.sqrt(GROWTH) - 1) * 1.0001  # the promise the tests hold us to
SIZE = 1120  # bucket 1119 starts at ~35 million ms: longer durations share it


def bucket_of(duration_ms: float) -> int:
    micros = max(duration_ms * 1000.0, 1.0)  # sub-microsecond durations share the first bucket
    return min(int(math.log(micros) / _LOG_GROWTH), SIZE - 1)


def bucket_value_ms(bucket: int) -> float:
    """The geometric midpoint of a bucket, in ms."""
    return GROWTH ** (bucket + 0.5) / 1000.0


def add(histogram: dict[int, int], durations_ms: Iterable[float]) -> None:
    """Count durations into a sparse histogram (bucket -> count), the in-memory form while folding."""
    for duration in durations_ms:
        key = bucket_of(duration)
        histogram[key] = histogram.get(key, 0) + 1


def to_dense(histogram: Mapping[int, int], into: Sequence[int] = ()) -> list[int]:
    """The stored form of `histogram` (plus the stored histogram `into`, if given)."""
    counts: dict[int, int] = dict(histogram)
    if len(into) > 1:
        for offset, count in enumerate(into[1:]):
            if count:
                counts[into[0] + offset] = counts.get(into[0] + offset, 0) + count
    if not counts:
        return []
    low, high = min(counts), max(counts)
    dense = [low] + [0] * (high - low + 1)
    for bucket, count in counts.items():
        dense[bucket - low + 1] += count
    return dense


def new_counts() -> list[int]:
    return [0] * SIZE


def add_dense(counts: list[int], dense: Sequence[int]) -> None:
    """Add a stored histogram into a full-size count array (C-speed slice arithmetic)."""
    if len(dense) < 2:
        return
    first, width = int(dense[0]), len(dense) - 1
    counts[first : first + width] = map(operator.add, counts[first : first + width], dense[1:])


def quantiles_from_counts(counts: Sequence[int], qs: Sequence[float]) -> list[float | None]:
    """Nearest-rank percentiles: the bucket holding the ceil(q*n)-th smallest value."""
    total = sum(counts)
    if total == 0:
        return [None for _ in qs]
    ranks = [max(1, math.ceil(q * total)) for q in qs]
    out: list[float | None] = [None] * len(qs)
    seen = 0
    for bucket, count in enumerate(counts):
        if not count:
            continue
        seen += count
        for k, rank in enumerate(ranks):
            if out[k] is None and seen >= rank:
                out[k] = bucket_value_ms(bucket)
        if out[-1] is not None and all(v is not None for v in out):
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
