"""Signed room announcements and withdrawals: what a bootstrap node stores and serves.

A bootstrap node is not trusted.  It keeps announcements so that peers can find a
room's control addresses by name or id, but every record is signed by the room's
host (or a moderator acting for it), and a client checks that signature itself.
Joining still goes through the room's own handshake, where keys decide.

Encoding, version 1
===================

Both records are ``body ‖ signature``.  ``signature`` is the 64-byte Ed25519
signature by ``signer`` of the body under :attr:`Domain.ANNOUNCEMENT`.  The first
body byte is the record kind, so one domain label serves both kinds and neither can
pass for the other.  Integers are unsigned big-endian; ``text`` is a u16 byte length
and UTF-8; ``term`` is u32 epoch, u64 successor-list position, u8 rank
(:meth:`Term.encode`).

Announcement (kind 1): room id (16), name (text, 1..100 bytes), topic (text,
0..300 bytes), host key (32), signer key (32), term, listener count (u32), issued
at (u64 unix seconds), expires at (u64, after issued at), address count (u8, 1..8),
addresses (text each, canonical ``HOST:PORT`` or ``[v6]:PORT``, no duplicates).

Withdrawal (kind 2): room id (16), signer key (32), term, withdrawn at (u64).

Nothing may follow the signature.  ``issued at`` is not in the brief's list of
fields; it orders an announcement against a withdrawal, so that replaying an old
announcement cannot bring back a withdrawn room and replaying an old withdrawal
cannot remove a renewed one.
"""

from __future__ import annotations

import enum
import unicodedata

import attrs

from mitalk_p2p.core.errors import LocalProtocolError, WireError
from mitalk_p2p.core.identity import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    Domain,
    Identity,
    PublicKey,
)
from mitalk_p2p.core.ids import ROOM_ID_SIZE, RoomId
from mitalk_p2p.core.term import Term
from mitalk_p2p.core.wire import Reader, Writer
from mitalk_p2p.runtime.addresses import AddressError, format_address, parse_address

MAX_NAME_BYTES = 100
MAX_TOPIC_BYTES = 300
MAX_ADDRESSES = 8
MAX_ADDRESS_BYTES = 64
MAX_U32 = 0xFFFF_FFFF
MAX_U64 = 0xFFFF_FFFF_FFFF_FFFF
MAX_ANNOUNCEMENT_SIZE = (
    1 + ROOM_ID_SIZE + 2 + MAX_NAME_BYTES + 2 + MAX_TOPIC_BYTES + 2 * PUBLIC_KEY_SIZE
    + 13 + 4 + 8 + 8 + 1 + MAX_ADDRESSES * (2 + MAX_ADDRESS_BYTES) + SIGNATURE_SIZE
)
"""The largest encoded announcement, signature included."""

# Characters that could rewrite a terminal line or reorder displayed text.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


class RecordKind(enum.IntEnum):
    ANNOUNCEMENT = 1
    WITHDRAWAL = 2


def _check_display_text(what: str, text: str, low: int, high: int) -> None:
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in _BIDI_CONTROLS:
            raise WireError(f"room {what} contains the control character {char!r}")
    size = len(text.encode("utf-8"))  # surrogates were refused above
    if not low <= size <= high:
        raise WireError(f"room {what} must be {low} to {high} bytes of UTF-8, got {size}")


def _check_addresses(addresses: tuple[str, ...]) -> None:
    if not 1 <= len(addresses) <= MAX_ADDRESSES:
        raise WireError(f"an announcement needs 1 to {MAX_ADDRESSES} addresses, "
                        f"got {len(addresses)}")
    if len(set(addresses)) != len(addresses):
        raise WireError("an announcement lists the same address twice")
    for address in addresses:
        if len(address) > MAX_ADDRESS_BYTES:
            raise WireError(f"address {address[:MAX_ADDRESS_BYTES]!r}… is too long")
        try:
            canonical = format_address(*parse_address(address))
        except AddressError as exc:
            raise WireError(str(exc)) from None
        if canonical != address:
            raise WireError(f"address {address!r} is not written canonically ({canonical!r})")


def _check_range(name: str, value: int, high: int) -> None:
    if not 0 <= value <= high:
        raise WireError(f"{name} must be between 0 and {high}, got {value}")


@attrs.frozen
class Announcement:
    """A room's signed advertisement: where to reach it, and under which host and term."""

    room_id: RoomId
    name: str
    topic: str
    host: PublicKey
    """The room's host (its moderator for ``term``)."""
    signer: PublicKey
    """Whoever signed: the host itself, or a moderator announcing for it."""
    term: Term
    addresses: tuple[str, ...]
    """Control addresses, ``HOST:PORT``, best first."""
    listener_count: int
    issued_at: int
    """Unix seconds when signed: orders this announcement against withdrawals."""
    expires_at: int
    """Unix seconds after which no node serves it."""
    signature: bytes = attrs.field(repr=False)

    def __attrs_post_init__(self) -> None:
        _check_display_text("name", self.name, 1, MAX_NAME_BYTES)
        _check_display_text("topic", self.topic, 0, MAX_TOPIC_BYTES)
        _check_addresses(self.addresses)
        _check_range("listener count", self.listener_count, MAX_U32)
        _check_range("issued at", self.issued_at, MAX_U64)
        _check_range("expires at", self.expires_at, MAX_U64)
        if self.expires_at <= self.issued_at:
            raise WireError("an announcement must expire after it was issued")
        if len(self.signature) != SIGNATURE_SIZE:
            raise WireError(f"signature must be {SIGNATURE_SIZE} bytes")

    def body(self) -> bytes:
        """The canonical bytes the signature covers."""
        writer = Writer().u8(RecordKind.ANNOUNCEMENT).fixed(self.room_id.raw, ROOM_ID_SIZE)
        writer.text(self.name).text(self.topic)
        writer.fixed(self.host.raw, PUBLIC_KEY_SIZE).fixed(self.signer.raw, PUBLIC_KEY_SIZE)
        self.term.encode(writer)
        writer.u32(self.listener_count).u64(self.issued_at).u64(self.expires_at)
        writer.u8(len(self.addresses))
        for address in self.addresses:
            writer.text(address)
        return writer.getvalue()

    def to_bytes(self) -> bytes:
        return self.body() + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> Announcement:
        """Decode without checking the signature (see :meth:`verify`)."""
        if len(data) > MAX_ANNOUNCEMENT_SIZE:
            raise WireError(f"announcement of {len(data)} bytes is larger than any valid one")
        reader = Reader(data, "announcement")
        kind = reader.u8()
        if kind != RecordKind.ANNOUNCEMENT:
            raise WireError(f"announcement: record kind {kind} is not an announcement")
        room_id = RoomId(reader.fixed(ROOM_ID_SIZE))
        name = reader.text(MAX_NAME_BYTES)
        topic = reader.text(MAX_TOPIC_BYTES)
        host = PublicKey(reader.fixed(PUBLIC_KEY_SIZE))
        signer = PublicKey(reader.fixed(PUBLIC_KEY_SIZE))
        term = Term.decode(reader)
        listener_count, issued_at, expires_at = reader.u32(), reader.u64(), reader.u64()
        count = reader.u8()
        if count > MAX_ADDRESSES:
            raise WireError(f"announcement: {count} addresses, at most {MAX_ADDRESSES} allowed")
        addresses = tuple(reader.text(MAX_ADDRESS_BYTES) for _ in range(count))
        signature = reader.fixed(SIGNATURE_SIZE)
        reader.finish()
        return cls(
            room_id=room_id,
            name=name,
            topic=topic,
            host=host,
            signer=signer,
            term=term,
            addresses=addresses,
            listener_count=listener_count,
            issued_at=issued_at,
            expires_at=expires_at,
            signature=signature,
        )

    def verify(self) -> bool:
        """True only if ``signer`` signed exactly these contents."""
        return self.signer.verify(Domain.ANNOUNCEMENT, self.body(), self.signature)

    @property
    def rank_key(self) -> tuple[Term, int]:
        """Which of two announcements of one room is fresher: higher term, then later expiry."""
        return (self.term, self.expires_at)


@attrs.frozen
class Withdrawal:
    """A signed request to stop serving a room's announcement (the host is leaving)."""

    room_id: RoomId
    signer: PublicKey
    term: Term
    withdrawn_at: int
    """Unix seconds when signed: it removes only announcements issued no later."""
    signature: bytes = attrs.field(repr=False)

    def __attrs_post_init__(self) -> None:
        _check_range("withdrawn at", self.withdrawn_at, MAX_U64)
        if len(self.signature) != SIGNATURE_SIZE:
            raise WireError(f"signature must be {SIGNATURE_SIZE} bytes")

    def body(self) -> bytes:
        writer = Writer().u8(RecordKind.WITHDRAWAL).fixed(self.room_id.raw, ROOM_ID_SIZE)
        writer.fixed(self.signer.raw, PUBLIC_KEY_SIZE)
        self.term.encode(writer)
        return writer.u64(self.withdrawn_at).getvalue()

    def to_bytes(self) -> bytes:
        return self.body() + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> Withdrawal:
        """Decode without checking the signature (see :meth:`verify`)."""
        reader = Reader(data, "withdrawal")
        kind = reader.u8()
        if kind != RecordKind.WITHDRAWAL:
            raise WireError(f"withdrawal: record kind {kind} is not a withdrawal")
        room_id = RoomId(reader.fixed(ROOM_ID_SIZE))
        signer = PublicKey(reader.fixed(PUBLIC_KEY_SIZE))
        term = Term.decode(reader)
        withdrawn_at = reader.u64()
        signature = reader.fixed(SIGNATURE_SIZE)
        reader.finish()
        return cls(room_id, signer, term, withdrawn_at, signature)

    def verify(self) -> bool:
        return self.signer.verify(Domain.ANNOUNCEMENT, self.body(), self.signature)


_PLACEHOLDER_SIGNATURE = bytes(SIGNATURE_SIZE)


def create_announcement(
    identity: Identity,
    *,
    room_id: RoomId,
    name: str,
    topic: str = "",
    host: PublicKey | None = None,
    addresses: tuple[str, ...] | list[str],
    listener_count: int = 0,
    term: Term,
    now: float,
    lifetime: int,
) -> Announcement:
    """Sign an announcement valid from ``now`` for ``lifetime`` seconds.

    ``host`` defaults to the signer: pass the host's key when a moderator announces.
    Invalid fields raise :class:`LocalProtocolError`: here they are the caller's bug.
    """
    if lifetime < 1:
        raise LocalProtocolError(f"announcement lifetime must be at least 1 s, got {lifetime}")
    issued_at = int(now)
    try:
        unsigned = Announcement(
            room_id=room_id,
            name=name,
            topic=topic,
            host=identity.public_key if host is None else host,
            signer=identity.public_key,
            term=term,
            addresses=tuple(addresses),
            listener_count=listener_count,
            issued_at=issued_at,
            expires_at=issued_at + lifetime,
            signature=_PLACEHOLDER_SIGNATURE,
        )
    except WireError as exc:
        raise LocalProtocolError(str(exc)) from None
    signature = identity.sign(Domain.ANNOUNCEMENT, unsigned.body())
    return attrs.evolve(unsigned, signature=signature)


def create_withdrawal(identity: Identity, *, room_id: RoomId, term: Term, now: float
                      ) -> Withdrawal:
    """Sign a withdrawal of ``room_id``'s announcements issued up to ``now``."""
    unsigned = Withdrawal(room_id, identity.public_key, term, int(now), _PLACEHOLDER_SIGNATURE)
    signature = identity.sign(Domain.ANNOUNCEMENT, unsigned.body())
    return attrs.evolve(unsigned, signature=signature)
