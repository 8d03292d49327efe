"""What one scenario run produced: metrics, expectation outcomes and tree pictures.

A :class:`ScenarioResult` is plain data.  The command line prints it as a table
or as JSON (:meth:`ScenarioResult.to_json`), and :mod:`.report` draws it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs


@attrs.frozen
class ExpectationResult:
    name: str
    ok: bool
    detail: str


@attrs.frozen
class TreeSnapshot:
    """The media tree as the host planned it at ``time``.

    ``parents`` maps each member's name to its parent's name; the root (the
    host) has none and is named in ``root``.  ``label`` says why the picture was
    taken, for example ``"before crash of l017"`` or ``"after repair"``.
    """

    time: float
    label: str
    root: str
    parents: tuple[tuple[str, str], ...]
    highlight: tuple[str, ...] = ()
    """Names to draw apart, for example the crashed relay and its orphans."""


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of already sorted values, or ``None`` when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@attrs.frozen
class ScenarioResult:
    scenario: str
    description: str
    seed: int
    peers: int
    virtual_s: float
    wall_s: float
    trace_digest: str
    delivery_ratio: dict[str, float]
    """Per listener name: frames delivered / frames it should have heard."""
    latencies_ms: tuple[float, ...]
    """Sorted delivery latencies (speaker's send to listener's verified arrival)."""
    tree_repair_ms: tuple[float, ...]
    host_takeover_ms: tuple[float, ...]
    expectations: tuple[ExpectationResult, ...]
    trees: tuple[TreeSnapshot, ...] = ()
    counters: dict[str, int] = attrs.Factory(dict)
    """Network and peer counters: datagrams sent, lost, duplicated, queued drops..."""
    concealed_ratio: float | None = None
    """Share of played samples that were concealed, when listeners decode audio."""

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.expectations)

    def latency_percentiles(self) -> dict[str, float | None]:
        values = self.latencies_ms
        return {
            "p50": _round(percentile(values, 0.50)),
            "p95": _round(percentile(values, 0.95)),
            "p99": _round(percentile(values, 0.99)),
        }

    def metrics(self) -> dict[str, Any]:
        ratios = list(self.delivery_ratio.values())
        return {
            "delivery_ratio": {
                "min": _round(min(ratios), 6) if ratios else None,
                "mean": _round(sum(ratios) / len(ratios), 6) if ratios else None,
            },
            "latency_ms": self.latency_percentiles(),
            "tree_repair_ms": {"max": _round(max(self.tree_repair_ms, default=None))},
            "host_takeover_ms": {"max": _round(max(self.host_takeover_ms, default=None))},
            "concealed_ratio": _round(self.concealed_ratio, 6),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "peers": self.peers,
            "virtual_s": round(self.virtual_s, 3),
            "wall_s": round(self.wall_s, 3),
            "trace_digest": self.trace_digest,
            "ok": self.ok,
            "metrics": self.metrics(),
            "expectations": [
                {"name": e.name, "ok": e.ok, "detail": e.detail} for e in self.expectations
            ],
            "counters": dict(sorted(self.counters.items())),
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or math.isinf(value) or math.isnan(value):
        return None
    return round(value, digits)
