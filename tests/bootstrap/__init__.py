"""Tests of the bootstrap node: records, registry, wire protocol, server and client."""

from __future__ import annotations

from bootstrap.announcement import Announcement, create_announcement
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.term import Term

NOW = 1_700_000_000
"""A fixed wall-clock time (unix seconds) for every test."""
HOST = Identity.from_seed(bytes([1]) * 32, "host")
MODERATOR = Identity.from_seed(bytes([2]) * 32, "moderator")
STRANGER = Identity.from_seed(bytes([3]) * 32, "stranger")
ROOM = RoomId(bytes(range(16)))


def room_id(n: int) -> RoomId:
    return RoomId(n.to_bytes(16, "big"))


def make_announcement(
    *,
    signer: Identity = HOST,
    host: Identity | None = None,
    room: RoomId = ROOM,
    name: str = "Late Night Jazz",
    term: Term | None = None,
    now: float = NOW,
    lifetime: int = 600,
    addresses: tuple[str, ...] = ("192.0.2.1:4000",),
    listener_count: int = 3,
) -> Announcement:
    return create_announcement(
        signer,
        room_id=room,
        name=name,
        topic="smooth tunes",
        host=(host or signer).public_key,
        addresses=addresses,
        listener_count=listener_count,
        term=term or Term.first(),
        now=now,
        lifetime=lifetime,
    )
