"""A peer whose network drops for a while recovers by itself when it comes back.

A room of a host and three listeners forms through a bootstrap node on the lab,
and the host talks.  Then a cable is pulled for a few seconds and plugged back
in: the first successor's (the listener that, hearing no host, would claim the
room first), briefly and then past the host timeout, or the host's.  The frame reports must
show silence during the outage, audio again within :data:`RECOVERY_BOUND` of
the cable coming back, and a steady stream for everyone at the end; and the
host must still be the host and count everyone as a member.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from mitalk_p2p.live_demo import DemoPeer

from .lan_room import BootstrapRoom, LanRoom, event, form_bootstrap_room, open_lan_room
from .netns_lab import NetnsLab

pytestmark = pytest.mark.lan

LISTENER_OUTAGE = 3.0
LONG_OUTAGE = 5.0
"""Longer than the room's host timeout (4 s): cut off this long, a successor hears no
host and asks the others for a pre-vote, which nobody it can reach grants, so it must
not claim the room."""
HOST_OUTAGE = 2.0
"""Shorter than the room's host timeout (4 s): an outage, not a reason for a succession."""
RECOVERY_BOUND = 5.0
"""Seconds after the cable is back within which a peer must hear the host again."""
IN_FLIGHT = 0.3
"""Seconds after a cut during which frames already on their way may still arrive."""
FRAME = 0.020


@attrs.frozen
class Outage:
    victim: str
    cut_at: float
    restored_at: float


@attrs.frozen
class Aftermath:
    """What a test needs to judge an outage, gathered while the room still ran."""

    formed: BootstrapRoom
    outage: Outage
    members: str
    """The host's ``/who`` answer after the recovery window."""
    ended_at: float


async def _cut(room: LanRoom, peer: DemoPeer, seconds: float) -> Outage:
    namespace = room.namespaces[peer.name]
    room.lab.link_down(namespace)
    cut_at = time.monotonic()
    try:
        await trio.sleep(seconds)  # the outage itself
    finally:
        room.lab.link_up(namespace)
    return Outage(peer.name, cut_at, time.monotonic())


async def _members_seen_by(host: DemoPeer, since: float) -> str:
    await host.say("/who")
    answer = await host.wait_for(
        "the member list",
        lambda r: r.get("event") == "answer" and r.get("query") == "who" and r["time"] > since,
    )
    return str(answer["text"])


async def _outage(
    lab: NetnsLab,
    tmp_path: Path,
    pick: Callable[[LanRoom, BootstrapRoom], DemoPeer],
    seconds: float,
) -> tuple[LanRoom, Aftermath]:
    """Form a room, cut ``pick``'s cable for ``seconds``, and let the host talk on."""
    async with open_lan_room(lab, tmp_path, mdns=False) as room:
        formed = await form_bootstrap_room(room)
        for peer in formed.listeners:
            await peer.wait_for("a place in the relay tree", event("parent_changed"))
        outage = await _cut(room, pick(room, formed), seconds)
        await trio.sleep(RECOVERY_BOUND)  # the host talks on
        members = await _members_seen_by(formed.host, outage.restored_at)
        ended_at = time.monotonic()
    return room, Aftermath(formed, outage, members, ended_at)


def _arrivals(report: dict[str, Any]) -> list[float]:
    return sorted(at for _, _, at in report["received"])


def _check_recovery(name: str, report: dict[str, Any], outage: Outage) -> float:
    """Silence during ``outage``, then audio within the bound; returns the gap in seconds."""
    arrivals = _arrivals(report)
    during = [at for at in arrivals if outage.cut_at + IN_FLIGHT < at < outage.restored_at]
    assert not during, f"{name} heard {len(during)} frames while cut off: the cut did not hold"
    after = [at for at in arrivals if at > outage.restored_at]
    assert after, f"{name} heard nothing after {outage.victim}'s cable came back"
    gap = after[0] - outage.restored_at
    assert gap <= RECOVERY_BOUND, f"{name} heard the host again only after {gap:.1f} s"
    return gap


def _check_room(room: LanRoom, aftermath: Aftermath) -> None:
    """Everyone is still a member, never left, and hears a steady stream at the end."""
    for peer in aftermath.formed.listeners:
        members = aftermath.members
        assert peer.name in members, f"{peer.name} is no longer a member:\n{members}"
        left = peer.find(lambda r: r.get("event") == "left_room" and r["time"] < aftermath.ended_at)
        assert left is None, f"{peer.name} was out of the room before the end: {left}"
        assert peer.process.returncode == 0, room.logs()
        last_second = [at for at in _arrivals(room.report(peer.name))
                       if aftermath.ended_at - 1.5 < at <= aftermath.ended_at - 0.5]  # fmt: skip
        assert len(last_second) >= 0.5 / FRAME, (
            f"{peer.name} heard only {len(last_second)} frames in the last second"
        )
    assert aftermath.formed.host.find(event("term_started")) is None, "the host lost the room"


def _first_successor(room: LanRoom, formed: BootstrapRoom) -> DemoPeer:
    """The listener who would take over first if the host went silent.

    Its outage is the hardest one: cut off, it hears no host either, so it is the
    one tempted to claim the room.
    """
    named = [r["successors"] for r in formed.host.events if r.get("event") == "successors_set"]
    assert named and named[-1], "the host named no successors"
    return room.peers[str(named[-1][0]["name"])]


async def test_a_listener_that_loses_its_network_hears_the_host_again_and_stays_a_member(
    lab: NetnsLab, tmp_path: Path
) -> None:
    room, aftermath = await _outage(lab, tmp_path, _first_successor, LISTENER_OUTAGE)
    victim = aftermath.outage.victim
    gap = _check_recovery(victim, room.report(victim), aftermath.outage)
    print(f"{victim} heard the host again {gap:.2f} s after its cable came back")
    _check_room(room, aftermath)


async def test_when_the_host_loses_its_network_every_listener_hears_it_again(
    lab: NetnsLab, tmp_path: Path
) -> None:
    room, aftermath = await _outage(lab, tmp_path, lambda _, formed: formed.host, HOST_OUTAGE)
    for peer in aftermath.formed.listeners:
        gap = _check_recovery(peer.name, room.report(peer.name), aftermath.outage)
        print(f"{peer.name} heard the host again {gap:.2f} s after the host's cable came back")
    _check_room(room, aftermath)


async def test_a_listener_cut_off_past_the_host_timeout_comes_back_to_a_talking_room(
    lab: NetnsLab, tmp_path: Path
) -> None:
    room, aftermath = await _outage(lab, tmp_path, _first_successor, LONG_OUTAGE)
    victim = aftermath.outage.victim
    gap = _check_recovery(victim, room.report(victim), aftermath.outage)
    print(f"{victim} heard the host again {gap:.2f} s after its cable came back")
    _check_room(room, aftermath)
