"""Media-plane parsers and entry points: garbage gives typed errors, or is dropped and counted."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from mitalk_p2p.core.errors import LocalProtocolError, WireError
from mitalk_p2p.core.identity import PublicKey
from mitalk_p2p.core.media_frame import KeyGeneration
from mitalk_p2p.core.media_messages import (
    MAX_PROBE_PATH,
    ChildFound,
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
    encode_path,
    path_holds,
    path_keys,
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
    ParentSwitched(3, A, B, SwitchReason.DETACHED),
    ChildLost(4, B),
    ChildFound(5, A),
]


def test_every_message_round_trips() -> None:
    for message in SAMPLES:
        assert decode_media_message(encode_media_message(message)) == message
    probe = Probe(b"tag!", A, 5, ProbeRole.CHILD, 10, 9, 1234)
    assert Probe.decode(probe.encode()) == probe
    for rooted in (True, False):
        path = encode_path((A, B, A))
        answer = Probe(b"tag!", B, 5, ProbeRole.PARENT, 11, 10, 7, rooted=rooted, path=path)
        assert Probe.decode(answer.encode()) == answer
        assert path_keys(answer.path) == (A, B, A)


def test_a_key_is_found_in_a_path_only_where_a_key_starts() -> None:
    path = encode_path((A, B))
    assert path_holds(path, A) and path_holds(path, B)
    assert not path_holds(path, PublicKey(b"a" * 16 + b"b" * 16))  # straddles two keys
    assert not path_holds(b"", A)
    assert path_holds(b"x" + encode_path((A,))[1:] + encode_path((A,)), A)


HEAD = len(Probe(b"tag!", A, 1, ProbeRole.PARENT, 1, 0, 0).encode())
"""A probe's fixed part, ending in its flags byte and its path length byte."""


def test_a_probe_names_at_most_its_nearest_ancestors() -> None:
    keys = tuple(PublicKey(bytes([i]) * 32) for i in range(MAX_PROBE_PATH + 3))
    long = Probe(b"tag!", A, 1, ProbeRole.PARENT, 1, 0, 0, path=b"".join(k.raw for k in keys))
    assert path_keys(Probe.decode(long.encode()).path) == keys[:MAX_PROBE_PATH]
    assert encode_path(keys) == encode_path(keys[:MAX_PROBE_PATH])
    with pytest.raises(LocalProtocolError):
        Probe(b"tag!", A, 1, ProbeRole.PARENT, 1, 0, 0, path=b"half a key").encode()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d[:-1], "does not fit"),
        (lambda d: d + bytes(32), "does not fit"),
        (lambda d: d[: HEAD - 2] + bytes([0x02]) + d[HEAD - 1 :], "flags"),
        (lambda d: d[: HEAD - 1] + bytes([MAX_PROBE_PATH + 1]) + d[HEAD:], "exceeds"),
        (lambda d: d[: HEAD - 1], "at least"),
    ],
)
def test_a_probe_path_that_does_not_add_up_is_refused(
    change: Callable[[bytes], bytes], problem: str
) -> None:
    data = Probe(b"tag!", A, 1, ProbeRole.PARENT, 1, 0, 0, path=encode_path((A, B))).encode()
    assert path_keys(Probe.decode(data).path) == (A, B)
    with pytest.raises(WireError, match=problem):
        Probe.decode(change(data))


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
@given(st.integers(0, 3), st.integers(min_value=0), st.integers(0, 255))
def test_mutated_probes_decode_or_give_wire_errors(
    path_length: int, position: int, value: int
) -> None:
    path = encode_path((A, B, A)[:path_length])
    data = bytearray(Probe(b"tag!", B, 5, ProbeRole.PARENT, 11, 10, 7, path=path).encode())
    data[position % len(data)] = value
    with contextlib.suppress(WireError):
        probe = Probe.decode(bytes(data))
        assert len(path_keys(probe.path)) == path_length


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
