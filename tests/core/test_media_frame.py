"""The sealed frame format, the replay window and sender keys, piece by piece."""

from __future__ import annotations

import contextlib
import hashlib

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mitalk_p2p.core.errors import WireError
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.media_frame import (
    FRAME_OVERHEAD,
    HEADER_SIZE,
    FrameHeader,
    KeyGeneration,
    frame_signature_valid,
    open_frame,
    parse_header,
    room_tag,
    seal_frame,
)
from mitalk_p2p.core.replay import Freshness, ReplayWindow
from mitalk_p2p.core.sender_keys import (
    MAX_RATCHET_AHEAD,
    Keyring,
    SeededKeySource,
    SenderKey,
    SpeakerKeys,
    ratchet_secret,
)

ROOM = RoomId(bytes(range(16)))
SPEAKER = Identity.from_seed(b"s" * 32, "speaker")
LISTENER = Identity.from_seed(b"l" * 32, "listener")
KEY = SenderKey(KeyGeneration(3, 7), b"k" * 32)


def make_frame(payload: bytes = b"opus-payload", seq: int = 42) -> tuple[FrameHeader, bytes]:
    header = FrameHeader(room_tag(ROOM), 5, KEY.generation, seq, 960 * seq)
    return header, seal_frame(header, payload, room_id=ROOM, sender_key=KEY.secret, speaker=SPEAKER)


def test_round_trip_and_overhead() -> None:
    header, datagram = make_frame(b"x" * 60)
    assert len(datagram) == 60 + FRAME_OVERHEAD
    assert parse_header(datagram) == header
    assert frame_signature_valid(datagram, ROOM, SPEAKER.public_key)
    assert open_frame(header, datagram, room_id=ROOM, sender_key=KEY.secret) == b"x" * 60


def test_ciphertext_hides_the_payload() -> None:
    _, datagram = make_frame(b"secret words " * 4)
    assert b"secret words" not in datagram


def test_aead_is_chacha20poly1305_with_header_nonce() -> None:
    """Cross-check the composition against libsodium called directly."""
    header, datagram = make_frame(b"check")
    nonce = (5).to_bytes(4, "big") + (3).to_bytes(2, "big") + (7).to_bytes(2, "big")
    nonce += (42).to_bytes(4, "big")
    expected = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
        b"check", ROOM.raw + header.encode(), nonce, KEY.secret
    )
    assert datagram[HEADER_SIZE:-64] == expected


@pytest.mark.parametrize("position", range(len(make_frame()[1])))
def test_any_flipped_bit_is_caught(position: int) -> None:
    """Header, ciphertext, tag or signature: every byte is covered by the signature."""
    _, datagram = make_frame()
    bad = bytearray(datagram)
    bad[position] ^= 0x01
    tampered = bytes(bad)
    try:
        parse_header(tampered)
    except WireError:
        return
    assert not frame_signature_valid(tampered, ROOM, SPEAKER.public_key)


def test_signature_binds_room_and_speaker() -> None:
    _, datagram = make_frame()
    assert not frame_signature_valid(datagram, RoomId(bytes(16)), SPEAKER.public_key)
    assert not frame_signature_valid(datagram, ROOM, LISTENER.public_key)


def test_a_member_with_the_sender_key_cannot_sign_as_the_speaker() -> None:
    header = FrameHeader(room_tag(ROOM), 5, KEY.generation, 43, 0)
    forged = seal_frame(header, b"forged", room_id=ROOM, sender_key=KEY.secret, speaker=LISTENER)
    assert open_frame(header, forged, room_id=ROOM, sender_key=KEY.secret) == b"forged"
    assert not frame_signature_valid(forged, ROOM, SPEAKER.public_key)


@pytest.mark.parametrize("size", [0, 10, FRAME_OVERHEAD - 1, FRAME_OVERHEAD + 1276])
def test_wrong_sizes_are_refused(size: int) -> None:
    with pytest.raises(WireError):
        parse_header(b"\x11" * size)


@given(st.binary(max_size=2000))
def test_parse_header_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(WireError):
        parse_header(data)


# --- replay window --------------------------------------------------------------------


@settings(max_examples=200)
@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=300))
def test_replay_window_matches_a_set_model(counters: list[int]) -> None:
    window = ReplayWindow(size=1024)
    seen: set[int] = set()
    for counter in counters:
        verdict = window.check(counter)
        highest = max(seen, default=-1)
        if counter in seen:
            assert verdict is not Freshness.FRESH
        elif counter <= highest - 1024:
            assert verdict is Freshness.TOO_OLD
        else:
            assert verdict is Freshness.FRESH
            window.mark(counter)
            seen.add(counter)


def test_replay_window_holds_at_least_1024() -> None:
    window = ReplayWindow()
    assert window.size >= 1024
    for counter in range(0, 3000, 2):
        window.mark(counter)
    assert window.check(2998 - 2046) is Freshness.DUPLICATE
    assert window.check(2999 - 1024) is Freshness.FRESH
    assert window.check(0) is Freshness.TOO_OLD


# --- sender keys ----------------------------------------------------------------------


def test_ratchet_is_one_way_and_deterministic() -> None:
    stepped = KEY.ratcheted()
    assert stepped.generation == KeyGeneration(3, 8)
    assert stepped.secret == ratchet_secret(KEY.secret)
    reference = hashlib.blake2b(b"", key=KEY.secret, digest_size=32, person=b"mitalk-ratchet")
    assert stepped.secret == reference.digest()
    assert stepped.secret != KEY.secret


def test_keyring_ratchets_forward_but_never_back() -> None:
    ring = Keyring()
    ring.install(KEY.ratcheted())  # a newcomer got step 8
    assert ring.key_for(KeyGeneration(3, 7)) is None
    assert ring.key_for(KeyGeneration(3, 10)) == KEY.ratcheted().ratcheted().ratcheted().secret
    assert ring.key_for(KeyGeneration(3, 10 + MAX_RATCHET_AHEAD + 1)) is None
    assert ring.key_for(KeyGeneration(4, 0)) is None


def test_keys_never_show_in_reprs() -> None:
    secret_hex = KEY.secret.hex()
    source = SeededKeySource(b"seed" * 8)
    for thing in (KEY, SpeakerKeys(KEY), Keyring(), source):
        assert "k" * 32 not in repr(thing) and secret_hex not in repr(thing)


def test_rotation_waits_for_every_ack_or_the_deadline() -> None:
    a, b = LISTENER.public_key, SPEAKER.public_key
    keys = SpeakerKeys(KEY)
    fresh = keys.begin_rotation(SeededKeySource(b"x" * 32), {a, b}, deadline=5.0)
    assert fresh.generation == KeyGeneration(4, 0)
    assert keys.current == KEY
    assert not keys.acknowledge(a, fresh.generation)
    assert keys.acknowledge(b, fresh.generation)
    assert keys.current == fresh and keys.pending is None

    keys.begin_rotation(SeededKeySource(b"y" * 32), {a}, deadline=5.0)
    assert not keys.complete_if_due(4.9)
    assert keys.complete_if_due(5.0)
    assert keys.current.generation == KeyGeneration(5, 0)


def test_seeded_source_is_reproducible_and_system_source_is_not() -> None:
    from mitalk_p2p.core.sender_keys import system_key_source

    assert SeededKeySource(b"a" * 32)(32) == SeededKeySource(b"a" * 32)(32)
    assert system_key_source(32) != system_key_source(32)


def test_wire_rate_per_listener_with_real_opus() -> None:
    """Bytes on the wire per listener per second at 24 kbit/s Opus, IP and UDP included.

    Each listener receives every frame once.  The figure is reported in the
    README: about 75 kbit/s at 20 ms frames (a 64-byte signature on every frame
    is most of the overhead) and under 50 kbit/s at 40 ms frames.
    """
    from mitalk_p2p.codec import CodecConfig, OpusEncoder, is_dtx
    from tests.test_codec import frames_of, speech

    ip_udp = 28
    rates = {}
    for frame_ms in (20, 40):
        config = CodecConfig(frame_ms=frame_ms)
        encoder = OpusEncoder(config)
        seconds = 4.0
        packets = [encoder.encode(f) for f in frames_of(speech(seconds), config)]
        sent = [p for p in packets if not is_dtx(p)]
        _, datagram = make_frame(sent[10])
        assert len(datagram) == len(sent[10]) + FRAME_OVERHEAD
        rates[frame_ms] = sum(len(p) + FRAME_OVERHEAD + ip_udp for p in sent) * 8 / seconds / 1000
    assert 60 < rates[20] < 80
    assert rates[40] < 64
