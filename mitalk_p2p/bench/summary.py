"""Medians over repeated benchmark runs: ``python -m mitalk_p2p.bench.summary FILE.json...``.

Each file holds one ``mitalk bench fanout --json`` or ``mitalk bench sim --json``
object.  Runs of the same configuration are grouped, and each figure is printed
as the median with the individual runs beside it, as BENCHMARKS.md reports them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from .stats import median

Figure = Callable[[dict[str, Any]], float | None]

FANOUT_FIGURES: Final[tuple[tuple[str, Figure], ...]] = (
    ("latency p50 ms", lambda r: r["latency_ms"]["p50"]),
    ("latency p95 ms", lambda r: r["latency_ms"]["p95"]),
    ("latency p99 ms", lambda r: r["latency_ms"]["p99"]),
    ("latency max ms", lambda r: r["latency_ms"]["max"]),
    ("with jitter buffer p50 ms", lambda r: r["latency_with_jitter_buffer_ms"]["p50"]),
    ("with jitter buffer p95 ms", lambda r: r["latency_with_jitter_buffer_ms"]["p95"]),
    ("delivery ratio", lambda r: r["delivery_ratio"]),
    ("frames lost", lambda r: r["expected"] - r["delivered"]),
    ("per hop p50 ms", lambda r: r["per_hop_ms"]["p50"]),
    ("per hop p99 ms", lambda r: r["per_hop_ms"]["p99"]),
    ("per hop handling p50 ms", lambda r: r["per_hop_handling_ms"]["p50"]),
    ("per hop handling p99 ms", lambda r: r["per_hop_handling_ms"]["p99"]),
    ("CPU µs per forwarded packet", lambda r: r["cpu_us_per_forwarded_packet"]),
    ("  marginal µs", lambda r: r["cpu_us_per_forwarded_packet_marginal"]),
    ("wire kbit/s per listener", lambda r: r["wire_kbit_s_per_listener"]),
    ("probes kbit/s per listener", lambda r: r["probe_kbit_s_per_listener"]),
    ("CPU cores used", lambda r: r["cpu_cores_used"]["total"]),
    ("other processes' cores", lambda r: r["cpu_cores_used"]["other_processes"]),
    ("join s", lambda r: r["join_s"]),
    ("load average (1 min)", lambda r: r["load_average"][0]),
)
SIM_FIGURES: Final[tuple[tuple[str, Figure], ...]] = (
    ("wall s", lambda r: r["wall_s"]),
    ("virtual s", lambda r: r["virtual_s"]),
    ("peers x frames per s", lambda r: r["peer_frames_per_s"]),
    ("other processes' cores", lambda r: r["other_processes_cores"]),
    ("load average (1 min)", lambda r: r["load_average"][0]),
)


def configuration(result: dict[str, Any]) -> str:
    if "scenario" in result:
        return f"bench sim --scenario {result['scenario']}"
    words = [
        f"bench fanout --listeners {result['listeners']} --fanout {result['fanout']}",
        f"--seconds {result['seconds']:g} --processes {result['processes']}",
    ]
    if result["shared_crypto"]:
        words.append("--shared-crypto")
    if result["frame_ms"] != 20:
        words.append(f"--frame-ms {result['frame_ms']}")
    if result["jitter_every"] != 10:
        words.append(f"--jitter-every {result['jitter_every']}")
    return " ".join(words)


def summarize(results: Sequence[dict[str, Any]], out: TextIO) -> None:
    groups: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault(configuration(result), []).append(result)
    for name, runs in groups.items():
        figures = SIM_FIGURES if "scenario" in runs[0] else FANOUT_FIGURES
        out.write(f"\n{name}: {len(runs)} run(s)\n")
        for label, figure in figures:
            values = [value for run in runs if (value := _get(figure, run)) is not None]
            if not values:
                out.write(f"  {label:<28} -\n")
                continue
            each = ", ".join(f"{value:g}" for value in values)
            out.write(f"  {label:<28} median {median(values):g}   ({each})\n")
        if "targets" in runs[0]:
            missed = sorted(
                {t["name"] for run in runs for t in run["targets"] if t["met"] is False}
            )
            out.write(f"  {'targets missed in any run':<28} {', '.join(missed) or 'none'}\n")


def _get(figure: Figure, run: dict[str, Any]) -> float | None:
    try:
        value = figure(run)
    except (KeyError, TypeError):
        return None
    return None if value is None else float(value)


def main(argv: Sequence[str] | None = None) -> int:
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m mitalk_p2p.bench.summary RESULT.json...", file=sys.stderr)
        return 2
    results = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"summary: error: {path}: {exc}", file=sys.stderr)
            return 2
        if not isinstance(data, dict):
            print(f"summary: error: {path}: not one JSON object", file=sys.stderr)
            return 2
        results.append(data)
    summarize(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
