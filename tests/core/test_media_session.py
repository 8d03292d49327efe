"""The media plane end to end, in simulated time: delivery, forgery, replay, keys, repair."""

from __future__ import annotations

import contextlib

import pytest

from mitalk_p2p.core.errors import WireError
from mitalk_p2p.core.jitter import Conceal, PlayFrame, RecoverWithFec, Stretch
from mitalk_p2p.core.media import MediaConfig
from mitalk_p2p.core.media_events import AudioOut, ParentChanged, SenderKeyChanged
from mitalk_p2p.core.media_frame import (
    FrameHeader,
    KeyGeneration,
    open_frame,
    parse_header,
    room_tag,
    seal_frame,
)
from mitalk_p2p.core.ops import Kick
from mitalk_p2p.core.sender_keys import Keyring, SenderKey
from mitalk_p2p.sim.peer_net import LinkModel

from .media_fixtures import PAYLOAD, MediaRoom, host_tree, media_room, subtree
from .room_fixtures import ROOM


def accepted(room: MediaRoom, name: str) -> int:
    return room[name].statistics().media.frames_accepted


def dropped(room: MediaRoom, name: str, reason: str) -> int:
    return room[name].statistics().media.dropped.get(reason, 0)


def parent_address(room: MediaRoom, name: str) -> str:
    parent = room[name].media.parent
    assert parent is not None
    return room.net.peers[parent].media.address


def opens_with(keys: Keyring, datagram: bytes, ratchets: int = 0) -> bool:
    """Whether any key in ``keys``, or any of its next ``ratchets`` steps, opens the frame."""
    header = parse_header(datagram)
    for held in keys.held():
        key: SenderKey = held
        for _ in range(ratchets + 1):
            with contextlib.suppress(WireError):
                open_frame(header, datagram, room_id=ROOM, sender_key=key.secret)
                return True
            key = key.ratcheted()
    return False


# --- delivery ---------------------------------------------------------------------


def test_every_listener_hears_every_frame_once() -> None:
    room = media_room(30, fanout=3)
    tree = room.host.coordinator.tree if room.host.coordinator else None
    assert tree is not None and len(tree.members) == 31 and tree.max_depth >= 3
    room.speak("host", 2.0)
    room.net.run_for(1.0)
    for listener in room.peers:
        seqs = [e.seq for e in room.received(listener, "host")]
        assert seqs == sorted(set(seqs)) and len(seqs) == 100, listener
        plays = [
            e.playout.seq
            for e in room.net.events_of(room[listener].me)
            if isinstance(e, AudioOut) and isinstance(e.playout, PlayFrame)
        ]
        assert plays == list(range(100))
        assert room[listener].statistics().media.dropped_total == 0


def test_a_speaker_deep_in_the_tree_reaches_everyone_including_the_host() -> None:
    room = media_room(20, fanout=2)
    deepest = max(room.peers, key=lambda n: host_tree(room).depth(room[n].me))
    room.to_stage(deepest)
    room.speak(deepest, 1.0)
    room.net.run_for(0.5)
    for name in ["host", *room.peers]:
        if name != deepest:
            assert len(room.received(name, deepest)) == 50, name


def test_stats_carry_webrtc_names_link_rtt_loss_and_parent() -> None:
    room = media_room(4, link=LinkModel(latency=0.015))
    room.speak("host", 0.5)
    room.net.run_for(0.5)
    stats = room["p000"].statistics().media
    assert stats.parent == room.host.me
    [parent_link] = [link for link in stats.links if link.role == "parent"]
    assert parent_link.rtt_ms == pytest.approx(30.0, abs=0.5)
    assert parent_link.loss == 0.0
    speaker_stats = stats.speakers[room.host.me]
    assert speaker_stats.packetsReceived == 25
    assert speaker_stats.jitterBufferEmittedCount == 25 * 960
    for name in ("packetsLost", "packetsDiscarded", "jitterBufferDelay", "concealedSamples"):
        assert hasattr(speaker_stats, name)


# --- forgery and tampering ------------------------------------------------------------


def test_flipped_bits_in_any_byte_are_dropped_and_never_played() -> None:
    room = media_room(3)
    [frame] = room.capture("host")
    target = room["p000"]
    source = parent_address(room, "p000")
    for position in range(len(frame)):
        bad = bytearray(frame)
        bad[position] ^= 0x40
        room.net.inject_datagram(bytes(bad), source, target.me, 0.001)
    room.net.run_for(0.1)
    stats = target.statistics().media
    assert stats.frames_accepted == 0
    assert stats.dropped_total == len(frame)
    room.net.inject_datagram(frame, source, target.me, 0.001)
    room.net.run_for(0.1)
    assert accepted(room, "p000") == 1


def test_a_listener_cannot_speak_even_with_the_sender_key() -> None:
    room = media_room(6, fanout=2)
    room.speak("host", 0.2)
    room.net.run_for(0.2)
    forger = room["p003"]
    index = room.host.state.members[forger.me].joined_seq  # type: ignore[union-attr]
    host_index = room.host.state.members[room.host.me].joined_seq  # type: ignore[union-attr]
    own_header = FrameHeader(room_tag(ROOM), index, KeyGeneration(0, 0), 1, 0)
    keys = forger.media.held_keys(room.host.me)
    assert keys is not None
    stolen = keys.held()[-1]
    as_host = FrameHeader(room_tag(ROOM), host_index, stolen.generation, 500, 0)
    own = seal_frame(own_header, b"me", room_id=ROOM, sender_key=b"z" * 32, speaker=forger.identity)
    posing = seal_frame(
        as_host, b"fake", room_id=ROOM, sender_key=stolen.secret, speaker=forger.identity
    )
    for name in room.peers:
        if name != "p003":
            room.net.inject_datagram(own, forger.media.address, room[name].me, 0.001)
            room.net.inject_datagram(posing, forger.media.address, room[name].me, 0.001)
    before = {name: accepted(room, name) for name in room.peers}
    room.net.run_for(0.2)
    for name in room.peers:
        if name != "p003":
            assert accepted(room, name) == before[name]
            assert dropped(room, name, "not-on-floor") == 1
            assert dropped(room, name, "bad-signature") == 1


def test_a_relay_that_forges_frames_is_left_and_demoted() -> None:
    room = media_room(12, fanout=3)
    tree = host_tree(room)
    relay_key = next(k for k in tree.children(room.host.me) if tree.children(k))
    relay = room.net.peers[relay_key]
    victims = [room.net.peers[k] for k in tree.children(relay_key)]
    room.speak("host", 0.1)
    keys = relay.media.held_keys(room.host.me)
    assert keys is not None
    secret = keys.held()[-1]
    host_index = room.host.state.members[room.host.me].joined_seq  # type: ignore[union-attr]
    for seq in range(1000, 1010):
        header = FrameHeader(room_tag(ROOM), host_index, secret.generation, seq, 0)
        forged = seal_frame(
            header, b"lies", room_id=ROOM, sender_key=secret.secret, speaker=relay.identity
        )
        for victim in victims:
            room.net.inject_datagram(forged, relay.media.address, victim.me, 0.001 * seq / 1000)
    room.net.run_for(0.5)
    for victim in victims:
        stats = victim.statistics().media
        assert stats.dropped["bad-signature"] == 10
        assert stats.parent != relay_key
        changes = [e for e in room.net.events_of(victim.me) if isinstance(e, ParentChanged)]
        assert any(e.reason == "corrupt" for e in changes)
        assert victim.statistics().media.parent_switches == 1
    new_tree = host_tree(room)
    assert new_tree.children(relay_key) == ()


# --- replay and counters -------------------------------------------------------------------


def test_duplicates_over_two_paths_play_once() -> None:
    room = media_room(3)
    frames = room.capture("host", 5)
    target = room["p001"]
    for frame in frames:
        room.net.inject_datagram(frame, parent_address(room, "p001"), target.me, 0.001)
        room.net.inject_datagram(frame, room["p000"].media.address, target.me, 0.003)
    room.net.run_for(0.5)
    assert accepted(room, "p001") == 5
    assert dropped(room, "p001", "duplicate") == 5
    plays = [
        e.playout.seq
        for e in room.net.events_of(target.me)
        if isinstance(e, AudioOut) and isinstance(e.playout, PlayFrame)
    ]
    assert plays == [0, 1, 2, 3, 4]


def test_replays_of_old_and_new_generations_are_not_played() -> None:
    room = media_room(4)
    old = room.capture("host", 3)
    target = room["p000"]
    source = parent_address(room, "p000")
    for frame in old:
        room.net.inject_datagram(frame, source, target.me, 0.001)
    room.net.run_for(0.1)
    # A kick rotates the host's key: a new generation.
    room.net.act(room.host.me, lambda p: p.act(Kick(room["p003"].me), room.net.now))
    room.net.run_for(1.5)
    generation = room.host.media.sending_generation
    assert generation is not None and generation.epoch == 1
    new = room.capture("host", 3)
    assert parse_header(new[0]).generation.epoch == 1
    for frame in new + old + new:
        room.net.inject_datagram(frame, source, target.me, 0.001)
    room.net.run_for(0.5)
    assert accepted(room, "p000") == 6
    stats = target.statistics().media
    assert stats.dropped.get("duplicate", 0) == 6


def test_absurd_counter_and_generation_jumps_are_refused_before_crypto() -> None:
    room = media_room(2)
    [frame] = room.capture("host")
    room.net.inject_datagram(frame, parent_address(room, "p000"), room["p000"].me, 0.001)
    room.net.run_for(0.05)
    keys = room.host.media._speaker_keys
    assert keys is not None
    host_index = room.host.state.members[room.host.me].joined_seq  # type: ignore[union-attr]
    jumps = [
        FrameHeader(room_tag(ROOM), host_index, keys.current.generation, 10**9, 0),
        FrameHeader(room_tag(ROOM), host_index, KeyGeneration(60_000, 0), 2, 0),
        FrameHeader(room_tag(ROOM), host_index, KeyGeneration(0, 60_000), 3, 0),
    ]
    for header in jumps:
        datagram = seal_frame(
            header,
            PAYLOAD,
            room_id=ROOM,
            sender_key=keys.current.secret,
            speaker=room.host.identity,
        )
        room.net.inject_datagram(datagram, parent_address(room, "p000"), room["p000"].me, 0.001)
    room.net.run_for(0.05)
    assert dropped(room, "p000", "counter-jump") == 1
    assert dropped(room, "p000", "generation-jump") == 2
    assert accepted(room, "p000") == 1


# --- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["kicked", "left"])
def test_a_removed_listener_decrypts_nothing_after_the_rotation(how: str) -> None:
    room = media_room(6, fanout=2)
    room.to_stage("p001")
    room.speak("p001", 0.5)
    kicked = room["p004"]
    stolen = kicked.media.held_keys(room["p001"].me)
    assert stolen is not None and stolen.held()
    heard_before = room.capture("p001", 2)
    assert all(opens_with(stolen, frame) for frame in heard_before)

    if how == "kicked":
        room.net.act(room.host.me, lambda p: p.act(Kick(kicked.me), room.net.now))
    else:
        room.net.act(kicked.me, lambda p: p.depart(room.net.now))
    room.speak("p001", 2.0)
    room.net.run_for(0.2)
    rotations = [
        e
        for e in room.net.events_of(room["p001"].me)
        if isinstance(e, SenderKeyChanged) and e.reason == "rotation"
    ]
    assert len(rotations) == 1
    after = room.capture("p001", 20)
    for frame in after:
        assert parse_header(frame).generation.epoch == rotations[0].generation.epoch
        assert not opens_with(stolen, frame, ratchets=100)
    # The members who stayed heard every frame across the switch, with no gap.
    for name in room.peers:
        if name in ("p001", "p004"):
            continue
        first = parse_header(heard_before[-1]).seq + 1
        seqs = [e.seq for e in room.received(name, "p001") if e.seq >= first]
        assert seqs == list(range(first, first + 100)), name
        assert room[name].statistics().media.dropped.get("decrypt-failed", 0) == 0


def test_a_newcomer_cannot_decrypt_audio_from_before_it_joined() -> None:
    room = media_room(3)
    earlier = room.capture("host", 3)
    newcomer = room.add("late")
    room.net.run_for(1.0)
    room.speak("host", 0.4)
    room.net.run_for(0.3)
    assert len(room.received("late", "host")) == 20
    keys = newcomer.media.held_keys(room.host.me)
    assert keys is not None and keys.held()
    for frame in earlier:
        assert not opens_with(keys, frame, ratchets=10)


# --- repair -------------------------------------------------------------------------------


def test_descendants_of_a_vanished_relay_hear_audio_again_within_a_second() -> None:
    room = media_room(40, fanout=3)
    tree = host_tree(room)
    relay = next(k for k in tree.children(room.host.me) if len(subtree(room, k)) >= 3)
    orphans = subtree(room, relay)
    room.speak("host", 1.0)
    crash_at = room.net.now
    room.net.crash(relay)
    room.speak("host", 2.0)
    for key in orphans:
        name = room.net.name(key)
        resumed = [e.arrived for e in room.received(name, "host") if e.arrived > crash_at + 0.1]
        gap = min(resumed) - crash_at
        assert gap <= 1.0, (name, gap)
    new_tree = host_tree(room)
    assert relay not in new_tree.members or not new_tree.children(relay)


def test_jitter_and_loss_keep_concealment_low_and_never_play_twice() -> None:
    link = LinkModel(latency=0.040, jitter=0.030, loss=0.10)
    room = media_room(1, link=link, config=MediaConfig(report_frames=True))
    room.net.link_overrides.clear()
    room.speak("host", 20.0)
    room.net.run_for(1.0)
    listener = room["p000"].me
    outs = [e.playout for e in room.net.events_of(listener) if isinstance(e, AudioOut)]
    played = [p.seq for p in outs if isinstance(p, (PlayFrame, RecoverWithFec))]
    assert len(played) == len(set(played))
    stats = room["p000"].statistics().media.speakers[room.host.me]
    ratio = stats.concealedSamples / stats.totalSamplesReceived
    assert ratio < 0.12
    assert any(isinstance(p, RecoverWithFec) for p in outs)
    assert any(isinstance(p, (Conceal, Stretch)) for p in outs) or ratio == 0


def test_the_host_refuses_a_switch_that_would_make_a_loop_and_resends_the_position() -> None:
    from mitalk_p2p.core.media_messages import ParentSwitched, encode_media_message

    room = media_room(12, fanout=2)
    tree = host_tree(room)
    relay = next(k for k in tree.children(room.host.me) if tree.children(k))
    child = tree.children(relay)[0]
    report = ParentSwitched(1, room.host.me, child)  # the relay "moves under its own child"
    room.host.receive_link(encode_media_message(report), relay, room.net.now)
    room.net.run_for(0.5)
    assert room.host.coordinator.refused_switches == 1  # type: ignore[union-attr]
    assert host_tree(room).parent(relay) == room.host.me
