"""``mitalk bench sim``: how fast the simulator runs a scenario.

The scenario runs exactly as ``mitalk scenario run`` runs it (sharing exact
crypto results among the simulated peers), and the figures are its wall time,
its virtual time, and frame deliveries (listeners × frames) per wall second.
For ``large_room`` the project's target is at most 60 s of wall time.
"""

from __future__ import annotations

import os
from typing import Any, Final

from ..core.crypto_memo import sharing_crypto_results
from ..sim.command import load
from ..sim.runner import run_scenario
from .resources import machine_busy_seconds, process_cpu_seconds

TARGET_WALL_S: Final = {"large_room": 60.0}


def run(spec: str, *, seed: int | None = None) -> dict[str, Any]:
    """Run the scenario ``spec`` (a shipped name or a file) and time it."""
    scenario = load(spec)
    load_before = os.getloadavg()
    machine_from, cpu_from = machine_busy_seconds(), process_cpu_seconds()
    with sharing_crypto_results():
        result, _sim = run_scenario(scenario, seed=seed)
    machine_to, cpu_to = machine_busy_seconds(), process_cpu_seconds()
    others = None
    if machine_from is not None and machine_to is not None and result.wall_s:
        busy = (machine_to - machine_from) - (cpu_to - cpu_from)
        others = round(max(0.0, busy) / result.wall_s, 2)
    deliveries = len(result.latencies_ms)
    out: dict[str, Any] = {
        "scenario": result.scenario,
        "seed": result.seed,
        "peers": result.peers,
        "wall_s": round(result.wall_s, 3),
        "virtual_s": round(result.virtual_s, 3),
        "speed": round(result.virtual_s / result.wall_s, 3) if result.wall_s else None,
        "frame_deliveries": deliveries,
        "peer_frames_per_s": round(deliveries / result.wall_s) if result.wall_s else None,
        "expectations_ok": result.ok,
        "trace_digest": result.trace_digest,
        "load_average": [round(value, 2) for value in load_before],
        "other_processes_cores": others,
    }
    target = TARGET_WALL_S.get(result.scenario)
    if target is not None:
        out["target_wall_s"] = target
        out["target_met"] = result.wall_s <= target
    return out


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"bench sim: {result['scenario']} (seed {result['seed']}, {result['peers']} peers)",
        f"  wall time          {result['wall_s']:g} s",
        f"  virtual time       {result['virtual_s']:g} s ({result['speed']}x real time)",
        f"  peers x frames/s   {result['peer_frames_per_s']} "
        f"({result['frame_deliveries']} frame deliveries)",
        f"  expectations       {'all hold' if result['expectations_ok'] else 'SOME FAIL'}",
        f"  load average       {' '.join(str(v) for v in result['load_average'])} (before); "
        f"other processes used {result['other_processes_cores']} cores meanwhile",
    ]
    if "target_wall_s" in result:
        verdict = "met" if result["target_met"] else "MISSED"
        lines.append(f"  target             wall <= {result['target_wall_s']:g} s: {verdict}")
    return "\n".join(lines)
