"""Bootstrap-node parsers: requests, responses, signed announcements and withdrawals."""

from __future__ import annotations

from collections.abc import Iterator

from bootstrap.announcement import (
    Announcement,
    Withdrawal,
    create_announcement,
    create_withdrawal,
)
from bootstrap.protocol import (
    COOKIE_SIZE,
    NO_COOKIE,
    Announce,
    Error,
    LookupId,
    LookupName,
    Ok,
    ProofRequired,
    Prove,
    Request,
    Rooms,
    Withdraw,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from bootstrap.registry import Registry
from bootstrap.session import answer
from mitalk_p2p.core.errors import WireError
from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.term import Term

from . import Target, expect

NOW = 1_700_000_000
HOST = Identity.from_seed(bytes([1]) * 32, "host")
ROOM = RoomId(bytes(range(16)))
COOKIE = bytes(range(1, COOKIE_SIZE + 1))


def check_request(data: bytes) -> None:
    try:
        request = decode_request(data)
    except WireError:
        return
    expect(encode_request(request) == data, f"{type(request).__name__} re-encodes wrong")


def check_response(data: bytes) -> None:
    try:
        response = decode_response(data)
    except WireError:
        return
    expect(encode_response(response) == data, f"{type(response).__name__} re-encodes wrong")


def check_announcement(data: bytes) -> None:
    try:
        announcement = Announcement.from_bytes(data)
    except WireError:
        return
    expect(announcement.to_bytes() == data, "announcement re-encodes to other bytes")
    expect(isinstance(announcement.verify(), bool), "announcement check gave a non-boolean")


def check_withdrawal(data: bytes) -> None:
    try:
        withdrawal = Withdrawal.from_bytes(data)
    except WireError:
        return
    expect(withdrawal.to_bytes() == data, "withdrawal re-encodes to other bytes")
    expect(isinstance(withdrawal.verify(), bool), "withdrawal check gave a non-boolean")


def check_answer(data: bytes) -> None:
    """A node answers every request, good or bad, and a fresh registry keeps only good ones."""
    registry = Registry()
    reply = answer(registry, data, NOW)
    expect(isinstance(reply, Ok | Rooms | Error), "answer gave no response")
    expect(isinstance(encode_response(reply), bytes), "the answer does not encode")


def announcements() -> list[Announcement]:
    return [
        create_announcement(HOST, room_id=ROOM, name="Late Night Jazz", topic="smooth tunes",
                            addresses=("192.0.2.1:4000",), listener_count=3, term=Term.first(),
                            now=NOW, lifetime=600),
        create_announcement(HOST, room_id=RoomId(bytes(16)), name="Ünïcode ☕",
                            addresses=("192.0.2.1:4000", "[2001:db8::7]:4001"),
                            term=Term(4, 1, 77), now=NOW, lifetime=60),
    ]


def seeds() -> Iterator[tuple[str, bytes]]:
    withdrawal = create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=NOW)
    requests: list[Request] = [
        *(Announce(a) for a in announcements()),
        Withdraw(withdrawal),
        LookupId(ROOM),
        LookupName("jazz"),
        Prove(COOKIE, LookupName("jazz")),
        Prove(NO_COOKIE, Announce(announcements()[0])),
    ]
    for request in requests:
        yield "request", encode_request(request)
        yield "answer", encode_request(request)
    for response in (Ok("added"), Rooms(()), Rooms(tuple(announcements())),
                     Error("stale-term", "too old"), ProofRequired(COOKIE), ProofRequired()):
        yield "response", encode_response(response)
    for announcement in announcements():
        yield "announcement", announcement.to_bytes()
    yield "withdrawal", withdrawal.to_bytes()


TARGET = Target(
    "bootstrap-node",
    "bootstrap requests and responses, signed room announcements and withdrawals, and the "
    "node's answer to any request",
    (
        ("request", check_request),
        ("response", check_response),
        ("announcement", check_announcement),
        ("withdrawal", check_withdrawal),
        ("answer", check_answer),
    ),
    seeds,
)
