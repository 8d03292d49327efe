"""Forged, replayed, stale, out-of-order and out-of-authority commands are refused and counted."""

from __future__ import annotations

import attrs

from mitalk_p2p.core import ops
from mitalk_p2p.core.control import LogEntry, SignedRequest, decode_message, encode_message
from mitalk_p2p.core.identity import Domain
from mitalk_p2p.core.replica import Broadcast, RoomReplica
from mitalk_p2p.core.term import Term

from .room_fixtures import ROOM, digests, make_room, person, state_of


def entry_bytes(host: RoomReplica) -> list[bytes]:
    """The encoded log entries the host has queued to broadcast."""
    found = []
    for item in host.outbound():
        if isinstance(item, Broadcast):
            _kind, message = decode_message(item.data)
            if isinstance(message, LogEntry):
                found.append(item.data)
    return found


def test_forged_entry_is_rejected_and_state_is_unchanged() -> None:
    net, r = make_room("bob", "cat")
    before = state_of(r["bob"]).digest()
    mallory = person("mallory")
    request = SignedRequest.create(r["cat"].identity, ROOM, Term.first(), 99, ops.RaiseHand())
    seq = state_of(r["bob"]).seq + 1
    forged = LogEntry.create(mallory, ROOM, Term.first(), seq, request)
    r["bob"].receive(encode_message(forged), r["ann"].me, net.now)
    assert r["bob"].statistics().rejected == {"forged": 1}
    assert state_of(r["bob"]).digest() == before


def test_forged_request_inside_a_genuine_entry_is_rejected() -> None:
    net, r = make_room("bob", "cat")
    # The host (compromised or buggy) sequences a leave that cat never signed.
    genuine = SignedRequest.create(r["cat"].identity, ROOM, Term.first(), 9, ops.Leave())
    forged_signature = person("mallory").sign(Domain.REQUEST, genuine.body)
    request = attrs.evolve(genuine, signature=forged_signature)
    seq = state_of(r["bob"]).seq + 1
    entry = LogEntry.create(r["ann"].identity, ROOM, Term.first(), seq, request)
    before = state_of(r["bob"]).digest()
    r["bob"].receive(encode_message(entry), r["ann"].me, net.now)
    assert r["bob"].statistics().rejected == {"forged": 1}
    assert state_of(r["bob"]).digest() == before


def test_forged_request_to_the_host_is_rejected() -> None:
    net, r = make_room("bob")
    request = SignedRequest.create(r["bob"].identity, ROOM, Term.first(), 50, ops.RaiseHand())
    tampered = SignedRequest(
        ROOM,
        Term.first(),
        r["bob"].me,
        50,
        ops.LowerHand(),
        request.body[:-1] + b"\x03",
        request.signature,
    )
    r["ann"].receive(encode_message(tampered), r["bob"].me, net.now)
    assert r["ann"].statistics().rejected == {"forged": 1}


def test_replayed_entry_and_replayed_request_are_rejected() -> None:
    net, r = make_room("bob", "cat")
    r["bob"].act(ops.RaiseHand(), net.now)
    [request_bytes] = [item.data for item in r["bob"].outbound()]
    r["ann"].receive(request_bytes, r["bob"].me, net.now)
    [entry] = entry_bytes(r["ann"])
    r["cat"].receive(entry, r["ann"].me, net.now)
    r["cat"].receive(entry, r["ann"].me, net.now)
    assert r["cat"].statistics().rejected == {"replayed": 1}
    r["bob"].receive(entry, r["ann"].me, net.now)
    r["bob"].act(ops.LowerHand(), net.now)
    net.pump()
    # Replaying bob's old "raise hand" to the host doesn't raise it again.
    r["ann"].receive(request_bytes, r["bob"].me, net.now)
    assert r["ann"].statistics().rejected == {"replayed": 1}
    assert not state_of(r["ann"]).members[r["bob"].me].hand_raised


def test_stale_term_command_is_rejected() -> None:
    net, r = make_room("bob", "cat")
    old = SignedRequest.create(r["bob"].identity, ROOM, Term(1, 0), 7, ops.RaiseHand())
    state_of(r["ann"]).term = Term(3, 0)
    r["ann"].receive(encode_message(old), r["bob"].me, net.now)
    assert r["ann"].statistics().rejected == {"stale_term": 1}


def test_entry_from_an_old_term_is_rejected() -> None:
    net, r = make_room("bob")
    request = SignedRequest.create(r["ann"].identity, ROOM, Term(1, 0), 40, ops.SetInfo("x", ""))
    stale = LogEntry.create(r["ann"].identity, ROOM, Term(1, 0), 99, request)
    state_of(r["bob"]).term = Term(2, 0)
    r["bob"].receive(encode_message(stale), r["ann"].me, net.now)
    assert r["bob"].statistics().rejected == {"stale_term": 1}


def test_out_of_order_entries_are_held_then_applied_in_order() -> None:
    net, r = make_room("bob", "cat")
    r["ann"].act(ops.SetInfo("one", ""), net.now)
    r["ann"].act(ops.SetInfo("two", ""), net.now)
    first, second = entry_bytes(r["ann"])
    r["cat"].receive(second, r["ann"].me, net.now)
    assert state_of(r["cat"]).name == "Standup"
    r["cat"].receive(first, r["ann"].me, net.now)
    assert state_of(r["cat"]).name == "two"
    assert state_of(r["cat"]).digest() == state_of(r["ann"]).digest()


def test_entry_far_ahead_is_rejected_and_triggers_a_resync() -> None:
    net, r = make_room("bob")
    request = SignedRequest.create(r["ann"].identity, ROOM, Term(1, 0), 500, ops.SetInfo("x", ""))
    far = LogEntry.create(r["ann"].identity, ROOM, Term(1, 0), 10_000, request)
    r["bob"].receive(encode_message(far), r["ann"].me, net.now)
    assert r["bob"].statistics().rejected == {"out_of_order": 1}
    assert r["bob"].statistics().resyncs_requested == 1


def test_out_of_authority_request_is_rejected_by_the_host() -> None:
    net, r = make_room("bob", "cat")
    kick = SignedRequest.create(r["bob"].identity, ROOM, Term.first(), 10, ops.Kick(r["cat"].me))
    r["ann"].receive(encode_message(kick), r["bob"].me, net.now)
    assert r["ann"].statistics().rejected == {"unauthorized": 1}
    assert r["cat"].me in state_of(r["ann"]).members


def test_out_of_authority_entry_is_rejected_by_replicas() -> None:
    net, r = make_room("bob", "cat")
    kick = SignedRequest.create(r["bob"].identity, ROOM, Term.first(), 10, ops.Kick(r["cat"].me))
    seq = state_of(r["cat"]).seq + 1
    entry = LogEntry.create(r["ann"].identity, ROOM, Term.first(), seq, kick)
    r["cat"].receive(encode_message(entry), r["ann"].me, net.now)
    assert r["cat"].statistics().rejected == {"unauthorized": 1}
    assert r["cat"].joined


def test_garbage_never_raises_and_is_counted() -> None:
    net, r = make_room("bob")
    for junk in (b"", b"\x01", b"\x09\x02", b"\x01\x02" + bytes(300), b"\x01\x63abc"):
        r["bob"].receive(junk, r["ann"].me, net.now)
    assert r["bob"].statistics().rejected == {"malformed": 5}


def test_diverged_replica_detects_it_from_the_heartbeat_and_resyncs() -> None:
    net, r = make_room("bob", "cat")
    state_of(r["cat"]).topic = "tampered locally"
    assert len(digests(r)) == 2
    net.run_for(2.0)
    assert r["cat"].statistics().divergences_detected >= 1
    assert r["cat"].statistics().snapshots_installed >= 2
    assert len(digests(r)) == 1


def test_replica_that_missed_entries_catches_up() -> None:
    net, r = make_room("bob", "cat")
    net.partition([r["cat"].me])
    r["ann"].act(ops.SetInfo("while you were away", ""), net.now)
    net.pump()
    net.heal()
    net.run_for(2.0)
    assert state_of(r["cat"]).name == "while you were away"
    assert len(digests(r)) == 1
