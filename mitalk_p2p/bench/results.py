"""Turning what the peers measured into the ``bench fanout`` result: JSON and a table.

The JSON object (:func:`build_result`) is the result; the table is printed from
it.  Targets are the ones the project set for a 2-core machine (see
BENCHMARKS.md); :func:`judge` marks each as met or missed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from ..core.identity import SIGNATURE_SIZE
from ..core.media_frame import HEADER_SIZE, TAG_SIZE
from .stats import ratio, rounded, summary_ms

IP_UDP_HEADER: Final = 28
"""Bytes of IPv4 (20) and UDP (8) header around every datagram."""
LARGE_ROOM: Final = 300
"""Rooms above this many listeners are judged by the large-room targets."""


@attrs.frozen
class Meters:
    """Relay meters summed over every metered peer."""

    relay_batches: int = 0
    relay_frames: int = 0
    relay_copies: int = 0
    relay_cpu: float = 0.0
    leaf_frames: int = 0
    leaf_cpu: float = 0.0

    def __add__(self, other: Meters) -> Meters:
        return Meters(
            *(a + b for a, b in zip(attrs.astuple(self), attrs.astuple(other), strict=True))
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Meters:
        return cls(**{name: data[name] for name in attrs.fields_dict(cls)})


@attrs.frozen
class FanoutRun:
    """Everything one run gathered, before any arithmetic."""

    listeners: int
    fanout: int
    seconds: float
    processes: int
    frame_ms: int
    shared_crypto: bool
    jitter_every: int
    frames_sent: int
    rows: tuple[Mapping[str, Any], ...]
    """One per listener, as :func:`.worker.build_report` writes them."""
    meters: Meters
    arrival_us: tuple[int, ...]
    """Per forwarded copy: kernel arrival of the frame to the copy's ``sendto``."""
    hold_us: tuple[int, ...]
    """Per forwarded copy: the frame read off the socket to the copy's ``sendto``."""
    handling_us: tuple[int, ...]
    """Per forwarded copy: the relay's task running again to the copy's ``sendto``."""
    tree: Mapping[str, str | None]
    """Parent of every member (key hex → parent key hex), the host included."""
    speaker: str
    join_s: float
    settle_s: float
    window_s: float
    cpu_s: Mapping[str, float]
    """Process CPU seconds over the window: ``coordinator`` and ``workers``."""
    load_average: tuple[float, float, float]
    join_retries: int = 0
    machine_cpu_s: float | None = None
    """CPU seconds every process on the machine used over the window (this run's too)."""
    settled: bool = True
    """Whether every listener had a parent and heard the speaker before the window."""
    hearing_at_start: int = 0


def build_result(run: FanoutRun) -> dict[str, Any]:
    """The ``bench fanout`` JSON object."""
    rows = run.rows
    delivered = sum(int(row["delivered"]) for row in rows)
    expected = run.frames_sent * run.listeners
    latency = [value for row in rows for value in row["latency_us"]]
    played = [value for row in rows if row["played_us"] is not None for value in row["played_us"]]
    # Where the kernel timestamps arrivals, a hop counts from the frame's arrival at
    # the relay's socket, so the wait for the relay's loop is part of it.
    hop_us = run.arrival_us or run.hold_us
    meters = run.meters
    relay_cpu_per_frame = ratio(meters.relay_cpu, meters.relay_frames)
    leaf_cpu_per_frame = ratio(meters.leaf_cpu, meters.leaf_frames)
    copies_per_frame = ratio(meters.relay_copies, meters.relay_frames)
    marginal = None
    if relay_cpu_per_frame is not None and leaf_cpu_per_frame is not None and copies_per_frame:
        marginal = (relay_cpu_per_frame - leaf_cpu_per_frame) / copies_per_frame
    result: dict[str, Any] = {
        "listeners": run.listeners,
        "fanout": run.fanout,
        "seconds": run.seconds,
        "processes": run.processes,
        "frame_ms": run.frame_ms,
        "shared_crypto": run.shared_crypto,
        "jitter_every": run.jitter_every,
        "frames_sent": run.frames_sent,
        "delivered": delivered,
        "expected": expected,
        "delivery_ratio": rounded(ratio(delivered, expected), 6),
        "listeners_failed": sum(1 for row in rows if row.get("failure")),
        "latency_ms": summary_ms(latency),
        "latency_with_jitter_buffer_ms": summary_ms(played, ("p50", "p95", "p99", "max")),
        "jitter_buffer_listeners": sum(1 for row in rows if row["played_us"] is not None),
        "latency_by_hops": _latency_by_hops(run),
        "per_hop_ms": summary_ms(hop_us, ("p50", "p95", "p99", "max")),
        "per_hop_from_read_ms": summary_ms(run.hold_us, ("p50", "p95", "p99", "max")),
        "per_hop_handling_ms": summary_ms(run.handling_us, ("p50", "p95", "p99", "max")),
        "per_hop_samples": len(hop_us),
        "per_hop_from": "kernel arrival" if run.arrival_us else "socket read",
        "cpu_us_per_forwarded_packet": _us(ratio(meters.relay_cpu, meters.relay_copies)),
        "cpu_us_per_forwarded_packet_marginal": _us(marginal),
        "cpu_us_per_frame": {"relay": _us(relay_cpu_per_frame), "leaf": _us(leaf_cpu_per_frame)},
        "copies_per_relayed_frame": rounded(copies_per_frame, 2),
        **_wire(rows),
        "settled": run.settled,
        "listeners_hearing_at_start": run.hearing_at_start,
        "join_s": round(run.join_s, 2),
        "join_retries": run.join_retries,
        "settle_s": round(run.settle_s, 2),
        "window_s": round(run.window_s, 3),
        "cpu_cores_used": _cores(run),
        "load_average": [round(value, 2) for value in run.load_average],
    }
    result["targets"] = judge(result)
    return result


def _cores(run: FanoutRun) -> dict[str, float | None]:
    """Cores busy over the window: this run's processes, and the rest of the machine."""
    seconds: dict[str, float | None] = {**run.cpu_s, "total": sum(run.cpu_s.values())}
    if run.machine_cpu_s is not None:
        seconds["other_processes"] = max(0.0, run.machine_cpu_s - sum(run.cpu_s.values()))
    return {
        name: round(value / run.window_s, 2) if run.window_s and value is not None else None
        for name, value in seconds.items()
    }


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e6, 2)


def _wire(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Received bytes per listener per second, with IP and UDP headers (28 B per datagram)."""
    metered = [row for row in rows if row["metered_s"] > 0]
    if not metered:
        return {"wire_kbit_s_per_listener": None, "probe_kbit_s_per_listener": None}
    frames = sum(row["frames"] for row in metered)
    frame_bytes = sum(row["frame_bytes"] for row in metered)
    seconds = sum(row["metered_s"] for row in metered)
    packets_per_s = frames / seconds
    probe_bits = sum(8 * (row["other_bytes"] + IP_UDP_HEADER * row["other"]) for row in metered)
    mean_size = frame_bytes / frames if frames else 0.0
    parts = {
        "opus": max(0.0, mean_size - HEADER_SIZE - TAG_SIZE - SIGNATURE_SIZE),
        "header": float(HEADER_SIZE),
        "aead_tag": float(TAG_SIZE),
        "signature": float(SIGNATURE_SIZE),
        "ip_udp": float(IP_UDP_HEADER),
    }
    return {
        "wire_kbit_s_per_listener": round(
            8 * (frame_bytes + IP_UDP_HEADER * frames) / seconds / 1000, 2
        ),
        "wire_packets_per_s": round(packets_per_s, 2),
        "wire_bytes_per_packet": {name: round(size, 1) for name, size in parts.items()},
        "wire_kbit_s_breakdown": {
            name: round(8 * size * packets_per_s / 1000, 2) for name, size in parts.items()
        },
        "probe_kbit_s_per_listener": round(probe_bits / seconds / 1000, 2),
    }


def _latency_by_hops(run: FanoutRun) -> dict[str, dict[str, Any]]:
    """Delivery latency grouped by how many tree edges separate a listener from the speaker."""
    hops = hops_from(run.speaker, run.tree)
    groups: dict[int, list[int]] = {}
    counts: dict[int, int] = {}
    for row in run.rows:
        distance = hops.get(str(row["key"]), -1)
        groups.setdefault(distance, []).extend(row["latency_us"])
        counts[distance] = counts.get(distance, 0) + 1
    return {
        ("unreached" if distance < 0 else str(distance)): {
            "listeners": counts[distance],
            **summary_ms(groups[distance], ("p50", "p95", "max")),
        }
        for distance in sorted(groups)
    }


def hops_from(origin: str, parents: Mapping[str, str | None]) -> dict[str, int]:
    """Tree distance from ``origin`` to every member, following edges both ways."""
    neighbours: dict[str, list[str]] = {}
    for child, parent in parents.items():
        if parent is not None:
            neighbours.setdefault(child, []).append(parent)
            neighbours.setdefault(parent, []).append(child)
    distance = {origin: 0}
    queue = deque([origin])
    while queue:
        here = queue.popleft()
        for there in neighbours.get(here, ()):
            if there not in distance:
                distance[there] = distance[here] + 1
                queue.append(there)
    return distance


# --- targets -------------------------------------------------------------------------


@attrs.frozen
class Target:
    name: str
    limit: str
    value: float | None
    met: bool | None
    """None when the run can't judge this target (see the limit's note)."""

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def judge(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target that applies to this room size, with its value and verdict."""
    targets: list[Target] = []

    def at_most(name: str, value: float | None, limit: float, unit: str) -> None:
        met = value is not None and value <= limit
        targets.append(Target(name, f"<= {limit:g}{unit}", value, met))

    latency = result["latency_ms"]
    if result["listeners"] <= LARGE_ROOM:
        at_most("latency p50", latency["p50"], 20, " ms")
        at_most("latency p95", latency["p95"], 40, " ms")
        targets.append(
            Target(
                "delivered = expected",
                f"= {result['expected']}",
                result["delivered"],
                result["delivered"] == result["expected"],
            )
        )
    else:
        at_most("latency p95", latency["p95"], 150, " ms")
        delivery = result["delivery_ratio"]
        targets.append(
            Target("delivery", ">= 0.999", delivery, delivery is not None and delivery >= 0.999)
        )
    at_most("per-hop p50", result["per_hop_ms"]["p50"], 0.5, " ms")
    at_most("per-hop p99", result["per_hop_ms"]["p99"], 2, " ms")
    cpu = result["cpu_us_per_forwarded_packet"]
    if result.get("shared_crypto"):
        # Most relays found the frame's signature already checked by a peer in the same
        # process: their CPU is not a relay's own.
        targets.append(
            Target("CPU per forwarded packet", "<= 10 µs (not judged: shared)", cpu, None)
        )
    else:
        at_most("CPU per forwarded packet", cpu, 10, " µs")
    at_most("wire per listener", result["wire_kbit_s_per_listener"], 64, " kbit/s")
    return [target.to_json() for target in targets]


# --- the table -----------------------------------------------------------------------


def format_table(result: Mapping[str, Any]) -> str:
    """The result as a readable table."""

    def ms(figures: Mapping[str, float | None], keys: Iterable[str]) -> str:
        return " / ".join(_show(figures.get(key)) for key in keys) + " ms"

    latency = result["latency_ms"]
    lines = [
        f"bench fanout: {result['listeners']} listeners, fanout {result['fanout']}, "
        f"{result['processes']} worker processes, {result['window_s']:g} s measured, "
        f"{result['frame_ms']} ms frames"
        + (", verification shared per process" if result["shared_crypto"] else ""),
        f"joined in {result['join_s']:g} s, "
        + (
            f"tree settled {result['settle_s']:g} s later; "
            if result["settled"]
            else f"NOT SETTLED {result['settle_s']:g} s later "
            f"({result['listeners_hearing_at_start']} listeners hearing); "
        )
        + f"load average {' '.join(str(v) for v in result['load_average'])}",
        "",
    ]
    rows = [
        (
            "delivered / expected",
            f"{result['delivered']} / {result['expected']} ({_percent(result['delivery_ratio'])})"
            + (
                f"; {result['listeners_failed']} listeners failed"
                if result["listeners_failed"]
                else ""
            ),
        ),
        ("latency p50/p95/p99/max", ms(latency, ("p50", "p95", "p99", "max"))),
        (
            "with jitter buffer p50/p95",
            ms(result["latency_with_jitter_buffer_ms"], ("p50", "p95"))
            + f"  ({result['jitter_buffer_listeners']} listeners)",
        ),
        ("per hop p50/p95/p99/max", ms(result["per_hop_ms"], ("p50", "p95", "p99", "max"))),
        (
            "  from the socket read",
            ms(result["per_hop_from_read_ms"], ("p50", "p95", "p99", "max")),
        ),
        (
            "  of it handling",
            ms(result["per_hop_handling_ms"], ("p50", "p95", "p99", "max")),
        ),
        (
            "CPU per forwarded packet",
            f"{_show(result['cpu_us_per_forwarded_packet'])} µs "
            f"(marginal {_show(result['cpu_us_per_forwarded_packet_marginal'])} µs; "
            f"per frame: relay {_show(result['cpu_us_per_frame']['relay'])} µs, "
            f"leaf {_show(result['cpu_us_per_frame']['leaf'])} µs)",
        ),
        (
            "wire per listener",
            f"{_show(result['wire_kbit_s_per_listener'])} kbit/s "
            f"(+ {_show(result['probe_kbit_s_per_listener'])} kbit/s of probes)",
        ),
    ]
    breakdown = result.get("wire_kbit_s_breakdown")
    if breakdown:
        rows.append(
            ("  of it", ", ".join(f"{name} {value:g}" for name, value in breakdown.items()))
        )
    cores = result["cpu_cores_used"]
    rows.append(
        (
            "CPU cores used",
            f"{_show(cores.get('total'))} (coordinator {_show(cores.get('coordinator'))}, "
            f"workers {_show(cores.get('workers'))}); "
            f"other processes on the machine {_show(cores.get('other_processes'))}",
        )
    )
    width = max(len(label) for label, _ in rows)
    lines.extend(f"  {label:<{width}}  {value}" for label, value in rows)
    lines.append("")
    lines.append("  latency by hops from the speaker:")
    for hops, figures in result["latency_by_hops"].items():
        lines.append(
            f"    {hops:>9}: {figures['listeners']:>5} listeners, "
            f"p50 {_show(figures['p50'])} ms, p95 {_show(figures['p95'])} ms"
        )
    lines.append("")
    lines.append("  targets:")
    for target in result["targets"]:
        verdict = {True: "met", False: "MISSED", None: "n/a"}[target["met"]]
        lines.append(
            f"    {verdict:<6} {target['name']:<26} {_show(target['value']):>10}  "
            f"(target {target['limit']})"
        )
    return "\n".join(lines)


def _show(value: object) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.3f} %"
