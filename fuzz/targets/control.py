"""Control-plane parsers: message envelopes, operations, terms and room-state snapshots."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator

import attrs

from mitalk_p2p.core import ops
from mitalk_p2p.core.control import Claim, Kind, Message, decode_message, encode_message
from mitalk_p2p.core.errors import WireError
from mitalk_p2p.core.identity import Identity, PublicKey
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.invite import create_invite
from mitalk_p2p.core.replica import Broadcast, RoomConfig, RoomReplica
from mitalk_p2p.core.roles import Role
from mitalk_p2p.core.room_state import RoomState
from mitalk_p2p.core.term import Term
from mitalk_p2p.core.wire import Reader, Writer
from mitalk_p2p.sim.control_net import ControlNet

from . import Target, expect

ROOM = RoomId(bytes(range(16)))
CONFIG = RoomConfig(heartbeat_interval=1.0, host_timeout=4.0, succession_step=1.0)


def person(name: str) -> Identity:
    return Identity.from_seed(hashlib.blake2b(name.encode(), digest_size=32).digest(), name)


# --- checks ------------------------------------------------------------------------------


def check_message(data: bytes) -> None:
    try:
        kind, message = decode_message(data)
    except WireError:
        return
    again = encode_message(message, merge_offer=kind is Kind.MERGE_OFFER)
    expect(again == data, f"{kind.name} message re-encodes to other bytes")
    _verify_signatures(message)


def _verify_signatures(message: Message) -> None:
    """Signature checks on whatever the message carries: they answer, never raise."""
    valid = getattr(message, "signature_valid", None)
    if valid is not None:
        expect(isinstance(valid(), bool), "signature_valid gave a non-boolean")
    if isinstance(message, Claim):
        problem = message.verify(message.claimant)
        expect(problem is None or isinstance(problem, str), "claim check gave a non-string")


def check_op(data: bytes) -> None:
    reader = Reader(data, "op")
    try:
        op = ops.decode_op(reader)
    except WireError:
        return
    writer = Writer()
    ops.encode_op(op, writer)
    used = len(data) - reader.remaining
    expect(writer.getvalue() == data[:used], f"{type(op).__name__} re-encodes to other bytes")


def check_term(data: bytes) -> None:
    reader = Reader(data, "term")
    try:
        term = Term.decode(reader)
    except WireError:
        return
    writer = Writer()
    term.encode(writer)
    expect(writer.getvalue() == data[: len(data) - reader.remaining], "term re-encodes wrong")


def check_room_state(data: bytes) -> None:
    try:
        state = RoomState.decode(data)
    except WireError:
        return
    encoded = state.encode()
    again = RoomState.decode(encoded)
    expect(again.encode() == encoded, "room state encoding is not stable")
    expect(again.digest() == state.digest(), "room state digest changed on a round trip")


# --- seeds -------------------------------------------------------------------------------


@attrs.define
class _RecordingNet(ControlNet):
    """A control network that keeps a copy of every message it carries."""

    seen: list[bytes] = attrs.Factory(list)

    def _collect(self) -> None:
        for key, replica in self.replicas.items():
            for item in replica.outbound():
                if not self.is_up(key):
                    continue
                self.seen.append(item.data)
                targets = item.recipients if isinstance(item, Broadcast) else (item.peer,)
                for target in targets:
                    self._queue.append((key, target, item.data))

    def join(self, joiner: RoomReplica, via: PublicKey) -> None:
        self.add(joiner)
        self.seen.append(joiner.join_message(self.handshake_hash(joiner.me, via)))
        super().join(joiner, via)


@functools.cache
def recorded_room() -> tuple[list[bytes], list[RoomState]]:
    """Messages of every kind from a room's life: joins, moderation, a split, a succession."""
    net = _RecordingNet(ROOM)
    ann = net.add(RoomReplica.create_room(person("ann"), ROOM, name="Standup", now=0.0,
                                          config=CONFIG))
    members = {}
    for name in ("bob", "cat", "dan"):
        invite = create_invite(ann.identity, room_id=ROOM, room_name="Standup",
                               role=Role.LISTENER, now=0.0, lifetime=3600)
        members[name] = RoomReplica.joining(person(name), invite, CONFIG)
        net.join(members[name], ann.me)
    stranger = create_invite(person("mallory"), room_id=ROOM, room_name="Standup",
                             role=Role.LISTENER, now=0.0, lifetime=3600)
    net.join(RoomReplica.joining(person("eve"), stranger, CONFIG), ann.me)
    bob, cat, dan = members["bob"], members["cat"], members["dan"]
    steps: list[tuple[RoomReplica, ops.Op]] = [
        (ann, ops.InviteToStage(bob.me)),
        (bob, ops.AcceptStage()),
        (ann, ops.Mute(bob.me, True)),
        (cat, ops.RaiseHand()),
        (ann, ops.SetInfo("Standup", "Release plan")),
        (ann, ops.RevokeInvite(bytes(16))),
        (ann, ops.Promote(cat.me)),
        (ann, ops.Kick(dan.me)),
    ]
    for actor, op in steps:
        actor.act(op, net.now)
        net.pump()
    net.run_for(2.0)
    net.partition([cat.me])
    ann.act(ops.SetInfo("Standup", "While cat was away"), net.now)
    net.run_for(2.0)
    net.heal()
    net.run_for(3.0)
    net.partition([ann.me])  # the others elect a successor; on healing, ann offers a merge
    ann.act(ops.SetInfo("Standup", "Alone"), net.now)
    net.run_for(15.0)
    net.heal()
    net.run_for(5.0)
    states = [r.state for r in net.replicas.values() if r.state is not None]
    return list(dict.fromkeys(net.seen)), states


def _op_seeds() -> Iterator[bytes]:
    key = PublicKey(bytes(range(32)))
    for op in (
        ops.Leave(), ops.RaiseHand(), ops.SelfMute(True), ops.Admit(key, "ann", Role.SPEAKER,
                                                                    bytes(16)),
        ops.Mute(key, False), ops.SetInfo("Room", "Topic"), ops.SetSuccessors((key, key)),
        ops.TakeOver(key, ops.LeaveReason(1)), ops.TakeOver(None, ops.LeaveReason(1)),
    ):
        writer = Writer()
        ops.encode_op(op, writer)
        yield writer.getvalue()


def seeds() -> Iterator[tuple[str, bytes]]:
    messages, states = recorded_room()
    for data in messages:
        yield "message", data
    for state in states:
        yield "room-state", state.encode()
    for data in _op_seeds():
        yield "op", data
    writer = Writer()
    Term(3, 2, 41).encode(writer)
    yield "term", writer.getvalue()


TARGET = Target(
    "control",
    "room control messages (envelopes, signed requests, log entries, heartbeats, claims, "
    "pre-votes, snapshots, joins), operations, terms and room states",
    (
        ("message", check_message),
        ("room-state", check_room_state),
        ("op", check_op),
        ("term", check_term),
    ),
    seeds,
)
