"""The simulated network: per-link delay, loss, bursts, duplication, reordering and uplinks.

Everything random is drawn from one seeded :class:`random.Random`, in the order
the simulator asks, so a run is a pure function of the scenario and the seed.

A datagram from A to B goes through, in order:

1. A's uplink, a FIFO queue drained at ``upload_kbps``: a datagram waits behind
   everything A already sent, and is dropped at the tail when the wait would
   exceed ``queue_ms`` (an overloaded relay really delays, then loses, frames);
2. the link's loss: independent loss at ``loss``, or, with a Gilbert–Elliott
   burst model, loss at ``burst_loss`` while the link is in its bad state;
3. the link's delay: ``latency_ms`` plus a jitter draw from ``distribution``,
   plus ``reorder_ms`` more for a ``reorder`` share of datagrams, so later
   datagrams overtake them;
4. duplication: a ``duplicate`` share arrives twice, each with its own delay.

Control links model a reliable, ordered stream (a WebSocket): no loss and no
reordering, but the same uplink queue and delay.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import attrs

IP_UDP_OVERHEAD = 28
"""Bytes an IPv4 and a UDP header add to each datagram."""
STREAM_OVERHEAD = 40
"""Bytes of IPv4, TCP and WebSocket framing charged to each control message."""

DISTRIBUTIONS = ("uniform", "normal", "exponential", "pareto")
PARETO_SHAPE = 2.5


@attrs.frozen(kw_only=True)
class LinkModel:
    """How one direction of a link between two peers behaves."""

    latency_ms: float = 10.0
    jitter_ms: float = 0.0
    distribution: str = attrs.field(default="uniform")
    """How jitter is drawn: ``uniform`` (±jitter), ``normal`` (σ = jitter, clipped
    at zero delay), ``exponential`` (mean jitter, added) or ``pareto`` (heavy
    tailed with mean jitter, added)."""
    loss: float = 0.0
    burst_enter: float = 0.0
    """Per-datagram chance that a link in its good state turns bad (0 disables bursts)."""
    burst_exit: float = 0.25
    """Per-datagram chance that a bad link recovers: mean burst length is 1/burst_exit."""
    burst_loss: float = 1.0
    """Loss probability while the link is bad."""
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_ms: float = 40.0

    @distribution.validator
    def _known(self, _attribute: object, value: str) -> None:
        if value not in DISTRIBUTIONS:
            raise ValueError(f"unknown delay distribution {value!r}: use one of {DISTRIBUTIONS}")

    def with_changes(self, **changes: float | str) -> LinkModel:
        return attrs.evolve(self, **changes)  # type: ignore[arg-type]


@attrs.frozen(kw_only=True)
class Uplink:
    """A peer's upload: ``kbps`` of 0 means unlimited."""

    kbps: float = 0.0
    queue_ms: float = 500.0


@attrs.define(eq=False)
class NetworkCounters:
    datagrams_sent: int = 0
    datagrams_delivered: int = 0
    datagrams_lost: int = 0
    datagrams_burst_lost: int = 0
    datagrams_duplicated: int = 0
    datagrams_reordered: int = 0
    datagrams_queue_dropped: int = 0
    datagrams_unreachable: int = 0
    messages_sent: int = 0
    messages_delivered: int = 0
    messages_unreachable: int = 0
    bytes_sent: int = 0

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


@attrs.define(eq=False)
class Network:
    """The link models and uplinks of ``count`` peers, numbered 0..count-1."""

    rng: random.Random
    default: LinkModel
    uplinks: list[Uplink]
    counters: NetworkCounters = attrs.Factory(NetworkCounters)
    _overrides: dict[tuple[int, int], LinkModel] = attrs.Factory(dict)
    _bad: set[tuple[int, int]] = attrs.Factory(set)
    _busy_until: list[float] = attrs.field(init=False)
    _stream_last: dict[tuple[int, int], float] = attrs.Factory(dict)
    _groups: dict[int, int] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        self._busy_until = [0.0] * len(self.uplinks)

    # --- configuration ----------------------------------------------------------

    def link(self, source: int, target: int) -> LinkModel:
        return self._overrides.get((source, target), self.default)

    def set_link(self, a: int, b: int, model: LinkModel) -> None:
        """Override both directions between ``a`` and ``b``."""
        self._overrides[(a, b)] = model
        self._overrides[(b, a)] = model

    def change_everywhere(self, **changes: float | str) -> None:
        """Apply ``changes`` to the default and to every override (e.g. a new loss rate)."""
        self.default = self.default.with_changes(**changes)
        for pair, model in list(self._overrides.items()):
            self._overrides[pair] = model.with_changes(**changes)

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Only peers in the same group reach each other; unlisted peers form one more group."""
        self._groups = {peer: number for number, group in enumerate(groups, 1) for peer in group}

    def heal(self) -> None:
        self._groups = {}

    def reachable(self, a: int, b: int) -> bool:
        groups = self._groups
        return not groups or groups.get(a, 0) == groups.get(b, 0)

    # --- transmission -------------------------------------------------------------

    def datagram_arrivals(self, source: int, target: int, size: int, now: float) -> list[float]:
        """When the copies of one datagram reach ``target``: none, one or two times."""
        counters = self.counters
        counters.datagrams_sent += 1
        wire = size + IP_UDP_OVERHEAD
        counters.bytes_sent += wire
        if not self.reachable(source, target):
            counters.datagrams_unreachable += 1
            return []
        departure = self._depart(source, wire, now, droppable=True)
        if departure is None:
            counters.datagrams_queue_dropped += 1
            return []
        model = self._overrides.get((source, target), self.default)
        if self._lost(model, source, target):
            return []
        arrivals = [departure + self._delay(model)]
        if model.duplicate and self.rng.random() < model.duplicate:
            counters.datagrams_duplicated += 1
            arrivals.append(departure + self._delay(model))
        return arrivals

    def message_arrival(self, source: int, target: int, size: int, now: float) -> float | None:
        """When a control message reaches ``target``, in order behind earlier ones."""
        counters = self.counters
        counters.messages_sent += 1
        wire = size + STREAM_OVERHEAD
        counters.bytes_sent += wire
        if not self.reachable(source, target):
            counters.messages_unreachable += 1
            return None
        departure = self._depart(source, wire, now, droppable=False)
        assert departure is not None
        model = self._overrides.get((source, target), self.default)
        arrival = departure + self._jittered(model)
        pair = (source, target)
        arrival = max(arrival, self._stream_last.get(pair, 0.0))
        self._stream_last[pair] = arrival
        return arrival

    def backlog(self, peer: int, now: float) -> float:
        """Seconds of data waiting in ``peer``'s uplink."""
        return max(0.0, self._busy_until[peer] - now)

    # --- internals ------------------------------------------------------------------

    def _depart(self, source: int, wire_bytes: int, now: float, *, droppable: bool) -> float | None:
        uplink = self.uplinks[source]
        if not uplink.kbps:
            return now
        start = max(now, self._busy_until[source])
        if droppable and (start - now) * 1000.0 > uplink.queue_ms:
            return None
        done = start + wire_bytes * 8 / (uplink.kbps * 1000.0)
        self._busy_until[source] = done
        return done

    def _lost(self, model: LinkModel, source: int, target: int) -> bool:
        rng, counters = self.rng, self.counters
        if model.burst_enter:
            pair = (source, target)
            bad = pair in self._bad
            if bad and rng.random() < model.burst_exit:
                self._bad.discard(pair)
                bad = False
            elif not bad and rng.random() < model.burst_enter:
                self._bad.add(pair)
                bad = True
            if bad and rng.random() < model.burst_loss:
                counters.datagrams_burst_lost += 1
                return True
        if model.loss and rng.random() < model.loss:
            counters.datagrams_lost += 1
            return True
        return False

    def _delay(self, model: LinkModel) -> float:
        delay = self._jittered(model)
        if model.reorder and self.rng.random() < model.reorder:
            self.counters.datagrams_reordered += 1
            delay += model.reorder_ms / 1000.0
        return delay

    def _jittered(self, model: LinkModel) -> float:
        jitter = model.jitter_ms
        latency = model.latency_ms
        if jitter:
            rng = self.rng
            kind = model.distribution
            if kind == "uniform":
                latency += rng.uniform(-jitter, jitter)
            elif kind == "normal":
                latency += rng.gauss(0.0, jitter)
            elif kind == "exponential":
                latency += rng.expovariate(1.0 / jitter)
            else:
                scale = jitter * (PARETO_SHAPE - 1) / PARETO_SHAPE
                latency += scale * rng.paretovariate(PARETO_SHAPE)
        return max(0.0, latency) / 1000.0
