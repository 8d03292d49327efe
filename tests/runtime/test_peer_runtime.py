"""Real peers on 127.0.0.1: websockets for control, UDP for media, libopus for voice.

These tests run on the real clock, because the sockets are real, but they never
sleep: each waits for the condition it needs (``RunningPeer.wait_for``) under a
generous ``fail_after`` that only a broken peer would reach.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio_websocket

from mitalk_p2p.audio.io import NullOutput, PacedSource
from mitalk_p2p.audio.playout import Playback
from mitalk_p2p.audio.sources import SyntheticSpeech
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.invite import create_invite
from mitalk_p2p.core.ops import AcceptStage, InviteToStage, Kick, RaiseHand
from mitalk_p2p.core.rejection import Rejected
from mitalk_p2p.core.roles import Role
from mitalk_p2p.core.sender_keys import SeededKeySource, SimulatedKeysRefused
from mitalk_p2p.runtime.addresses import parse_address
from mitalk_p2p.runtime.peer_runtime import (
    HostRoom,
    JoinError,
    JoinRoom,
    PeerConfig,
    RunningPeer,
    open_peer,
)

BOUND = 10.0
"""Seconds any single condition may take before the test fails: far above normal."""


def _speech(seed: int) -> PacedSource:
    return PacedSource(SyntheticSpeech(seed), 0.020)


@asynccontextmanager
async def _room(
    listeners: int, *, host_speaks: bool = True
) -> AsyncIterator[tuple[RunningPeer, list[RunningPeer], list[Playback]]]:
    async with AsyncExitStack() as stack:
        host = await stack.enter_async_context(
            open_peer(
                PeerConfig(
                    Identity.generate("Host"),
                    HostRoom("Runtime room"),
                    audio_input=_speech(1) if host_speaks else None,
                )
            )
        )
        peers, playbacks = [], []
        for index in range(listeners):
            playback = Playback(NullOutput())
            config = PeerConfig(
                Identity.generate(f"Listener {index}"),
                JoinRoom(host.invite()),
                audio_input=_speech(10 + index),
                playback=playback,
                record_frames=True,
            )
            peers.append(await stack.enter_async_context(open_peer(config)))
            playbacks.append(playback)
        yield host, peers, playbacks


async def _until(peer: RunningPeer, condition: Callable[[], bool]) -> None:
    with trio.fail_after(BOUND):
        await peer.wait_for(condition)


def _played(playback: Playback) -> int:
    return playback.statistics().overall.frames_played


def _hand_raised(peer: RunningPeer, who: RunningPeer) -> bool:
    return peer.state is not None and peer.state.members[who.me].hand_seq > 0


def _invited(peer: RunningPeer) -> bool:
    return peer.state is not None and peer.state.members[peer.me].stage_invited


def _frames_from(peer: RunningPeer, speaker: RunningPeer) -> int:
    return sum(1 for key, _, _ in peer.frame_log.received if key == speaker.me)


async def test_listeners_join_and_hear_the_host() -> None:
    async with _room(3) as (host, peers, playbacks):
        state = host.state
        assert state is not None and len(state.members) == 4
        for peer in peers:
            await _until(peer, lambda peer=peer: _frames_from(peer, host) >= 50)  # type: ignore[misc]
        for peer, playback in zip(peers, playbacks, strict=True):
            assert peer.role is Role.LISTENER
            await _until(peer, lambda playback=playback: _played(playback) >= 25)  # type: ignore[misc]
            assert playback.statistics().overall.decode_errors == 0
            assert peer.statistics().inputs_dropped == 0
        # A listener's microphone is read but never encoded: it has no floor.
        assert peers[0].statistics().frames_encoded == 0


async def test_hand_stage_accept_then_the_new_speaker_is_heard() -> None:
    async with _room(3, host_speaks=False) as (host, peers, _):
        speaker = peers[0]
        speaker.act(RaiseHand())
        await _until(host, lambda: _hand_raised(host, speaker))
        host.act(InviteToStage(speaker.me))
        await _until(speaker, lambda: _invited(speaker))
        speaker.act(AcceptStage())
        await _until(speaker, lambda: speaker.role is Role.SPEAKER)
        for other in peers[1:]:
            await _until(other, lambda other=other: _frames_from(other, speaker) >= 25)  # type: ignore[misc]


async def test_a_listener_may_not_moderate() -> None:
    async with _room(2, host_speaks=False) as (_, peers, _):
        with pytest.raises(Rejected):
            peers[0].act(Kick(peers[1].me))


async def test_a_signed_leave_removes_the_member_at_once() -> None:
    async with open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Leaving"))) as host:
        config = PeerConfig(Identity.generate("Guest"), JoinRoom(host.invite()))
        async with open_peer(config) as guest:
            assert host.state is not None and guest.me in host.state.members
            started = trio.current_time()
        await _until(host, lambda: guest.me not in host.state.members)  # type: ignore[union-attr]
        # Far sooner than any silence timeout could have noticed.
        assert trio.current_time() - started < 2.0


async def test_kicked_peer_stops_hearing_audio() -> None:
    async with _room(2) as (host, peers, _):
        victim, other = peers
        await _until(victim, lambda: _frames_from(victim, host) >= 10)
        host.act(Kick(victim.me))
        await _until(victim, lambda: victim.left.is_set())
        assert victim.left_reason == "kicked"
        heard = _frames_from(victim, host)
        before = _frames_from(other, host)
        await _until(other, lambda: _frames_from(other, host) >= before + 25)
        assert _frames_from(victim, host) == heard


async def test_join_errors_are_one_clear_line() -> None:
    async with open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Strict"))) as host:
        state = host.state
        assert state is not None
        expired = create_invite(
            host.identity,
            room_id=state.room_id,
            room_name=state.name,
            role=Role.LISTENER,
            now=time.time() - 7200,
            lifetime=60,
            addresses=(host.control_address,),
        )
        with pytest.raises(JoinError, match="refused") as refused:
            async with open_peer(PeerConfig(Identity.generate("Late"), JoinRoom(expired))):
                pass
        assert "expired" in str(refused.value) and "\n" not in str(refused.value)

    # Nothing listens at the invite's address any more.
    with pytest.raises(JoinError, match="could not reach the room") as unreachable:
        async with open_peer(PeerConfig(Identity.generate("Lost"), JoinRoom(expired))):
            pass
    assert "\n" not in str(unreachable.value)


async def test_garbage_on_the_control_port_is_refused_and_the_host_keeps_serving() -> None:
    async with open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Sturdy"))) as host:
        ip, port = parse_address(host.control_address)
        for junk in (b"", b"x" * 31, b"\x00" * 32, b"y" * 500):
            stream = await trio.open_tcp_stream(ip, port)
            try:
                async with trio.open_nursery() as nursery:
                    ws = await trio_websocket.wrap_client_stream(nursery, stream, ip, "/")
                    await ws.send_message(junk)
                    with trio.fail_after(BOUND), pytest.raises(trio_websocket.ConnectionClosed):
                        await ws.get_message()
                    nursery.cancel_scope.cancel()
            finally:
                await trio.aclose_forcefully(stream)
        assert host.statistics().control.handshakes_failed == 4
        config = PeerConfig(Identity.generate("Guest"), JoinRoom(host.invite()))
        async with open_peer(config) as guest:
            assert guest.state is not None


async def test_garbage_datagrams_are_dropped_and_counted() -> None:
    async with _room(1) as (host, peers, _):
        listener = peers[0]
        await _until(listener, lambda: _frames_from(listener, host) >= 5)
        dropped_before = listener.statistics().peer.media.dropped_total
        for junk in (b"", b"\x01", b"\xff" * 40, b"\x00" * 1200):
            host.udp.send(junk, listener.media_address)
        await _until(
            listener,
            lambda: listener.statistics().peer.media.dropped_total >= dropped_before + 4,
        )
        count = _frames_from(listener, host)
        await _until(listener, lambda: _frames_from(listener, host) >= count + 10)


async def test_links_come_back_after_they_break() -> None:
    async with _room(2, host_speaks=False) as (host, peers, _):
        member = peers[0]
        for link in host.plane._links.get(member.me, []):  # the network drops the connection
            link.close("simulated network loss")
        await _until(host, lambda: member.me not in host.plane.linked())
        peers[1].act(RaiseHand())
        # The host dials the member again when it next has something to say.
        await _until(member, lambda: _hand_raised(member, peers[1]))
        assert member.me in host.plane.linked()


async def test_a_real_peer_refuses_the_simulators_keys() -> None:
    config = PeerConfig(
        Identity.generate("Careless"),
        HostRoom("Seeded"),
        key_source=SeededKeySource(b"\x00" * 32),
    )
    with pytest.raises(SimulatedKeysRefused):
        async with open_peer(config):
            pass


async def test_a_dial_that_meets_the_wrong_key_is_a_failed_dial_not_a_dead_peer() -> None:
    stranger = Identity.generate("Stranger").public_key
    async with (
        open_peer(PeerConfig(Identity.generate("Host"), HostRoom("Room"))) as host,
        open_peer(PeerConfig(Identity.generate("Impostor"), HostRoom("Other"))) as impostor,
    ):
        # The directory says the stranger is at the impostor's address: the handshake
        # proves another key, inside the websocket's own nursery.
        host.plane.learn(stranger, impostor.control_address)
        host.plane.send(stranger, b"hello")
        # The host goes on admitting and serving members.
        config = PeerConfig(Identity.generate("Listener"), JoinRoom(host.invite()))
        async with open_peer(config) as listener:
            await _until(host, lambda: host.plane.statistics().dial_failures == 1)
            await _until(host, lambda: listener.me in host.plane.linked())
            assert not host.left.is_set() and listener.joined.is_set()
        assert impostor.plane.statistics().handshakes_failed == 1
