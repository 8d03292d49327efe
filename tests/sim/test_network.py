"""The network model: loss, bursts, duplication, reordering, uplinks and partitions."""

from __future__ import annotations

import itertools
import random

from mitalk_p2p.sim.network import IP_UDP_OVERHEAD, LinkModel, Network, Uplink


def network(model: LinkModel, *, uplinks: list[Uplink] | None = None, seed: int = 1) -> Network:
    return Network(random.Random(seed), model, uplinks or [Uplink(), Uplink(), Uplink()])


def test_random_loss_matches_its_rate() -> None:
    net = network(LinkModel(loss=0.2))
    delivered = sum(bool(net.datagram_arrivals(0, 1, 100, 0.0)) for _ in range(20_000))
    assert 0.78 < delivered / 20_000 < 0.82
    assert net.counters.datagrams_lost == 20_000 - delivered


def test_gilbert_elliott_loss_comes_in_bursts() -> None:
    net = network(LinkModel(burst_enter=0.01, burst_exit=0.25, burst_loss=1.0))
    lost = [not net.datagram_arrivals(0, 1, 100, 0.0) for _ in range(50_000)]
    runs, current = [], 0
    for gone in lost:
        if gone:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    mean_run = sum(runs) / len(runs)
    assert 3.0 < mean_run < 5.0  # mean burst length is 1 / burst_exit = 4
    share = sum(lost) / len(lost)
    assert 0.02 < share < 0.06  # stationary bad share: 0.01 / (0.01 + 0.25), about 3.8 %
    independent = network(LinkModel(loss=share))
    ind = [not independent.datagram_arrivals(0, 1, 100, 0.0) for _ in range(50_000)]
    ind_runs = sum(1 for a, b in itertools.pairwise(ind) if a and not b)
    assert ind_runs > 2 * len(runs)


def test_duplicates_and_reordering() -> None:
    net = network(LinkModel(latency_ms=10, duplicate=0.5, reorder=0.5, reorder_ms=40))
    arrivals = [net.datagram_arrivals(0, 1, 100, i * 0.02) for i in range(1000)]
    assert 400 < sum(len(a) == 2 for a in arrivals) < 600
    firsts = [a[0] for a in arrivals]
    assert any(later < earlier for earlier, later in itertools.pairwise(firsts))
    assert net.counters.datagrams_reordered > 0


def test_delay_distributions_have_their_shape() -> None:
    for kind in ("uniform", "normal", "exponential", "pareto"):
        net = network(LinkModel(latency_ms=20, jitter_ms=5, distribution=kind))
        delays = sorted(net.datagram_arrivals(0, 1, 100, 0.0)[0] for _ in range(5000))
        assert min(delays) >= 0.0
        median = delays[len(delays) // 2]
        assert 0.015 < median < 0.030, kind
    heavy = network(LinkModel(latency_ms=20, jitter_ms=5, distribution="pareto"))
    flat = network(LinkModel(latency_ms=20, jitter_ms=5, distribution="uniform"))
    worst_heavy = max(heavy.datagram_arrivals(0, 1, 100, 0.0)[0] for _ in range(5000))
    worst_flat = max(flat.datagram_arrivals(0, 1, 100, 0.0)[0] for _ in range(5000))
    assert worst_flat <= 0.025 < worst_heavy


def test_an_uplink_cap_queues_then_drops() -> None:
    net = network(LinkModel(latency_ms=0), uplinks=[Uplink(kbps=100, queue_ms=100), Uplink()])
    size = 100
    serialise = (size + IP_UDP_OVERHEAD) * 8 / 100_000
    times = [net.datagram_arrivals(0, 1, size, 0.0) for _ in range(20)]
    sent = [a[0] for a in times if a]
    assert sent[:3] == [serialise * 1, serialise * 2, serialise * 3]
    assert net.counters.datagrams_queue_dropped == 20 - len(sent)
    assert len(sent) == 1 + int(0.1 / serialise) + 1 or len(sent) == 1 + int(0.1 / serialise)
    assert net.backlog(0, 0.0) > 0.09


def test_control_messages_stay_in_order_and_are_never_dropped() -> None:
    net = network(LinkModel(latency_ms=10, jitter_ms=9, loss=0.5))
    arrivals = [net.message_arrival(0, 1, 50, i * 0.001) for i in range(200)]
    assert all(a is not None for a in arrivals)
    assert arrivals == sorted(arrivals)  # type: ignore[type-var]


def test_partitions_cut_both_kinds_of_traffic_until_healed() -> None:
    net = network(LinkModel())
    net.partition([[0], [1]])
    assert net.datagram_arrivals(0, 1, 10, 0.0) == []
    assert net.message_arrival(0, 1, 10, 0.0) is None
    assert not net.reachable(1, 2) and not net.reachable(0, 2)  # the unlisted form a group
    net.heal()
    assert net.datagram_arrivals(0, 1, 10, 0.0)
