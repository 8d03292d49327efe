"""``mitalk bench fanout`` and ``mitalk bench sim``: the parsers and their handlers.

Importing this module is cheap: the benchmarks themselves are imported by the
handlers.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Protocol, TextIO

from ..arg_types import bounded_int

FRAME_MS_CHOICES = (10, 20, 40)


class _Context(Protocol):
    out: TextIO


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.5 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} s is not between 0.5 and 3600 s")
    return value


def add_bench(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Declare ``bench`` and its two actions on the ``mitalk`` parser."""
    parser = subparsers.add_parser(
        "bench",
        help="measure a real room on 127.0.0.1, or the simulator's speed",
        description=(
            "Benchmarks.  'fanout' runs a real room on 127.0.0.1 (a host, a speaker "
            "reading a speech WAV, and N listeners in worker processes) and measures "
            "delivery latency, relay hops, relay CPU and bytes on the wire.  'sim' "
            "times a simulator scenario.  See BENCHMARKS.md."
        ),
        parents=parents,
    )
    actions = parser.add_subparsers(title="actions", dest="action", metavar="ACTION", required=True)
    fanout = actions.add_parser(
        "fanout",
        help="a real room of N listeners on 127.0.0.1, measured",
        description=(
            "Run a real room on 127.0.0.1 and measure it: delivery latency (speaker's "
            "send to the listener's verified, decrypted frame), latency including the "
            "jitter buffer, delivery ratio, the time each relay holds a frame, relay "
            "CPU per forwarded packet, and received bytes per listener with IP/UDP "
            "headers.  Prints a table, or one JSON object with --json.  Progress goes "
            "to stderr."
        ),
        parents=parents,
    )
    fanout.add_argument(
        "--listeners", type=bounded_int(1, 5000), default=300, metavar="N", help="(300)"
    )
    fanout.add_argument(
        "--fanout",
        type=bounded_int(1, 64),
        default=8,
        metavar="K",
        help="children per relay, and the tree's fanout (8)",
    )
    fanout.add_argument(
        "--seconds", type=_seconds, default=10.0, metavar="S", help="measured window (10)"
    )
    fanout.add_argument(
        "--processes",
        type=bounded_int(1, 256),
        default=os.cpu_count() or 1,
        metavar="P",
        help="worker processes the listeners are spread over (the number of cores)",
    )
    fanout.add_argument(
        "--shared-crypto",
        action="store_true",
        help=(
            "let the peers of one worker share exact signature checks and decryptions, "
            "as the simulator does (needed for 1,000 listeners on 2 cores); relay CPU "
            "is then measured at the host only"
        ),
    )
    fanout.add_argument(
        "--jitter-every",
        type=bounded_int(1, 1_000_000),
        default=10,
        metavar="K",
        help="one listener in K runs a jitter buffer (10; 1 for all)",
    )
    fanout.add_argument(
        "--frame-ms",
        type=int,
        choices=FRAME_MS_CHOICES,
        default=20,
        help="Opus frame duration in ms (20)",
    )
    fanout.add_argument(
        "--input",
        metavar="SPEC",
        default=None,
        help="the speaker's audio (default: the shipped speech WAV, looped)",
    )
    fanout.add_argument("--json", action="store_true", help="print one JSON object")
    fanout.set_defaults(handler=run_fanout_command)

    sim = actions.add_parser(
        "sim",
        help="time a simulator scenario (large_room)",
        description=(
            "Run a simulator scenario and report wall time, virtual time, and listener "
            "frame deliveries (peers × frames) per wall second."
        ),
        parents=parents,
    )
    sim.add_argument(
        "--scenario",
        default="large_room",
        metavar="NAME",
        help="a shipped scenario's name or a scenario file (large_room)",
    )
    sim.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.set_defaults(handler=run_sim_command)


def run_fanout_command(args: argparse.Namespace, ctx: _Context) -> int:
    from . import fanout, results

    options = fanout.FanoutOptions(
        listeners=args.listeners,
        fanout=args.fanout,
        seconds=args.seconds,
        processes=args.processes,
        shared_crypto=args.shared_crypto,
        jitter_every=args.jitter_every,
        frame_ms=args.frame_ms,
        **({"input": args.input} if args.input else {}),
    )
    result = fanout.run(options, fanout.stderr_progress)
    _print(ctx.out, result, args.json, results.format_table)
    return 0


def run_sim_command(args: argparse.Namespace, ctx: _Context) -> int:
    from . import sim_bench

    result = sim_bench.run(args.scenario, seed=args.seed)
    _print(ctx.out, result, args.json, sim_bench.format_table)
    return 0


def _print(out: TextIO, result: dict[str, Any], as_json: bool, table: Any) -> None:
    if as_json:
        out.write(json.dumps(result, indent=2) + "\n")
    else:
        out.write(table(result) + "\n")
