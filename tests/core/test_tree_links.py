"""Tree edges on their own: loop detection, stepping back, stray children, and the host's view.

A few :class:`TreeLinks` exchange their probes through a tiny in-memory switch
(one step of latency, optional cut addresses); time is whatever the test says.
"""

from __future__ import annotations

import attrs

from mitalk_p2p.core.identity import PublicKey
from mitalk_p2p.core.media_events import SendDatagram
from mitalk_p2p.core.media_messages import (
    ChildFound,
    ChildLost,
    Neighbor,
    ParentSwitched,
    Probe,
    ProbeRole,
    RelayOffer,
    SwitchReason,
    TreePosition,
    encode_path,
    path_keys,
)
from mitalk_p2p.core.tree import TreeLimits
from mitalk_p2p.core.tree_coordinator import TreeCoordinator
from mitalk_p2p.core.tree_links import ChildDropped, ChildSeen, Switched, TreeLinks, TreeOutcome

from .room_fixtures import person

TAG = b"tag!"
INTERVAL = 0.2
STEP = INTERVAL / 4
"""Time between two rounds of the switch, and each datagram's latency."""
H, A, B, C = (person(name).public_key for name in ("H", "A", "B", "C"))
NAMES = {H: "H", A: "A", B: "B", C: "C"}


def neighbor(key: PublicKey) -> Neighbor:
    return Neighbor(key, NAMES[key])


def position(
    parent: PublicKey | None,
    backup: PublicKey | None = None,
    children: tuple[PublicKey, ...] = (),
    version: int = 1,
) -> TreePosition:
    return TreePosition(
        version,
        neighbor(parent) if parent else None,
        neighbor(backup) if backup else None,
        tuple(neighbor(c) for c in children),
    )


@attrs.define
class Switch:
    """Delivers probes between links a step later; a cut address neither sends nor receives."""

    links: dict[str, TreeLinks]
    cut: set[str] = attrs.Factory(set)
    outcomes: dict[str, list[TreeOutcome]] = attrs.Factory(dict)
    in_flight: list[tuple[str, SendDatagram]] = attrs.Factory(list)

    def deliver(self, sender: str, outcomes: list[TreeOutcome]) -> None:
        for outcome in outcomes:
            if not isinstance(outcome, SendDatagram):
                self.outcomes.setdefault(sender, []).append(outcome)
            elif sender not in self.cut and outcome.address not in self.cut:
                self.in_flight.append((sender, outcome))

    def run(self, start: float, seconds: float) -> float:
        now = start
        while now < start + seconds:
            now = round(now + STEP, 6)
            arriving, self.in_flight = self.in_flight, []
            for sender, datagram in arriving:
                if sender not in self.cut and datagram.address not in self.cut:
                    target = self.links[datagram.address]
                    probe = Probe.decode(datagram.data)
                    self.deliver(datagram.address, target.on_probe(probe, sender, now))
            for name, links in sorted(self.links.items()):
                self.deliver(name, links.tick(now))
        return now

    def switches(self, name: str) -> list[Switched]:
        return [o for o in self.outcomes.get(name, []) if isinstance(o, Switched)]


def star(*listeners: tuple[PublicKey, PublicKey | None]) -> Switch:
    """H with the given (listener, backup) children, every edge already probed once."""
    links = {"H": TreeLinks(H, TAG, interval=INTERVAL)}
    links["H"].apply_position(position(None, children=tuple(k for k, _ in listeners)), 0.0)
    for key, _ in listeners:
        links[NAMES[key]] = TreeLinks(key, TAG, interval=INTERVAL)
    switch = Switch(links)
    for key, backup in listeners:
        switch.deliver(NAMES[key], links[NAMES[key]].apply_position(position(H, backup), 0.0))
    return switch


def test_a_parent_answer_carries_its_path_and_whether_it_reaches_the_root() -> None:
    switch = star((A, B), (B, A))
    switch.run(0.0, 1.0)
    b = switch.links["B"]
    b.apply_position(position(H, A, children=(C,), version=2), 1.0)
    c = TreeLinks(C, TAG, interval=INTERVAL)
    switch.links["C"] = c
    switch.deliver("C", c.apply_position(position(B, A), 1.0))
    now = switch.run(1.0, 2 * STEP)
    assert c.parent is not None and path_keys(c.parent.path) == (H,) and c.parent.rooted
    assert c.path() == (B, H) and c.rooted(now)
    assert switch.links["H"].path() == () and switch.links["H"].rooted(now)


def test_two_orphans_that_pick_each_other_see_the_loop_and_go_back_to_the_host() -> None:
    switch = star((A, B), (B, A))
    now = switch.run(0.0, 1.0)
    switch.cut.add("H")
    now = switch.run(now, 0.8)
    # Both lost H at the same moment and took the other as backup: a loop.
    assert [(s.old, s.new) for s in switch.switches("A")] == [(H, B)]
    assert [(s.old, s.new) for s in switch.switches("B")] == [(H, A)]
    a, b = switch.links["A"], switch.links["B"]
    assert not a.children and not b.children, "neither adopted its own parent"
    assert a.parent is not None and a.parent.looped and not a.rooted(now)
    now = switch.run(now, 1.0)
    for name, other in (("A", B), ("B", A)):
        back = switch.switches(name)[1:]
        assert [(s.old, s.new, s.reason) for s in back] == [(other, H, SwitchReason.DETACHED)]
    assert a.parent is not None and a.parent.key == H
    assert b.parent is not None and b.parent.key == H
    # Waiting on the silent host, nowhere else to go: no more switches.
    now = switch.run(now, 2.0)
    assert len(switch.switches("A")) == 2 and len(switch.switches("B")) == 2
    switch.cut.clear()
    now = switch.run(now, 0.4)
    assert set(switch.links["H"].children) == {A, B}
    assert a.rooted(now) and b.rooted(now)


def test_a_ring_of_three_orphans_is_seen_through_the_paths_and_undone() -> None:
    switch = star((A, B), (B, C), (C, A))
    now = switch.run(0.0, 1.0)
    switch.cut.add("H")
    now = switch.run(now, 3.0)
    for name, backup in (("A", B), ("B", C), ("C", A)):
        moves = [(s.new, s.reason) for s in switch.switches(name)]
        assert moves == [(backup, SwitchReason.SILENT), (H, SwitchReason.DETACHED)], name
        assert switch.links[name].children == {}
    switch.cut.clear()
    now = switch.run(now, 0.4)
    assert set(switch.links["H"].children) == {A, B, C}


def test_a_relay_refuses_its_own_ancestor_as_a_child_but_answers_it() -> None:
    switch = star((A, B), (B, A))
    switch.run(0.0, 1.0)
    b = switch.links["B"]
    b.apply_position(position(H, A, children=(C,), version=2), 1.0)
    c = TreeLinks(C, TAG, interval=INTERVAL)
    switch.links["C"] = c
    switch.deliver("C", c.apply_position(position(B, A), 1.0))
    now = switch.run(1.0, 2 * STEP)
    assert C in b.children and c.path() == (B, H)
    # B, C's parent, asks to hang below C.
    probe = Probe(TAG, B, 2, ProbeRole.CHILD, 99, 0, 0)
    [reply] = c.on_probe(probe, "B", now)
    assert B not in c.children
    assert isinstance(reply, SendDatagram)
    answer = Probe.decode(reply.data)
    assert answer.role is ProbeRole.PARENT and B in path_keys(answer.path)


def test_answers_and_frames_from_a_looped_parent_prove_nothing() -> None:
    a = TreeLinks(A, TAG, interval=INTERVAL)
    a.apply_position(position(B), 0.0)
    looped = Probe(TAG, B, 1, ProbeRole.PARENT, 5, 1, 0, path=encode_path((C, A, H)))
    assert a.on_probe(looped, "B", 0.5) == []
    assert a.parent is not None and a.parent.looped and not a.parent.rooted
    a.heard_from("B", 0.55)
    assert a.parent.last_heard == 0.0
    assert a.path() == (B, C, A, H), "the loop shows in A's own path as well"


def test_a_peer_under_a_backup_that_never_reaches_the_root_returns_to_its_assigned_parent() -> None:
    a = TreeLinks(A, TAG, interval=INTERVAL)
    a.apply_position(position(H, B), 0.0)
    out = a.tick(0.0)
    now = 0.0
    while not any(isinstance(o, Switched) for o in out):
        now = round(now + INTERVAL, 6)
        out = a.tick(now)
    [switched] = [o for o in out if isinstance(o, Switched)]
    assert (switched.new, switched.reason) == (B, SwitchReason.SILENT)
    moved_at = now
    # B answers every probe, but its own path never reaches the root (a long ring, say).
    while True:
        now = round(now + INTERVAL, 6)
        path = encode_path((C,))
        answer = Probe(TAG, B, 1, ProbeRole.PARENT, int(now * 10), 0, 0, rooted=False, path=path)
        assert a.on_probe(answer, "B", now) == []
        out = a.tick(now)
        switched_back = [o for o in out if isinstance(o, Switched)]
        if switched_back:
            break
        assert now - moved_at < a.interval * (a.detached_misses + 5), "never left the backup"
    assert (switched_back[0].new, switched_back[0].reason) == (H, SwitchReason.DETACHED)
    assert now - moved_at >= a.interval * a.detached_misses


def test_a_child_the_host_did_not_place_is_reported_until_a_position_accounts_for_it() -> None:
    b = TreeLinks(B, TAG, interval=INTERVAL)
    b.apply_position(position(H, children=(C,)), 0.0)

    def probe_from(key: PublicKey, at: float) -> list[TreeOutcome]:
        return b.on_probe(Probe(TAG, key, 1, ProbeRole.CHILD, round(at * 10) + 1, 0, 0), "x", at)

    def seen(key: PublicKey, at: float) -> list[TreeOutcome]:
        return [o for o in probe_from(key, at) if isinstance(o, ChildSeen)]

    assert seen(C, 0.1) == []
    assert seen(A, 0.1) == [ChildSeen(A)]
    assert seen(A, 0.3) == []
    assert seen(A, 2.1) == [ChildSeen(A)], "reported again: the first report may be lost"
    b.apply_position(position(H, children=(A, C), version=2), 2.2)
    assert seen(A, 4.5) == []
    # C falls silent and is dropped; when it comes back, that is news for the host.
    out = b.tick(4.6)
    assert ChildDropped(C) in out
    assert seen(C, 4.7) == [ChildSeen(C)]


# --- the host's side ----------------------------------------------------------------------


def coordinator() -> tuple[TreeCoordinator, list[tuple[PublicKey, TreePosition]]]:
    """H hosting A, B and C, planned; returns the first positions sent."""
    tc = TreeCoordinator(H, TreeLimits(fanout=6))
    tc.members_changed(frozenset({H, A, B, C}), 0.0)
    tc.set_own_offer(RelayOffer("H", 6), 0.0)
    for key in (A, B, C):
        tc.on_offer(key, RelayOffer(NAMES[key], 6), 0.0)
    return tc, tc.handle_timer(1.0)


def test_a_member_written_off_while_the_host_was_cut_off_is_placed_again_when_found() -> None:
    tc, first = coordinator()
    assert {key for key, _ in first} == {H, A, B, C}
    for key in (A, B, C):  # the host's own links dropped every child at once
        tc.on_report(H, ChildLost(1, key), 2.0)
    assert tc.handle_timer(2.5) == []
    tc.handle_timer(3.1)
    assert tc.tree is not None and set(tc.tree.members) == {H}
    # After the outage A probes the host again; the host's links report it found.
    tc.on_report(H, ChildFound(2, A), 4.0)
    sent = dict(tc.handle_timer(4.1))
    assert A in sent and sent[A].parent == Neighbor(H, "H")
    assert tc.tree is not None and set(tc.tree.members) == {H, A}
    # B's switch report is a sign of life too, and C's fresh offer.
    tc.on_report(B, ParentSwitched(1, H, A), 4.2)
    tc.on_offer(C, RelayOffer("C", 6), 4.2)
    sent = dict(tc.handle_timer(4.3))
    assert {B, C} <= set(sent)
    assert tc.tree is not None and set(tc.tree.members) == {H, A, B, C}


def test_a_report_before_the_grace_ends_cancels_the_loss() -> None:
    tc, _ = coordinator()
    tc.on_report(H, ChildLost(1, A), 2.0)
    tc.on_report(H, ChildFound(2, A), 2.3)
    tc.handle_timer(3.1)
    assert tc.tree is not None and A in tc.tree.members


def test_a_child_found_astray_gets_its_position_again_after_the_grace() -> None:
    tc, _ = coordinator()
    assert tc.tree is not None and tc.tree.parents[C] == H
    tc.on_report(B, ChildFound(3, C), 2.0)  # C hangs below B, which the plan never said
    assert tc.handle_timer(2.1) == []
    sent = dict(tc.handle_timer(3.1))
    assert C in sent and sent[C].parent == Neighbor(H, "H")
    # If C's own switch report explains it within the grace, nothing is resent.
    tc.on_report(A, ChildFound(4, B), 4.0)
    tc.on_report(B, ParentSwitched(2, H, A), 4.1)
    sent = dict(tc.handle_timer(5.1))
    assert tc.tree.parents[B] == A
    assert all(position.version for position in sent.values())
    assert B not in sent or sent[B].parent == Neighbor(A, "A")
