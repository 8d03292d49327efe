"""Moderator commands that must not take effect: forged, replayed, from an old term, rolled back.

Each attack is delivered over an authenticated link, as a member (or a former
host) could send it, to the replica that must refuse it.  After each one the
replica's state is exactly as before (its digest, its version ``seq`` and its
term), the refusal is counted in ``statistics().rejected`` under its reason, and
nothing is raised.  The room runs in the in-memory control network on virtual
time; the last test sends forged commands over a real room's links.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
import pytest
import trio

from mitalk_p2p.core import ops
from mitalk_p2p.core.control import (
    Heartbeat,
    LogEntry,
    SignedRequest,
    Snapshot,
    SnapshotRequest,
    decode_message,
    encode_message,
)
from mitalk_p2p.core.identity import Domain, Identity, PublicKey
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.invite import create_invite
from mitalk_p2p.core.replica import Broadcast, RoomReplica, SendTo
from mitalk_p2p.core.roles import Role
from mitalk_p2p.core.term import Term
from mitalk_p2p.runtime.peer_runtime import HostRoom, JoinRoom, PeerConfig, open_peer
from mitalk_p2p.sim.control_net import ControlNet
from tests.core.room_fixtures import ROOM, make_room, person, state_of

MALLORY = person("mallory")


@attrs.frozen
class Fingerprint:
    """What must not change when an attack is refused."""

    digest: bytes
    seq: int
    term: Term
    leader: PublicKey | None

    @classmethod
    def of(cls, replica: RoomReplica) -> Fingerprint:
        state = state_of(replica)
        return cls(state.digest(), state.seq, state.term, replica.leader)


def _deliver(target: RoomReplica, data: bytes, sender: PublicKey, net: ControlNet) -> str:
    """Hand ``data`` to ``target`` from ``sender``; the one rejection reason it caused."""
    before = target.statistics().rejected
    fingerprint = Fingerprint.of(target)
    target.receive(data, sender, net.now)
    after = target.statistics().rejected
    assert Fingerprint.of(target) == fingerprint, "a refused command changed the room"
    grown = {reason: n - before.get(reason, 0) for reason, n in after.items()}
    reasons = [reason for reason, n in grown.items() if n]
    assert len(reasons) == 1 and grown[reasons[0]] == 1, f"rejections grew by {grown}"
    return reasons[0]


def _captured(replica: RoomReplica, kind: type) -> list[bytes]:
    """The encoded messages of ``kind`` that ``replica`` has queued to send."""
    found = []
    for item in replica.outbound():
        data = item.data
        if isinstance(decode_message(data)[1], kind) and isinstance(item, (SendTo, Broadcast)):
            found.append(data)
    return found


def _with_signature(request: SignedRequest, signer: Identity) -> SignedRequest:
    return attrs.evolve(request, signature=signer.sign(Domain.REQUEST, request.body))


# --- forged ------------------------------------------------------------------------------------


def _next_counter(replica: RoomReplica, author: PublicKey) -> int:
    return state_of(replica).members[author].last_counter + 1


FORGERIES: dict[str, tuple[str, Callable[[dict[str, RoomReplica]], tuple[str, str, bytes]]]] = {}


def forgery(name: str, reason: str) -> Callable[..., object]:
    def register(make: Callable[[dict[str, RoomReplica]], tuple[str, str, bytes]]) -> object:
        FORGERIES[name] = (reason, make)
        return make

    return register


@forgery("a listener's own kick, to the host", "unauthorized")
def _listener_kick(r: dict[str, RoomReplica]) -> tuple[str, str, bytes]:
    bob = r["bob"]
    request = SignedRequest.create(bob.identity, ROOM, Term.first(),
                                   _next_counter(r["ann"], bob.me),
                                   ops.Kick(r["cat"].me))  # fmt: skip
    return "ann", "bob", encode_message(request)


@forgery("a kick in the host's name, signed by another key", "forged")
def _kick_in_the_hosts_name(r: dict[str, RoomReplica]) -> tuple[str, str, bytes]:
    ann = r["ann"]
    genuine = SignedRequest.create(ann.identity, ROOM, Term.first(),
                                   _next_counter(ann, ann.me), ops.Kick(r["cat"].me))  # fmt: skip
    return "ann", "bob", encode_message(_with_signature(genuine, MALLORY))


@forgery("a kick in a moderator's name, signed by another key", "forged")
def _kick_in_a_moderators_name(r: dict[str, RoomReplica]) -> tuple[str, str, bytes]:
    dan = r["dan"]
    genuine = SignedRequest.create(dan.identity, ROOM, Term.first(),
                                   _next_counter(r["ann"], dan.me),
                                   ops.Kick(r["cat"].me))  # fmt: skip
    return "ann", "bob", encode_message(_with_signature(genuine, r["bob"].identity))


@forgery("a log entry that the host never signed", "forged")
def _unsigned_entry(r: dict[str, RoomReplica]) -> tuple[str, str, bytes]:
    ann = r["ann"]
    request = SignedRequest.create(ann.identity, ROOM, Term.first(),
                                   _next_counter(ann, ann.me), ops.Kick(r["cat"].me))  # fmt: skip
    entry = LogEntry.create(MALLORY, ROOM, Term.first(), state_of(r["bob"]).seq + 1, request)
    return "bob", "dan", encode_message(entry)


@forgery("a host-signed entry carrying a request its author never signed", "forged")
def _entry_with_forged_request(r: dict[str, RoomReplica]) -> tuple[str, str, bytes]:
    dan = r["dan"]
    genuine = SignedRequest.create(dan.identity, ROOM, Term.first(),
                                   _next_counter(r["ann"], dan.me),
                                   ops.Kick(r["cat"].me))  # fmt: skip
    forged = _with_signature(genuine, MALLORY)
    entry = LogEntry.create(r["ann"].identity, ROOM, Term.first(), state_of(r["bob"]).seq + 1,
                            forged)  # fmt: skip
    return "bob", "ann", encode_message(entry)


@forgery("a moderator's kick for another room", "wrong_room")
def _kick_for_another_room(r: dict[str, RoomReplica]) -> tuple[str, str, bytes]:
    dan = r["dan"]
    request = SignedRequest.create(dan.identity, RoomId(bytes(16)), Term.first(),
                                   _next_counter(r["ann"], dan.me),
                                   ops.Kick(r["cat"].me))  # fmt: skip
    return "ann", "dan", encode_message(request)


def _moderated_room() -> tuple[ControlNet, dict[str, RoomReplica]]:
    """ann hosts; dan is a moderator; bob and cat are listeners."""
    net, r = make_room("bob", "cat", "dan")
    r["ann"].act(ops.Promote(r["dan"].me), net.now)
    net.run_for(1.0)
    assert state_of(r["bob"]).role_of(r["dan"].me) is Role.MODERATOR
    return net, r


@pytest.mark.parametrize("name", FORGERIES)
def test_a_forged_command_is_rejected_and_the_state_is_unchanged(name: str) -> None:
    net, r = _moderated_room()
    reason, make = FORGERIES[name]
    target, sender, data = make(r)
    assert _deliver(r[target], data, r[sender].me, net) == reason
    net.run_for(2.0)
    assert r["cat"].joined and r["cat"].me in state_of(r["ann"]).members
    assert len({state_of(x).digest() for x in r.values()}) == 1


# --- replayed -------------------------------------------------------------------------------------


def test_a_replayed_moderator_command_is_rejected_and_its_effect_stays_undone() -> None:
    net, r = _moderated_room()
    dan, bob, cat = r["dan"], r["bob"], r["cat"]
    # The moderator renames the room; an attacker keeps the signed request and the host's
    # signed entry that carried it.
    dan.act(ops.SetInfo("Quiet hour", ""), net.now)
    [request] = _captured(dan, SignedRequest)
    r["ann"].receive(request, dan.me, net.now)
    [entry] = _captured(r["ann"], LogEntry)
    for member in (bob, cat, dan):
        member.receive(entry, r["ann"].me, net.now)
    dan.act(ops.SetInfo("Open mic", ""), net.now)
    net.run_for(1.0)
    assert {state_of(x).name for x in r.values()} == {"Open mic"}
    # Both again: the request to the host, the entry to a member.
    assert _deliver(r["ann"], request, dan.me, net) == "replayed"
    assert _deliver(cat, entry, r["ann"].me, net) == "replayed"
    net.run_for(2.0)
    assert {state_of(x).name for x in r.values()} == {"Open mic"}
    assert len({state_of(x).digest() for x in r.values()}) == 1


# --- an old term ----------------------------------------------------------------------------------


def test_commands_from_an_old_term_are_rejected_after_a_succession() -> None:
    net, r = _moderated_room()
    ann, bob, cat, dan = r["ann"], r["bob"], r["cat"], r["dan"]
    old = state_of(bob).term
    # Material of term 1, signed by its genuine host and members, kept back by an attacker.
    old_request = SignedRequest.create(dan.identity, ROOM, old, _next_counter(ann, dan.me),
                                       ops.Kick(cat.me))  # fmt: skip
    ann_request = SignedRequest.create(ann.identity, ROOM, old, _next_counter(ann, ann.me),
                                       ops.Kick(cat.me))  # fmt: skip
    old_entry = LogEntry.create(ann.identity, ROOM, old, state_of(bob).seq + 1, ann_request)
    old_heartbeat = Heartbeat.create(ann.identity, ROOM, old, state_of(ann).seq,
                                     state_of(ann).digest())  # fmt: skip
    ann.depart(net.now)  # a signed leave: dan, the first successor, claims term 2 at once
    net.run_for(0.5)
    assert dan.is_host and state_of(bob).term > old and bob.leader == dan.me
    assert _deliver(dan, encode_message(old_request), bob.me, net) == "stale_term"
    assert _deliver(bob, encode_message(old_entry), cat.me, net) == "stale_term"
    assert _deliver(cat, encode_message(old_heartbeat), ann.me, net) == "stale_term"
    net.run_for(2.0)
    assert all(x.leader == dan.me for x in (bob, cat))
    assert cat.me in state_of(dan).members


def test_a_replayed_claim_of_the_current_term_is_rejected() -> None:
    net, r = _moderated_room()
    ann, bob, dan = r["ann"], r["bob"], r["dan"]
    ann.depart(net.now)
    net.run_for(0.5)
    # The claim that made dan the host travels in every snapshot of the new term.
    snapshot = decode_message(_snapshot_now(dan, bob, net))[1]
    assert isinstance(snapshot, Snapshot) and snapshot.lineage
    for claim in snapshot.lineage:
        assert _deliver(bob, encode_message(claim), dan.me, net) == "stale_term"
    assert bob.leader == dan.me


# --- a rolled-back room state ---------------------------------------------------------------------


def _snapshot_now(host: RoomReplica, member: RoomReplica, net: ControlNet) -> bytes:
    """The snapshot the host sends ``member`` when asked now (captured, not delivered)."""
    state = state_of(member)
    host.receive(encode_message(SnapshotRequest(ROOM, state.term, state.seq)), member.me, net.now)
    [data] = _captured(host, Snapshot)
    return data


def test_a_replayed_older_snapshot_does_not_roll_the_room_back() -> None:
    net, r = _moderated_room()
    ann, bob, cat = r["ann"], r["bob"], r["cat"]
    old_snapshot = _snapshot_now(ann, bob, net)
    ann.act(ops.SetInfo("Renamed", "after the snapshot"), net.now)
    ann.act(ops.Kick(cat.me), net.now)
    net.run_for(1.0)
    assert state_of(bob).name == "Renamed" and cat.me in state_of(bob).banned
    # The host's own signature, the right room and term: only the version is old.
    assert _deliver(bob, old_snapshot, ann.me, net) == "stale_term"
    assert state_of(bob).name == "Renamed" and cat.me not in state_of(bob).members


def test_a_snapshot_from_an_old_term_does_not_roll_back_a_succession() -> None:
    net, r = _moderated_room()
    ann, bob, dan = r["ann"], r["bob"], r["dan"]
    old_snapshot = _snapshot_now(ann, bob, net)
    ann.depart(net.now)
    net.run_for(0.5)
    assert bob.leader == dan.me
    assert _deliver(bob, old_snapshot, ann.me, net) == "stale_term"
    assert bob.leader == dan.me and ann.me not in state_of(bob).members


# --- on a real room ---------------------------------------------------------------------------


async def test_forged_commands_over_real_links_are_rejected_counted_and_the_room_goes_on() -> None:
    async with open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Real"))) as host:

        def invite() -> JoinRoom:
            state = host.state
            assert state is not None
            return JoinRoom(create_invite(
                host.identity, room_id=state.room_id, room_name=state.name, role=Role.LISTENER,
                now=time.time(), lifetime=600, addresses=(host.control_address,),
            ))  # fmt: skip

        async with (
            open_peer(PeerConfig(Identity.generate("Mallory"), invite())) as mallory,
            open_peer(PeerConfig(Identity.generate("Victim"), invite())) as victim,
        ):
            state = host.state
            assert state is not None
            before = Fingerprint(state.digest(), state.seq, state.term, host.me)
            counter = state.members[mallory.me].last_counter + 1
            own = SignedRequest.create(mallory.identity, state.room_id, state.term, counter,
                                       ops.Kick(victim.me))  # fmt: skip
            in_hosts_name = _with_signature(
                SignedRequest.create(host.identity, state.room_id, state.term, 10**6,
                                     ops.Kick(victim.me)), mallory.identity)  # fmt: skip
            for forged in (own, in_hosts_name):
                mallory.plane.send(host.me, encode_message(forged))
            with trio.fail_after(10):
                await host.wait_for(
                    lambda: sum(host.statistics().peer.room.rejected.values()) >= 2
                )
            assert host.statistics().peer.room.rejected == {"unauthorized": 1, "forged": 1}
            state = host.state
            assert state is not None
            assert Fingerprint(state.digest(), state.seq, state.term, host.me) == before
            assert victim.me in state.members and not victim.left.is_set()
            # The host still admits and serves.
            async with open_peer(PeerConfig(Identity.generate("Late"), invite())) as late:
                assert late.state is not None and late.me in late.state.members
