"""The sealed media frame: one Opus packet, encrypted for the room and signed by its speaker.

Wire layout (big-endian)::

    type:u8 = 0x11            version 1, kind "frame"
    room_tag:4                first four bytes of BLAKE2b(room id), for cheap demultiplexing
    speaker:u32               the speaker's member index (its join position in the room log)
    epoch:u16 step:u16        key generation: fresh keys bump epoch, join ratchets bump step
    seq:u32                   frame counter, +1 per transmitted frame, never reused per speaker
    timestamp:u32             capture time in 48 kHz samples, wrapping
    ciphertext                ChaCha20-Poly1305 (IETF) of the Opus payload, 16-byte tag
    signature:64              Ed25519 by the speaker's identity key

Two layers, two jobs.  The AEAD under the speaker's *sender key* keeps the
audio confidential to current members: a relay forwards ciphertext it cannot
read, and a removed member stops being able to read once keys rotate.  The
signature, over the full room id, the header and the ciphertext, makes each
frame attributable to one speaker: every member holds the sender key, so the
AEAD alone would let any member (or relay) forge a speaker.  The signature is
checked before a frame is forwarded or decrypted, so a corrupted or forged frame
stops at the first honest peer.

The AEAD nonce is derived from the header (speaker, generation, seq) and never
sent.  The associated data is the full room id plus the header, so a frame
cannot be moved between rooms, speakers, generations or positions.
"""

from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

import nacl.bindings
import nacl.exceptions

from .crypto_memo import active_memo
from .errors import WireError
from .identity import SIGNATURE_SIZE, Domain, Identity, PublicKey, domain_message
from .ids import RoomId

FRAME_TYPE = 0x11
"""First byte of a media frame datagram: protocol version 1 (high nibble), kind 1."""
ROOM_TAG_SIZE = 4
_HEADER = struct.Struct(">B4sIHHII")
HEADER_SIZE = _HEADER.size
TAG_SIZE = nacl.bindings.crypto_aead_chacha20poly1305_ietf_ABYTES
KEY_SIZE = nacl.bindings.crypto_aead_chacha20poly1305_ietf_KEYBYTES
FRAME_OVERHEAD = HEADER_SIZE + TAG_SIZE + SIGNATURE_SIZE
"""Bytes a sealed frame adds to its Opus payload (before IP and UDP headers)."""
MAX_PAYLOAD = 1275
"""The largest Opus packet for one frame (RFC 6716, section 3.4)."""
MAX_FRAME_SIZE = FRAME_OVERHEAD + MAX_PAYLOAD
MIN_FRAME_SIZE = FRAME_OVERHEAD
_U32 = 1 << 32
_DOMAIN_PREFIX = domain_message(Domain.MEDIA_FRAME, b"")


def room_tag(room_id: RoomId) -> bytes:
    return hashlib.blake2b(
        room_id.raw, digest_size=ROOM_TAG_SIZE, person=b"mitalk-roomtag"
    ).digest()


class KeyGeneration(NamedTuple):
    """Which sender key sealed a frame.  Ordered: later generations compare greater.

    A named tuple rather than an attrs class: every frame received hashes and
    compares its generation several times, and a tuple does that in C.
    """

    epoch: int
    step: int

    def ratcheted(self) -> KeyGeneration:
        return KeyGeneration(self.epoch, self.step + 1)

    def __str__(self) -> str:
        return f"{self.epoch}.{self.step}"


class FrameHeader(NamedTuple):
    """The clear header of a media frame, parsed once per datagram received."""

    room_tag: bytes
    speaker: int
    generation: KeyGeneration
    seq: int
    timestamp: int

    def encode(self) -> bytes:
        return _HEADER.pack(
            FRAME_TYPE,
            self.room_tag,
            self.speaker,
            self.generation.epoch,
            self.generation.step,
            self.seq,
            self.timestamp % _U32,
        )


def parse_header(datagram: bytes) -> FrameHeader:
    """Read the clear header of a frame.  Cheap: no crypto.  Raises :class:`WireError`."""
    if len(datagram) < MIN_FRAME_SIZE:
        raise WireError(f"media frame of {len(datagram)} bytes is shorter than {MIN_FRAME_SIZE}")
    if len(datagram) > MAX_FRAME_SIZE:
        raise WireError(f"media frame of {len(datagram)} bytes exceeds {MAX_FRAME_SIZE}")
    kind, tag, speaker, epoch, step, seq, timestamp = _HEADER.unpack_from(datagram)
    if kind != FRAME_TYPE:
        raise WireError(f"datagram type {kind:#04x} is not a version-1 media frame")
    return FrameHeader(tag, speaker, KeyGeneration(epoch, step), seq, timestamp)


def _nonce(header: FrameHeader) -> bytes:
    generation = header.generation
    return struct.pack(">IHHI", header.speaker, generation.epoch, generation.step, header.seq)


def seal_frame(
    header: FrameHeader,
    payload: bytes,
    *,
    room_id: RoomId,
    sender_key: bytes,
    speaker: Identity,
) -> bytes:
    """Encrypt ``payload`` under ``sender_key`` and sign the result as ``speaker``."""
    if len(payload) > MAX_PAYLOAD:
        raise WireError(f"Opus payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    head = header.encode()
    ciphertext = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
        payload, room_id.raw + head, _nonce(header), sender_key
    )
    body = head + ciphertext
    return body + speaker.sign(Domain.MEDIA_FRAME, room_id.raw + body)


def frame_signature_valid(datagram: bytes, room_id: RoomId, speaker: PublicKey) -> bool:
    """True only if ``speaker`` signed exactly these bytes for this room."""
    memo = active_memo()
    if memo is not None:
        return memo.verified(
            speaker.raw,
            room_id.raw,
            datagram,
            lambda: _frame_signature_valid(datagram, room_id, speaker),
        )
    return _frame_signature_valid(datagram, room_id, speaker)


def _frame_signature_valid(datagram: bytes, room_id: RoomId, speaker: PublicKey) -> bool:
    body, signature = datagram[:-SIGNATURE_SIZE], datagram[-SIGNATURE_SIZE:]
    try:
        nacl.bindings.crypto_sign_open(signature + _DOMAIN_PREFIX + room_id.raw + body, speaker.raw)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True


def open_frame(
    header: FrameHeader, datagram: bytes, *, room_id: RoomId, sender_key: bytes
) -> bytes:
    """Decrypt a frame whose signature was already checked.  Raises :class:`WireError`."""
    memo = active_memo()
    if memo is not None:
        payload = memo.opened(
            sender_key, room_id.raw, datagram, lambda: _open(header, datagram, room_id, sender_key)
        )
    else:
        payload = _open(header, datagram, room_id, sender_key)
    if payload is None:
        raise WireError("media frame does not decrypt under the sender key")
    return payload


def _open(header: FrameHeader, datagram: bytes, room_id: RoomId, sender_key: bytes) -> bytes | None:
    ciphertext = datagram[HEADER_SIZE:-SIGNATURE_SIZE]
    try:
        return bytes(
            nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                ciphertext, room_id.raw + datagram[:HEADER_SIZE], _nonce(header), sender_key
            )
        )
    except nacl.exceptions.CryptoError:
        return None
