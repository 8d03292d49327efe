"""Joining a room: the host checks the invite, its uses, bans, revocations and the link."""

from __future__ import annotations

from mitalk_p2p.core import ops
from mitalk_p2p.core.control import JoinRequest, decode_message, encode_message
from mitalk_p2p.core.events import JoinedRoom, JoinRefusedEvent
from mitalk_p2p.core.replica import RoomReplica, SendTo
from mitalk_p2p.core.roles import Role

from .room_fixtures import CONFIG, ROOM, invite_for, join, make_room, person, state_of


def refusal(replica: RoomReplica) -> str:
    [event] = [e for e in replica.events() if isinstance(e, JoinRefusedEvent)]
    return event.problem


def test_join_with_a_valid_invite_gives_the_role_and_the_snapshot() -> None:
    net, r = make_room()
    bob = join(net, r["ann"], person("bob"), invite_for(r["ann"].identity, role=Role.SPEAKER))
    assert bob.joined
    assert [type(e) for e in bob.events()] == [JoinedRoom]
    assert bob.state is not None and bob.state.role_of(bob.me) is Role.SPEAKER
    assert bob.state.digest() == state_of(r["ann"]).digest()


def test_max_uses_is_enforced_by_the_host() -> None:
    net, r = make_room()
    invite = invite_for(r["ann"].identity, max_uses=2)
    assert join(net, r["ann"], person("bob"), invite).joined
    assert join(net, r["ann"], person("cat"), invite).joined
    dan = join(net, r["ann"], person("dan"), invite)
    assert not dan.joined and refusal(dan) == "used-up"
    assert r["ann"].statistics().joins_refused == 1


def test_kicked_peer_cannot_rejoin_with_its_old_invite() -> None:
    net, r = make_room()
    invite = invite_for(r["ann"].identity, max_uses=5)
    bob = join(net, r["ann"], person("bob"), invite)
    r["ann"].act(ops.Kick(bob.me), net.now)
    net.pump()
    again = join(net, r["ann"], person("bob"), invite)
    assert not again.joined and refusal(again) == "banned"
    fresh = join(net, r["ann"], person("bob"), invite_for(r["ann"].identity))
    assert not fresh.joined and refusal(fresh) == "banned"


def test_revoked_invite_is_refused_and_revocations_travel_in_the_room_state() -> None:
    net, r = make_room("bob")
    invite = invite_for(r["ann"].identity, max_uses=5)
    r["ann"].act(ops.RevokeInvite(invite.invite.nonce), net.now)
    net.pump()
    assert invite.invite.nonce in state_of(r["bob"]).revoked
    cat = join(net, r["ann"], person("cat"), invite)
    assert not cat.joined and refusal(cat) == "revoked"


def test_audience_bound_invite_works_only_for_its_audience() -> None:
    net, r = make_room()
    invite = invite_for(r["ann"].identity, audience=person("bob").public_key)
    eve = join(net, r["ann"], person("eve"), invite)
    assert not eve.joined and refusal(eve) == "wrong-audience"
    assert join(net, r["ann"], person("bob"), invite).joined


def test_invite_for_another_room_or_expired_is_refused() -> None:
    net, r = make_room()
    other_room = invite_for(r["ann"].identity, room_id=type(ROOM)(bytes(16)))
    bob = RoomReplica.joining(person("bob"), other_room, CONFIG)
    # The joiner dials the host of *this* room with an invite for another one.
    bob.room_id = ROOM
    net.join(bob, r["ann"].me)
    assert not bob.joined and refusal(bob) == "wrong-room"
    net.now = 10_000.0
    cat = join(net, r["ann"], person("cat"), invite_for(r["ann"].identity, lifetime=60))
    assert not cat.joined and refusal(cat) == "expired"


def test_invite_role_above_the_issuers_is_refused() -> None:
    net, r = make_room("bob")
    # bob is a listener; an invite he signs for a speaker seat is worth nothing.
    invite = invite_for(r["bob"].identity, role=Role.SPEAKER)
    cat = join(net, r["ann"], person("cat"), invite)
    assert not cat.joined and refusal(cat) == "role-too-high"
    dan = join(net, r["ann"], person("dan"), invite_for(r["bob"].identity))
    assert dan.joined


def test_redemption_captured_on_one_link_fails_on_another() -> None:
    net, r = make_room()
    bob = RoomReplica.joining(person("bob"), invite_for(r["ann"].identity), CONFIG)
    net.add(bob)
    eve = person("eve")
    net.add(RoomReplica.joining(eve, invite_for(r["ann"].identity), CONFIG))
    captured = bob.join_message(net.handshake_hash(bob.me, r["ann"].me))
    # Eve replays bob's join, byte for byte, on her own link to the host.
    r["ann"].receive(
        captured,
        eve.public_key,
        net.now,
        handshake_hash=net.handshake_hash(eve.public_key, r["ann"].me),
    )
    [reply] = r["ann"].outbound()
    assert isinstance(reply, SendTo) and reply.peer == eve.public_key
    _, message = decode_message(reply.data)
    assert getattr(message, "problem", None) in {"wrong-audience", "tampered"}
    assert eve.public_key not in state_of(r["ann"]).members


def test_redemption_signed_by_the_wrong_key_is_refused_even_on_the_right_link() -> None:
    net, r = make_room()
    bob = RoomReplica.joining(person("bob"), invite_for(r["ann"].identity), CONFIG)
    net.add(bob)
    link = net.handshake_hash(bob.me, r["ann"].me)
    _, message = decode_message(bob.join_message(link))
    assert isinstance(message, JoinRequest)
    forged = JoinRequest(
        message.token,
        "bob",
        person("eve").sign(
            __import__("mitalk_p2p.core.identity", fromlist=["Domain"]).Domain.REDEEM, b"x"
        ),
    )
    r["ann"].receive(encode_message(forged), bob.me, net.now, handshake_hash=link)
    net.pump()
    assert not bob.joined and refusal(bob) == "tampered"


def test_refused_peer_learns_nothing_about_the_room() -> None:
    net, r = make_room("bob", "cat")
    eve = join(net, r["ann"], person("eve"), invite_for(person("mallory")))
    assert not eve.joined and eve.state is None
    received = [e for e in eve.events()]
    assert len(received) == 1 and isinstance(received[0], JoinRefusedEvent)
    assert "bob" not in received[0].message and "cat" not in received[0].message


def test_garbage_join_is_dropped_and_counted() -> None:
    net, r = make_room()
    r["ann"].receive(b"\x01\x07garbage", person("eve").public_key, net.now)
    assert r["ann"].statistics().rejected == {"malformed": 1}
    assert r["ann"].outbound() == []
