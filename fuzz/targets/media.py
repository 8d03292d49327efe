"""Media-plane parsers: sealed frames, tree probes and media link messages."""

from __future__ import annotations

from collections.abc import Iterator

from mitalk_p2p.core.errors import WireError
from mitalk_p2p.core.identity import SIGNATURE_SIZE, Identity, PublicKey
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.media_frame import (
    HEADER_SIZE,
    FrameHeader,
    KeyGeneration,
    frame_signature_valid,
    open_frame,
    parse_header,
    room_tag,
    seal_frame,
)
from mitalk_p2p.core.media_messages import (
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
)

from . import Target, expect

ROOM = RoomId(bytes(range(16)))
SPEAKER = Identity.from_seed(b"s" * 32, "speaker")
SENDER_KEY = bytes(range(32))
A = PublicKey(b"a" * 32)
B = PublicKey(b"b" * 32)


def check_link_message(data: bytes) -> None:
    try:
        message = decode_media_message(data)
    except WireError:
        return
    expect(encode_media_message(message) == data, f"{type(message).__name__} re-encodes wrong")


def check_probe(data: bytes) -> None:
    try:
        probe = Probe.decode(data)
    except WireError:
        return
    expect(probe.encode() == data, "probe re-encodes to other bytes")


def check_frame(data: bytes) -> None:
    try:
        header = parse_header(data)
    except WireError:
        return
    expect(header.encode() == data[:HEADER_SIZE], "frame header re-encodes to other bytes")
    signed = frame_signature_valid(data, ROOM, SPEAKER.public_key)
    try:
        payload = open_frame(header, data, room_id=ROOM, sender_key=SENDER_KEY)
    except WireError:
        return
    # Only what the sealer made decrypts (the AEAD), and the signature is valid exactly
    # when the frame is byte for byte what the speaker sealed (Ed25519 is deterministic).
    resealed = seal_frame(header, payload, room_id=ROOM, sender_key=SENDER_KEY, speaker=SPEAKER)
    body = len(data) - SIGNATURE_SIZE
    expect(resealed[:body] == data[:body], "a frame decrypted that was never sealed")
    expect(signed == (resealed == data), "the frame signature check disagrees with the signer")


def _messages() -> list[MediaMessage]:
    return [
        KeyGrant(7, KeyGeneration(1, 2), b"s" * 32),
        KeyAck(KeyGeneration(3, 4)),
        KeyRequest(KeyGeneration(0, 0)),
        RelayOffer("127.0.0.1:4000", 6, 12),
        TreePosition(9, Neighbor(A, "127.0.0.1:4001"), Neighbor(B, "[::1]:4002"),
                     (Neighbor(B, "127.0.0.1:4003"), Neighbor(A, "127.0.0.1:4004")), 2),
        TreePosition(1, None, None, (), 0),
        ParentSwitched(3, A, B, SwitchReason.CORRUPT),
        ChildLost(4, B),
        ChildFound(5, A),
    ]


def seeds() -> Iterator[tuple[str, bytes]]:
    for message in _messages():
        yield "link-message", encode_media_message(message)
    tag = room_tag(ROOM)
    yield "probe", Probe(tag, A, 5, ProbeRole.CHILD, 10, 9, 1234).encode()
    for rooted in (True, False):
        path = encode_path((A, B, A))
        probe = Probe(tag, B, 5, ProbeRole.PARENT, 11, 10, 7, rooted=rooted, path=path)
        yield "probe", probe.encode()
    for seq, payload in ((0, b""), (1, bytes(range(60))), (2**32 - 1, b"\xfc" * 160)):
        header = FrameHeader(tag, 3, KeyGeneration(2, 5), seq, seq * 960)
        yield "frame", seal_frame(
            header, payload, room_id=ROOM, sender_key=SENDER_KEY, speaker=SPEAKER
        )


TARGET = Target(
    "media",
    "media frames (header, signature, decryption), tree probes and media link messages",
    (("link-message", check_link_message), ("probe", check_probe), ("frame", check_frame)),
    seeds,
)
