"""The shipped scenarios run green, and their expectations can fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from mitalk_p2p.core.crypto_memo import sharing_crypto_results
from mitalk_p2p.sim import trace as t
from mitalk_p2p.sim.command import SHIPPED
from mitalk_p2p.sim.results import ScenarioResult
from mitalk_p2p.sim.runner import run_scenario
from mitalk_p2p.sim.scenario import Scenario, load_scenario
from mitalk_p2p.sim.simulator import Simulator

SMALL = ["small_room", "relay_crash", "host_crash", "partition_heal", "lossy_lan", "kick_rotation"]


def run(scenario: Scenario, seed: int | None = None) -> tuple[ScenarioResult, Simulator]:
    with sharing_crypto_results():
        return run_scenario(scenario, seed=seed)


def shipped(name: str) -> Scenario:
    return load_scenario(SHIPPED / f"{name}.toml")


@pytest.fixture(scope="module")
def results() -> dict[str, tuple[ScenarioResult, Simulator]]:
    return {name: run(shipped(name)) for name in SMALL}


@pytest.mark.parametrize("name", SMALL)
def test_shipped_scenario_meets_every_expectation(
    name: str, results: dict[str, tuple[ScenarioResult, Simulator]]
) -> None:
    result, _ = results[name]
    failed = [f"{e.name}: {e.detail}" for e in result.expectations if not e.ok]
    assert not failed
    assert result.expectations


def test_every_shipped_scenario_loads_and_describes_itself() -> None:
    names = {p.stem for p in Path(SHIPPED).glob("*.toml")}
    assert names == {*SMALL, "large_room", "decoding_room"}
    for name in names:
        scenario = shipped(name)
        assert scenario.description
        assert scenario.expectations


def tightened(scenario: Scenario, check: str, **changes: Any) -> Scenario:
    expectations = tuple(
        attrs.evolve(e, **changes) if e.check == check else e for e in scenario.expectations
    )
    return attrs.evolve(scenario, expectations=expectations)


def test_small_room_trace_shows_the_stage_handshake(
    results: dict[str, tuple[ScenarioResult, Simulator]],
) -> None:
    _, sim = results["small_room"]
    changes = [(r.change, r.member, r.role) for r in sim.trace.of_type(t.RoleChanged)]
    order = [c for c in changes if c[1] == "l002" and c[0] != "Admit"]
    assert order == [
        ("RaiseHand", "l002", "listener"),
        ("InviteToStage", "l002", "listener"),
        ("AcceptStage", "l002", "speaker"),
    ]
    speakers = {d.speaker for d in sim.trace.deliveries() if d.listener == "l001"}
    assert speakers == {"host", "l002"}


def test_relay_crash_orphans_hear_again_within_a_second(
    results: dict[str, tuple[ScenarioResult, Simulator]],
) -> None:
    result, sim = results["relay_crash"]
    [crash] = [r for r in sim.trace.of_type(t.ActionTaken) if r.action == "crash"]
    [repair] = result.tree_repair_ms
    assert 0 < repair <= 1000
    switched = [
        r
        for r in sim.trace.of_type(t.ParentChanged)
        if r.time > crash.time and r.parent != crash.peer
    ]
    assert switched, "orphans changed parent"
    assert [s.label for s in result.trees][:2] == [
        f"before crash of {crash.peer}",
        f"after repair ({crash.peer} gone)",
    ]


def test_relay_crash_repair_expectation_fails_when_the_bound_is_too_tight() -> None:
    result, _ = run(tightened(shipped("relay_crash"), "tree_repair", max_ms=50.0))
    [verdict] = [e for e in result.expectations if e.name.startswith("tree_repair")]
    assert not verdict.ok
    assert not result.ok


def test_host_crash_elects_exactly_one_successor(
    results: dict[str, tuple[ScenarioResult, Simulator]],
) -> None:
    result, sim = results["host_crash"]
    terms: dict[str, set[str]] = {}
    for record in sim.trace.of_type(t.TermObserved):
        terms.setdefault(record.term, set()).add(record.host)
    assert len(terms) == 2
    assert all(len(hosts) == 1 for hosts in terms.values())
    [takeover] = result.host_takeover_ms
    assert 0 < takeover <= 7000


def test_partition_heal_leaves_one_moderator_and_no_replays(
    results: dict[str, tuple[ScenarioResult, Simulator]],
) -> None:
    _, sim = results["partition_heal"]
    assert len(sim.hosts()) == 1
    merged = [r for r in sim.trace.of_type(t.ActionTaken) if r.action == "merged"]
    assert merged


def test_kicked_listener_check_really_opens_frames_before_the_rotation(
    results: dict[str, tuple[ScenarioResult, Simulator]],
) -> None:
    result, _ = results["kick_rotation"]
    [verdict] = [e for e in result.expectations if e.name.startswith("kicked")]
    assert "opened 0 of 40 frames sealed after" in verdict.detail
    assert "and 40 of 40 sealed before it" in verdict.detail


def test_lossy_lan_reports_concealment(
    results: dict[str, tuple[ScenarioResult, Simulator]],
) -> None:
    result, _ = results["lossy_lan"]
    assert result.counters["datagrams_lost"] > 0
    assert result.concealed_ratio is not None
    assert 0 < result.concealed_ratio < 0.2


def test_same_seed_same_digest_other_seed_other_digest() -> None:
    scenario = shipped("small_room")
    first, _ = run(scenario)
    again, _ = run(scenario)
    other, _ = run(scenario, seed=99)
    assert first.trace_digest == again.trace_digest
    assert first.latencies_ms == again.latencies_ms
    assert other.trace_digest != first.trace_digest
