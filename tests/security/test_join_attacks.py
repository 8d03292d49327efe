"""Getting into a room without a right to: bad invites, stolen invites, spoofed records, Sybils.

Every attempt is refused and counted, and the refused peer learns nothing: the
tests record every byte the attacker receives (link messages and datagrams) and
assert that nothing of the roster, of a sender key or of a decryptable frame is
among them.  The invite cases run on whole peers in the simulator (deterministic,
virtual time); the last ones run real peers on 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack

import attrs
import pytest
import trio
import trio.testing

from mitalk_p2p.audio.io import PacedSource
from mitalk_p2p.audio.sources import SyntheticSpeech
from mitalk_p2p.core.admission import Admission, AdmissionConfig
from mitalk_p2p.core.control import (
    JoinRefused,
    JoinRequest,
    Kind,
    SignedRequest,
    SnapshotRequest,
    decode_message,
    encode_message,
)
from mitalk_p2p.core.events import JoinRefusedEvent
from mitalk_p2p.core.handshake import sign_redemption
from mitalk_p2p.core.identity import Identity, PublicKey
from mitalk_p2p.core.invite import SignedInvite, create_invite
from mitalk_p2p.core.media import MediaConfig, MediaSession
from mitalk_p2p.core.media_events import SendDatagram
from mitalk_p2p.core.media_frame import KeyGeneration, room_tag
from mitalk_p2p.core.media_messages import (
    KeyRequest,
    ProbeRole,
    RelayOffer,
    encode_media_message,
    encode_probe,
    is_media_message,
)
from mitalk_p2p.core.ops import RaiseHand, RevokeInvite
from mitalk_p2p.core.peer import Peer
from mitalk_p2p.core.replica import RoomReplica, SendTo
from mitalk_p2p.core.roles import Role
from mitalk_p2p.core.sender_keys import SeededKeySource
from mitalk_p2p.core.term import Term
from mitalk_p2p.discovery.candidates import Candidate, lan_candidates
from mitalk_p2p.discovery.joining import JoinSearch, join_searching
from mitalk_p2p.discovery.mdns import RoomSeen
from mitalk_p2p.discovery.room_record import RoomRecord
from mitalk_p2p.runtime.addresses import parse_address
from mitalk_p2p.runtime.contacts import Contact, encode_contacts
from mitalk_p2p.runtime.link_records import Channel
from mitalk_p2p.runtime.peer_runtime import (
    HostRoom,
    JoinError,
    JoinFailure,
    JoinRoom,
    PeerConfig,
    RunningPeer,
    open_peer,
)
from tests.core.media_fixtures import MediaRoom, media_room
from tests.core.room_fixtures import CONFIG, ROOM, invite_for, make_room, person, state_of

from .control_attacker import BOUND, Tap, knock, tap

# --- an attacker in the simulator --------------------------------------------------------------


@attrs.define(eq=False, repr=False)
class Eavesdropper(Peer):
    """A whole peer that records every link message and datagram it receives, and can send
    anything it likes."""

    heard: list[tuple[PublicKey, bytes]] = attrs.Factory(list)
    datagrams: list[bytes] = attrs.Factory(list)

    def receive_link(
        self,
        data: bytes,
        sender: PublicKey,
        now: float,
        *,
        handshake_hash: bytes = b"",
        unix_time: float | None = None,
    ) -> None:
        self.heard.append((sender, data))
        super().receive_link(data, sender, now, handshake_hash=handshake_hash, unix_time=unix_time)

    def receive_datagram(self, data: bytes, address: str, now: float) -> None:
        self.datagrams.append(data)
        super().receive_datagram(data, address, now)

    def say(self, to: PublicKey, data: bytes) -> None:
        self._outbound.append(SendTo(to, data))

    def send_datagram(self, address: str, data: bytes) -> None:
        self._outbound.append(SendDatagram(address, data))

    def kinds(self) -> list[str]:
        return [
            "media" if is_media_message(data) else Kind(decode_message(data)[0]).name
            for _, data in self.heard
        ]


def _eve(room: MediaRoom, invite: SignedInvite, identity: Identity | None = None) -> Eavesdropper:
    identity = identity or person("eve")
    media = MediaSession(identity, invite.invite.room_id, "sim:eve",
                         MediaConfig(report_frames=True),
                         key_source=SeededKeySource(b"eve".ljust(32, b".")))  # fmt: skip
    eve = Eavesdropper(RoomReplica.joining(identity, invite, CONFIG), media)
    room.net.add(eve)
    return eve


def _join_request(room: MediaRoom, eve: Eavesdropper, token: bytes) -> bytes:
    """A join with ``token``, its redemption correctly signed for eve's own link."""
    link = room.net.handshake_hash(eve.me, room.host.me)
    return encode_message(JoinRequest(token, "eve", sign_redemption(eve.identity, link, token)))


def _tampered(invite: SignedInvite) -> bytes:
    token = bytearray(invite.to_bytes())
    token[20] ^= 0x01  # a byte of the room name: still well-formed, no longer signed
    return bytes(token)


def _host_invite(room: MediaRoom, **changes: object) -> SignedInvite:
    changes.setdefault("now", room.net.now)
    return invite_for(room.host.identity, **changes)  # type: ignore[arg-type]


def _expired(room: MediaRoom) -> bytes:
    invite = _host_invite(room, now=0.0, lifetime=1)
    room.net.run_for(61.0)  # past its expiry and the clock skew allowed
    return invite.to_bytes()


def _revoked(room: MediaRoom) -> bytes:
    invite = _host_invite(room, max_uses=5)
    room.net.act(room.host.me, lambda p: p.act(RevokeInvite(invite.invite.nonce), room.net.now))
    room.net.run_for(0.1)
    return invite.to_bytes()


def _used_up(room: MediaRoom) -> bytes:
    invite = _host_invite(room)
    ann = Peer.joining(person("ann2"), invite, address="sim:ann2", room_config=CONFIG,
                       key_source=SeededKeySource(b"ann2".ljust(32, b".")))  # fmt: skip
    room.net.join(ann, room.host.me)
    room.net.run_for(0.5)
    assert ann.replica.joined
    return invite.to_bytes()


def _wrong_room(room: MediaRoom) -> bytes:
    other = type(ROOM)(bytes(16))
    return _host_invite(room, room_id=other).to_bytes()


def _wrong_audience(room: MediaRoom) -> bytes:
    return _host_invite(room, audience=person("bob").public_key).to_bytes()


def _wrong_issuer(room: MediaRoom) -> bytes:
    return invite_for(person("mallory"), now=room.net.now).to_bytes()


def _role_too_high(room: MediaRoom) -> bytes:
    return invite_for(room["p000"].identity, role=Role.SPEAKER, now=room.net.now).to_bytes()


BAD_INVITES: dict[str, tuple[str, Callable[[MediaRoom], bytes]]] = {
    "garbage": ("malformed", lambda _room: b"\x01not an invite at all"),
    "tampered": ("tampered", lambda room: _tampered(_host_invite(room))),
    "expired": ("expired", _expired),
    "revoked": ("revoked", _revoked),
    "used-up": ("used-up", _used_up),
    "wrong-room": ("wrong-room", _wrong_room),
    "wrong-audience": ("wrong-audience", _wrong_audience),
    "wrong-issuer": ("wrong-issuer", _wrong_issuer),
    "role-too-high": ("role-too-high", _role_too_high),
}


def _try_everything_else(room: MediaRoom, eve: Eavesdropper) -> None:
    """After (or instead of) a join: ask for a snapshot, a key and a place in the tree, and
    act as a member."""
    host = room.host.me
    eve.say(host, encode_message(SnapshotRequest(ROOM, Term.first(), 0)))
    eve.say(host, encode_message(SignedRequest.create(eve.identity, ROOM, Term.first(), 1,
                                                      RaiseHand())))  # fmt: skip
    eve.say(host, encode_media_message(KeyRequest(KeyGeneration(0, 0))))
    eve.say(host, encode_media_message(RelayOffer("sim:eve", 6)))
    room.net.flush(eve.me)


@pytest.mark.parametrize("case", [*BAD_INVITES, "no-invite"])
def test_a_refused_joiner_gets_one_refusal_and_nothing_of_the_room(case: str) -> None:
    room = media_room(2)
    token = BAD_INVITES[case][1](room) if case in BAD_INVITES else None
    host_before = room.host.statistics()
    members_before = dict(state_of(room.host.replica).members)
    eve = _eve(room, invite_for(person("nobody")))
    if token is not None:
        eve.say(room.host.me, _join_request(room, eve, token))
        room.net.flush(eve.me)
    _try_everything_else(room, eve)
    room.speak("host", 1.0)
    room.net.run_for(1.0)

    expected = [] if token is None else ["JOIN_REFUSED"]
    assert eve.kinds() == expected, "the refused peer heard more than its refusal"
    if token is not None:
        _, refusal = decode_message(eve.heard[0][1])
        assert isinstance(refusal, JoinRefused) and refusal.problem == BAD_INVITES[case][0]
        refusals = [e for e in room.net.events_of(eve.me) if isinstance(e, JoinRefusedEvent)]
        assert [e.problem for e in refusals] == [BAD_INVITES[case][0]]
    assert eve.datagrams == []
    assert eve.state is None and eve.media.held_keys(room.host.me) is None
    # The room is as it was, every refusal is counted, and the listeners still hear.
    assert state_of(room.host.replica).members.keys() == members_before.keys()
    stats = room.host.statistics()
    assert stats.room.joins_refused - host_before.room.joins_refused == (token is not None)
    assert stats.room.rejected["not_member"] - host_before.room.rejected.get("not_member", 0) == 2
    media_drops = stats.media.dropped["not-member"] - host_before.media.dropped.get("not-member", 0)
    assert media_drops == 2
    assert all(len(room.received(name, "host")) >= 40 for name in ("p000", "p001"))


def test_a_refused_peer_that_spoofs_a_members_probe_gets_no_key_and_opens_no_frame() -> None:
    room = media_room(2)
    eve = _eve(room, invite_for(person("nobody")))
    eve.say(room.host.me, _join_request(room, eve, _wrong_issuer(room)))
    room.net.flush(eve.me)
    # Probes carry no signature: eve claims to be p000, a child of the host, from her own
    # address.  Whatever that draws her way (a probe answer, frames) holds no key.
    spoof = encode_probe(room_tag(ROOM), room["p000"].me, 0, ProbeRole.CHILD, 1, 0, 0,
                         rooted=False, path=b"")  # fmt: skip
    eve.send_datagram(room.host.media.address, spoof)
    room.net.flush(eve.me)
    room.speak("host", 0.5)
    room.net.run_for(0.5)
    assert eve.kinds() == ["JOIN_REFUSED"]
    assert eve.media.held_keys(room.host.me) is None
    assert eve.media.statistics().frames_decrypted == 0
    assert [type(e) for e in room.net.events_of(eve.me)] == [JoinRefusedEvent]
    assert eve.state is None


# --- a stolen invite, refused by each binding on its own ----------------------------------------


def _refusal(host: RoomReplica, who: PublicKey) -> str:
    replies = [item for item in host.outbound() if isinstance(item, SendTo) and item.peer == who]
    assert len(replies) == 1
    _, message = decode_message(replies[0].data)
    assert isinstance(message, JoinRefused)
    return message.problem


def test_a_stolen_audience_bound_invite_is_refused_by_the_audience_binding() -> None:
    net, r = make_room()
    host = r["ann"]
    bob, eve = person("bob"), person("eve")
    invite = invite_for(host.identity, audience=bob.public_key)
    thief = net.add(RoomReplica.joining(eve, invite, CONFIG))
    # Eve redeems the token properly, on her own link and with her own key: only the
    # audience is wrong, so only the audience binding can stop her.
    link = net.handshake_hash(eve.public_key, host.me)
    host.receive(thief.join_message(link), eve.public_key, net.now, handshake_hash=link)
    assert _refusal(host, eve.public_key) == "wrong-audience"
    assert list(state_of(host).members) == [host.me]
    assert host.statistics().joins_refused == 1
    # The invite was not spent: bob still gets in with it.
    owner = net.add(RoomReplica.joining(bob, invite, CONFIG))
    net.join(owner, host.me)
    assert owner.joined


def test_a_captured_redemption_replayed_on_another_link_is_refused_by_the_handshake_hash() -> None:
    net, r = make_room()
    host = r["ann"]
    bob, eve, other = person("bob"), person("eve"), person("bob's other device")
    invite = invite_for(host.identity)  # no audience: the audience binding can't help here
    owner = net.add(RoomReplica.joining(bob, invite, CONFIG))
    net.add(RoomReplica.joining(eve, invite, CONFIG))
    net.add(RoomReplica.joining(other, invite, CONFIG))
    captured = owner.join_message(net.handshake_hash(bob.public_key, host.me))
    # Eve replays bob's join byte for byte on her own link: the redemption signs bob's
    # link, not hers.
    eve_link = net.handshake_hash(eve.public_key, host.me)
    host.receive(captured, eve.public_key, net.now, handshake_hash=eve_link)
    assert _refusal(host, eve.public_key) == "tampered"
    # Even under bob's key, the redemption is worth nothing on any other link.
    second_link = net.handshake_hash(other.public_key, host.me)
    host.receive(captured, bob.public_key, net.now, handshake_hash=second_link)
    assert _refusal(host, bob.public_key) == "tampered"
    assert host.statistics().joins_refused == 2
    assert list(state_of(host).members) == [host.me]
    net.join(owner, host.me)
    assert owner.joined


async def test_a_stolen_invite_used_by_a_real_peer_is_refused_with_one_clear_line() -> None:
    async with open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Private"))) as host:
        bob = Identity.generate("Bob")
        invite = _invite(host, audience=bob.public_key)
        with pytest.raises(JoinError) as refused:
            async with open_peer(PeerConfig(Identity.generate("Eve"), JoinRoom(invite))):
                pass
        assert refused.value.failure is JoinFailure.REFUSED
        assert f"meant only for peer {bob.fingerprint}" in str(refused.value)
        async with open_peer(PeerConfig(bob, JoinRoom(invite))) as owner:
            assert owner.state is not None and owner.me in owner.state.members
        assert host.statistics().peer.room.joins_refused == 1


# --- on real sockets: what a refused peer receives ----------------------------------------------


def _invite(host: RunningPeer, **changes: object) -> SignedInvite:
    state = host.state
    assert state is not None
    fields: dict[str, object] = {
        "room_id": state.room_id, "room_name": state.name, "role": Role.LISTENER,
        "now": time.time(), "lifetime": 600, "addresses": (host.control_address,),
    }  # fmt: skip
    fields.update(changes)
    return create_invite(host.identity, **fields)  # type: ignore[arg-type]


async def _until(peer: RunningPeer, condition: Callable[[], bool]) -> None:
    with trio.fail_after(BOUND):
        await peer.wait_for(condition)


def _members(peer: RunningPeer) -> Callable[[PublicKey], bool]:
    return lambda key: peer.state is not None and key in peer.state.members


def _join(link: Tap, identity: Identity, token: bytes) -> None:
    redemption = sign_redemption(identity, link.link.handshake_hash, token)
    link.send(encode_message(JoinRequest(token, identity.display_name, redemption)))


async def test_a_refused_peer_on_real_links_gets_a_refusal_and_no_key_frame_or_directory() -> None:
    speech = PacedSource(SyntheticSpeech(1), 0.020)
    async with (
        open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Real"), audio_input=speech))
        as host,
        open_peer(PeerConfig(Identity.generate("Listener"), JoinRoom(_invite(host)),
                             record_frames=True)) as listener,
    ):  # fmt: skip
        # The directory is for members only (the roster the runtime is to pass its plane).
        host.plane.is_member = _members(host)
        await _until(listener, lambda: len(listener.frame_log.received) >= 10)
        eve = Identity.generate("Eve")
        state = host.state
        assert state is not None
        expired = _invite(host, now=time.time() - 7200, lifetime=60).to_bytes()
        async with tap(host.control_address, eve, state.room_id, host.me) as link:
            link.send(encode_media_message(KeyRequest(KeyGeneration(0, 0))))
            link.send(encode_message(SnapshotRequest(state.room_id, state.term, 0)))
            _join(link, eve, expired)
            await link.wait_for(lambda: "JOIN_REFUSED" in link.kinds())
            # The host talks on; nothing of it reaches eve.
            heard = len(listener.frame_log.received)
            await _until(listener, lambda: len(listener.frame_log.received) >= heard + 25)
            assert link.arrivals == ["CONTACTS", "JOIN_REFUSED"]
            assert [c.key for c in link.contacts] == [host.me]  # whom she dialed, nobody else
        stats = host.statistics()
        assert stats.peer.room.joins_refused == 1
        assert stats.peer.room.rejected == {"not_member": 1}
        assert stats.peer.media.dropped.get("not-member") == 1
        assert not host.left.is_set() and listener.state is not None


async def test_a_running_host_sends_its_directory_only_to_members() -> None:
    async with (
        open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Wired"))) as host,
        open_peer(PeerConfig(Identity.generate("Listener"), JoinRoom(_invite(host)))),
    ):
        state = host.state
        assert state is not None
        eve = Identity.generate("Eve")
        async with tap(host.control_address, eve, state.room_id, host.me) as link:
            _join(link, eve, b"\x01garbage")
            await link.wait_for(lambda: "JOIN_REFUSED" in link.kinds())
            # Whatever the host sent on the new link came before its refusal.
            assert [c.key for c in link.contacts] == [host.me]


async def test_a_directory_withheld_from_a_stranger_follows_its_admission() -> None:
    async with open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Gated"))) as host:
        host.plane.is_member = _members(host)
        first = PeerConfig(Identity.generate("First"), JoinRoom(_invite(host)))
        async with open_peer(first) as member:
            state = host.state
            assert state is not None
            eve, ghost = Identity.generate("Eve"), Identity.generate("Ghost").public_key
            async with tap(host.control_address, eve, state.room_id, host.me) as link:
                # A stranger's word about other keys is not kept, nor passed on.
                lies = [Contact(member.me, "127.0.0.1:9"), Contact(ghost, "127.0.0.1:9")]
                assert link.link.send(Channel.CONTACTS, encode_contacts(lies))
                _join(link, eve, b"\x01garbage")
                await link.wait_for(lambda: "JOIN_REFUSED" in link.kinds())
                assert link.arrivals == ["CONTACTS", "JOIN_REFUSED"]
            assert host.plane.statistics().contacts_ignored == 2
            assert host.plane.contact_of(member.me) == member.control_address
            assert host.plane.contact_of(ghost) is None
            assert host.plane.contact_of(eve.public_key) is None
            # An admitted joiner gets the directory right after its snapshot (so that a
            # joiner that keeps contacts only from members accepts it).
            bob = Identity.generate("Bob")
            async with tap(host.control_address, bob, state.room_id, host.me) as link:
                assert link.link.send(Channel.CONTACTS,
                                      encode_contacts([Contact(bob.public_key, "127.0.0.1:7")]))
                _join(link, bob, _invite(host).to_bytes())
                await link.wait_for(lambda: member.me in {c.key for c in link.contacts})
                snapshot = link.arrivals.index("SNAPSHOT")
                assert link.arrivals[:snapshot] == ["CONTACTS"]
                assert link.arrivals[snapshot + 1] == "CONTACTS"
                assert {c.key: c.address for c in link.contacts}[member.me] == (
                    member.control_address
                )
                # The address it announced for itself was kept once it was admitted.
                assert host.plane.contact_of(bob.public_key) == "127.0.0.1:7"


# --- a spoofed mDNS record ---------------------------------------------------------------------


async def test_a_spoofed_lan_record_pointing_at_an_attacker_fails_on_the_key_check() -> None:
    async with open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Jazz"))) as host:
        state = host.state
        assert state is not None
        # The attacker runs a room with the same id and name under its own key.
        fake_room = HostRoom("Jazz", room_id=state.room_id)
        async with open_peer(PeerConfig(Identity.generate("Attacker"), fake_room)) as attacker:
            _, port = parse_address(attacker.control_address)
            # The spoofed record claims the genuine host's key but names the attacker's
            # port; it goes through the record's wire form, as a browser decodes it.
            spoofed = RoomRecord(room_id=state.room_id, name="Jazz", host_key=host.me,
                                 listeners=3, control_port=port)  # fmt: skip
            wire = {key.encode(): value for key, value in spoofed.to_properties().items()}
            seen = RoomSeen(RoomRecord.from_properties(wire), "Jazz", ("127.0.0.1",), 9)

            async def from_the_lan() -> list[Candidate]:
                return lan_candidates([seen], state.room_id)

            invite = _invite(host, addresses=())
            config = PeerConfig(Identity.generate("Guest"), JoinRoom(invite))

            async def never(_peer: RunningPeer) -> None:
                raise AssertionError("joined through the spoofed record")

            search = JoinSearch(lookup=from_the_lan, search=1.0)
            with trio.fail_after(BOUND), pytest.raises(JoinError) as refused:
                await join_searching(config, search, never)
            assert refused.value.failure is JoinFailure.UNREACHABLE
            assert "is not the room's host" in str(refused.value)
            assert f"it proved key {attacker.me.fingerprint}" in str(refused.value)
            # The guest stopped at handshake message 2: the attacker never learned who it
            # was, never got a link, and never saw the invite.
            await trio.testing.wait_all_tasks_blocked()
            stats = attacker.statistics()
            assert stats.control.handshakes_failed == 1 and stats.control.links_accepted == 0
            assert stats.peer.room.joins_refused == 0 and stats.peer.room.joins_admitted == 0
            assert attacker.state is not None and list(attacker.state.members) == [attacker.me]


# --- Sybils: many keys from one address ---------------------------------------------------------


async def test_sybils_from_one_address_are_capped_and_each_still_needs_an_invite() -> None:
    async with open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Sybil"))) as host:
        host.plane.admission = Admission(AdmissionConfig(max_links_per_source=4,
                                                         limit_loopback=True))  # fmt: skip
        state = host.state
        assert state is not None
        invite = _invite(host).to_bytes()  # one invite, one use: what a single guest holds
        sybils = [Identity.generate(f"Sybil {n}") for n in range(4)]
        async with AsyncExitStack() as stack:
            links = [await stack.enter_async_context(
                tap(host.control_address, sybil, state.room_id, host.me)) for sybil in sybils]
            # The address holds four links: every further key is refused before a handshake.
            assert [await knock(host.control_address) for _ in range(6)] == [429] * 6
            assert host.statistics().control.links_refused_source == 6
            # The four that got a link each still need an invite: one use admits one.
            for sybil, link in zip(sybils, links, strict=True):
                _join(link, sybil, invite)
            for link in links:
                await link.wait_for(lambda link=link: bool(link.core))  # type: ignore[misc]
            answers = sorted(link.kinds()[0] for link in links)
            assert answers == ["JOIN_REFUSED"] * 3 + ["SNAPSHOT"]
            assert host.statistics().peer.room.joins_refused == 3
            assert len(state.members) == 2
        # Once they hang up, the address may connect again.
        await trio.testing.wait_all_tasks_blocked()
        assert host.plane.admission.statistics().held == 0
        assert await knock(host.control_address) is None
