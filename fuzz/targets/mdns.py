"""The mDNS room record: a DNS-SD TXT record, from its wire form to a :class:`RoomRecord`."""

from __future__ import annotations

from collections.abc import Iterator

from mitalk_p2p.core.identity import Identity
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.core.invite import create_invite
from mitalk_p2p.core.roles import Role
from mitalk_p2p.discovery.room_record import RecordError, RoomRecord

from . import Target, expect

HOST = Identity.from_seed(bytes(range(32)), "Host")
ROOM = RoomId(bytes(range(16)))


def txt_properties(data: bytes) -> dict[bytes, bytes | None]:
    """A TXT record's strings (each behind a length byte) as zeroconf hands them over:
    ``key=value`` split at the first ``=``, a bare ``key`` mapped to ``None``, the first
    of two equal keys kept."""
    properties: dict[bytes, bytes | None] = {}
    position = 0
    while position < len(data):
        length = data[position]
        entry = data[position + 1 : position + 1 + length]
        position += 1 + length
        key, equals, value = entry.partition(b"=")
        if key and key not in properties:
            properties[key] = value if equals else None
    return properties


def txt_wire(properties: dict[str, bytes]) -> bytes:
    out = bytearray()
    for key, value in properties.items():
        entry = key.encode("ascii") + b"=" + value
        out += bytes((len(entry),)) + entry
    return bytes(out)


def check_txt(data: bytes) -> None:
    try:
        record = RoomRecord.from_properties(txt_properties(data))
    except RecordError:
        return
    again = txt_properties(txt_wire(record.to_properties()))
    expect(RoomRecord.from_properties(again) == record, "room record does not round-trip")


def records() -> list[RoomRecord]:
    invite = create_invite(HOST, room_id=ROOM, room_name="Café ☕", role=Role.LISTENER,
                           now=1_700_000_000.0, lifetime=3600, max_uses=65535, nonce=bytes(16))
    return [
        RoomRecord(room_id=ROOM, name="Café ☕", host_key=HOST.public_key, listeners=3,
                   control_port=7000, topic="jazz"),
        RoomRecord(room_id=ROOM, name="Open room", host_key=HOST.public_key, listeners=0,
                   control_port=65535, open_invite=invite),
    ]


def seeds() -> Iterator[tuple[str, bytes]]:
    for record in records():
        yield "txt", txt_wire(record.to_properties())


TARGET = Target(
    "mdns",
    "the DNS-SD TXT record a room advertises over mDNS, with its optional open invite",
    (("txt", check_txt),),
    seeds,
    dictionary="text.dict",
)
