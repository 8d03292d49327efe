"""Relay loops after outages: orphans that pick each other heal, in simulated time.

When the host drops off the network, each of its direct listeners hears its
parent go silent at about the same moment and switches to its backup.  Two of
them can be each other's backup, so both switch at once: a loop that hears
nothing.  These tests provoke that on purpose and check that the loop is found
and undone, and that everyone hears the host again soon after it is back.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from mitalk_p2p.core.identity import PublicKey
from mitalk_p2p.core.media_events import ParentChanged
from mitalk_p2p.core.peer import Peer

from .media_fixtures import MediaRoom, host_tree, media_room

HOST_OUTAGE = 2.0
"""Shorter than the room's host timeout (4 s): an outage, not a succession."""
HEARD_AGAIN_WITHIN = 1.0
"""Seconds after the heal by which every listener hears the host again."""


def parent_switches(room: MediaRoom, name: str) -> list[ParentChanged]:
    return [e for e in room.net.events_of(room[name].me) if isinstance(e, ParentChanged)]


def root_paths(room: MediaRoom) -> dict[str, list[str]]:
    """Each member's chain of link-level parents up to the host; fails on a loop or dead end."""
    peers = room.net.peers
    chains = {}
    for peer in room.listeners:
        chain: list[PublicKey] = []
        at: Peer = peer
        while at is not room.host:
            parent = at.media.parent
            assert parent is not None, f"{room.net.name(at.me)} has no parent"
            assert parent not in chain, f"loop: {[room.net.name(k) for k in (*chain, parent)]}"
            chain.append(parent)
            at = peers[parent]
        chains[room.net.name(peer.me)] = [room.net.name(k) for k in chain]
    return chains


def mutual_backups(room: MediaRoom) -> tuple[str, str]:
    """Two direct children of the host that are each other's backup."""
    tree = host_tree(room)
    direct = tree.children(room.host.me)
    for a in direct:
        b = tree.backups.get(a)
        if b is not None and b in direct and tree.backups.get(b) == a:
            return room.net.name(a), room.net.name(b)
    raise AssertionError("no two direct children back each other up")


def first_heard_after(room: MediaRoom, name: str, moment: float) -> float | None:
    times = [e.arrived for e in room.received(name, "host") if e.arrived > moment]
    return min(times) - moment if times else None


def test_two_listeners_that_back_each_other_up_leave_the_loop_and_hear_the_host_again() -> None:
    room = media_room(3)
    assert set(host_tree(room).children(room.host.me)) == {p.me for p in room.listeners}
    a, b = mutual_backups(room)
    room.speak("host", 1.0)
    cut_at = room.net.now
    room.net.partition([room.host.me], [p.me for p in room.listeners])
    room.speak("host", HOST_OUTAGE)
    room.net.heal()
    healed_at = room.net.now
    room.speak("host", 3.0)
    room.net.run_for(0.5)

    for peer in room.listeners:
        name = room.net.name(peer.me)
        during = [e for e in room.received(name, "host") if cut_at + 0.1 < e.arrived < healed_at]
        assert not during, f"{name} heard the host through a partition"
        gap = first_heard_after(room, name, healed_at)
        assert gap is not None and gap <= HEARD_AGAIN_WITHIN, (name, gap)
        assert len(room.received(name, "host")) >= 50 + 150 - 5, name
    assert all(chain[-1] == "host" for chain in root_paths(room).values())
    # The loop did form: a switched to b and b to a, both because their parent fell silent.
    to_b = [e for e in parent_switches(room, a) if e.parent == room[b].me]
    to_a = [e for e in parent_switches(room, b) if e.parent == room[a].me]
    assert [e.reason for e in to_b] == ["silent"] and [e.reason for e in to_a] == ["silent"]
    # ... and both saw it, left it, and went back to the host.
    for name in (a, b):
        back = [e for e in parent_switches(room, name) if e.reason == "detached"]
        assert [e.parent for e in back] == [room.host.me], name
    # The host wrote the listeners off while it was cut off; its links found them again,
    # and its plan has them back, where they really hang.
    tree = host_tree(room)
    assert set(tree.members) == {room.host.me, *(p.me for p in room.listeners)}
    assert {p.me: p.media.parent for p in room.listeners} == dict(tree.parents)


def test_a_chain_of_orphans_under_the_loop_comes_back_too() -> None:
    room = media_room(3, fanout=2)
    tree = host_tree(room)
    [deep] = [p for p in room.listeners if tree.depth(p.me) == 2]
    mutual_backups(room)
    room.speak("host", 0.5)
    room.net.partition([room.host.me], [p.me for p in room.listeners])
    room.speak("host", HOST_OUTAGE)
    room.net.heal()
    healed_at = room.net.now
    room.speak("host", 3.0)
    for peer in room.listeners:
        gap = first_heard_after(room, room.net.name(peer.me), healed_at)
        assert gap is not None and gap <= HEARD_AGAIN_WITHIN, (room.net.name(peer.me), gap)
    assert root_paths(room)[room.net.name(deep.me)][-1] == "host"
    assert set(host_tree(room).members) == {room.host.me, *(p.me for p in room.listeners)}


def test_a_speaker_inside_the_loop_does_not_keep_it_alive() -> None:
    """Frames that circle a loop must not count as the parent being alive."""
    room = media_room(3)
    a, b = mutual_backups(room)
    room.to_stage(a)
    room.speak(a, 0.5)
    room.net.partition([room.host.me], [p.me for p in room.listeners])
    room.speak(a, HOST_OUTAGE)
    room.net.heal()
    healed_at = room.net.now
    room.speak(a, 3.0)
    for name in (a, b):
        back = [e for e in parent_switches(room, name) if e.reason == "detached"]
        assert [e.parent for e in back] == [room.host.me], name
    heard = [e.arrived for e in room.received("host", a) if e.arrived > healed_at]
    assert heard and min(heard) - healed_at <= HEARD_AGAIN_WITHIN
    assert all(chain[-1] == "host" for chain in root_paths(room).values())


# --- property: whatever is lost and healed, the links settle into a tree ------------------

Step = tuple[int, float, float]
"""(which listeners are cut off with the host, as a bit mask; outage seconds; calm seconds)."""


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    listeners=st.integers(3, 5),
    fanout=st.sampled_from([2, 6]),
    steps=st.lists(
        st.tuples(st.integers(0, 31), st.floats(0.3, 2.5), st.floats(1.5, 3.0)),
        min_size=1,
        max_size=3,
    ),
)
def test_after_any_losses_and_heals_the_links_settle_into_a_tree_everyone_hears(
    listeners: int, fanout: int, steps: list[Step]
) -> None:
    room = media_room(listeners, fanout=fanout)
    for mask, outage, calm in steps:
        with_host = [p.me for i, p in enumerate(room.listeners) if mask >> i & 1]
        cut_off = [p.me for p in room.listeners if p.me not in with_host]
        room.net.partition([room.host.me, *with_host], cut_off)
        room.net.run_for(outage)
        room.net.heal()
        room.net.run_for(calm)
    room.net.run_for(3.0)
    assert room.host.replica.is_host
    chains = root_paths(room)
    assert all(chain[-1] == "host" for chain in chains.values())
    settled_at = room.net.now
    room.speak("host", 0.5)
    room.net.run_for(0.2)
    for name in chains:
        heard = [e for e in room.received(name, "host") if e.arrived > settled_at]
        assert len(heard) == 25, (name, len(heard))
    tree = host_tree(room)
    assert set(tree.members) == {room.host.me, *(p.me for p in room.listeners)}
    # ... and the host's plan says what the links do.
    assert {p.me: p.media.parent for p in room.listeners} == dict(tree.parents)
