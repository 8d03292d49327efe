"""Scenario files: TOML read into a checked :class:`~mitalk_p2p.sim.scenario.Scenario`."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from mitalk_p2p.sim.scenario import ScenarioError, parse_scenario

from . import Target, expect

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def check_scenario(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        scenario = parse_scenario(text, file="fuzz.toml")
    except ScenarioError as error:
        expect(str(error).startswith("fuzz.toml"), "a scenario error that names no file")
        expect("\n" not in error.reason, "a scenario error of more than one line")
        return
    expect(math.isfinite(scenario.duration) and scenario.duration > 0, "an endless scenario")
    expect(len(scenario.peers) >= 2, "a scenario without listeners passed")


def seeds() -> Iterator[tuple[str, bytes]]:
    for path in sorted(SCENARIOS.glob("**/*.toml")):
        yield "scenario", path.read_bytes()
    yield "scenario", b'name = "t"\nduration = 10.0\n[peers]\nlisteners = 3\n'


TARGET = Target(
    "scenario",
    "simulator scenario files (TOML), including the line lookup used in their errors",
    (("scenario", check_scenario),),
    seeds,
    dictionary="text.dict",
)
