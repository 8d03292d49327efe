"""Media-plane parsers and entry points: garbage gives typed errors, or is dropped and counted."""

from __future__ import annotations

import contextlib

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from mitalk_p2p.core.errors import WireError
from mitalk_p2p.core.identity import PublicKey
from mitalk_p2p.core.media_frame import KeyGeneration
from mitalk_p2p.core.media_messages import (
    ChildLost,
    KeyAck,
    KeyGrant,
    KeyRequest,
    MediaMessage,
    Neighbor,
    ParentSwitched,
    Probe,
    ProbeRole,
    RelayOffer,
    SwitchReason,
    TreePosition,
    decode_media_message,
    encode_media_message,
)

from .media_fixtures import media_room

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
A = PublicKey(b"a" * 32)
B = PublicKey(b"b" * 32)
SAMPLES: list[MediaMessage] = [
    KeyGrant(7, KeyGeneration(1, 2), b"s" * 32),
    KeyAck(KeyGeneration(3, 4)),
    KeyRequest(KeyGeneration(0, 0)),
    RelayOffer("127.0.0.1:4000", 6, 12),
    TreePosition(9, Neighbor(A, "sim:a"), None, (Neighbor(B, "sim:b"),), 2),
    ParentSwitched(3, A, B, SwitchReason.CORRUPT),
    ChildLost(4, B),
]


def test_every_message_round_trips() -> None:
    for message in SAMPLES:
        assert decode_media_message(encode_media_message(message)) == message
    probe = Probe(b"tag!", A, 5, ProbeRole.CHILD, 10, 9, 1234)
    assert Probe.decode(probe.encode()) == probe


def test_grants_never_show_their_secret() -> None:
    assert "sss" not in repr(SAMPLES[0])


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_give_wire_errors_only(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode_media_message(data)
    with contextlib.suppress(WireError):
        Probe.decode(data)


@FUZZ
@given(st.sampled_from(SAMPLES), st.integers(min_value=0), st.integers(0, 255))
def test_mutated_messages_decode_or_give_wire_errors(
    message: MediaMessage, position: int, value: int
) -> None:
    data = bytearray(encode_media_message(message))
    data[position % len(data)] = value
    with contextlib.suppress(WireError):
        decode_media_message(bytes(data))


def test_a_session_counts_garbage_and_keeps_working() -> None:
    room = media_room(2)
    target = room["p000"]
    garbage = [b"", b"\x11", b"\x12" * 70, b"\x99" * 100, bytes(200), b"\x11" + bytes(300)]
    for data in garbage:
        room.net.inject_datagram(data, "sim:nowhere", target.me, 0.001)
    for message in SAMPLES:
        target.receive_link(encode_media_message(message)[:-1], room.host.me, room.net.now)
    room.net.run_for(0.1)
    stats = target.statistics().media
    assert stats.dropped_total >= len(garbage) + len(SAMPLES) - 1
    room.speak("host", 0.2)
    room.net.run_for(0.2)
    assert stats.frames_accepted == 0
    assert target.statistics().media.frames_accepted == 10
