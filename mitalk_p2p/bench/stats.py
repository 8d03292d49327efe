"""Percentiles and other small arithmetic for benchmark samples (integers in µs)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(
    samples_us: Iterable[int], keys: Sequence[str] = ("p50", "p95", "p99", "max")
) -> dict[str, float | None]:
    """Percentiles of samples in microseconds, in milliseconds rounded to 0.001 ms.

    ``keys`` names the figures wanted: ``pNN`` for a percentile, ``max``, ``mean``.
    """
    ordered = sorted(samples_us)
    out: dict[str, float | None] = {}
    for key in keys:
        if key == "max":
            value: float | None = ordered[-1] if ordered else None
        elif key == "mean":
            value = sum(ordered) / len(ordered) if ordered else None
        elif key.startswith("p"):
            value = percentile(ordered, float(key[1:]) / 100)
        else:
            raise ValueError(f"unknown summary figure {key!r}")
        out[key] = None if value is None else round(value / 1000, 3)
    return out


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence (the mean of the middle two when even)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
