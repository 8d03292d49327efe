"""Requests and responses between a client and a bootstrap node.

Each is one binary websocket message: a version byte (1), a kind byte, then the
kind's fields in the :mod:`mitalk_p2p.core.wire` encoding, with nothing after.
A client sends one request and reads exactly one response before the next, so
no request ids are needed.

=====  ============  ==================================================
kind   message       fields
=====  ============  ==================================================
1      Announce      announcement (rest of the message)
2      Withdraw      withdrawal (rest of the message)
3      LookupId      room id (16 bytes)
4      LookupName    text (u16 length, at most 100 bytes of UTF-8)
0x81   Ok            detail (text, at most 32 bytes)
0x82   Rooms         u16 count, then each announcement as a u16-prefixed blob
0x83   Error         code (text, at most 32 bytes), message (text, at most 300)
=====  ============  ==================================================

Error codes are :class:`ErrorCode` values here and
:class:`~bootstrap.registry.Refusal` values from the registry.
"""

from __future__ import annotations

import enum

import attrs

from mitalk_p2p.core.errors import WireError
from mitalk_p2p.core.ids import ROOM_ID_SIZE, RoomId
from mitalk_p2p.core.wire import Reader, Writer

from .announcement import MAX_ANNOUNCEMENT_SIZE, MAX_NAME_BYTES, Announcement, Withdrawal

PROTOCOL_VERSION = 1
MAX_REQUEST_SIZE = 64 * 1024
"""Requests larger than this are refused with ``too-large`` before decoding."""
MAX_ROOMS_PER_RESPONSE = 100
MAX_RESPONSE_SIZE = 4 + MAX_ROOMS_PER_RESPONSE * (2 + MAX_ANNOUNCEMENT_SIZE)
MAX_CODE_BYTES = 32
MAX_MESSAGE_BYTES = 300


class ErrorCode(enum.StrEnum):
    """Refusals that come from the node rather than from the registry."""

    MALFORMED = "malformed"
    TOO_LARGE = "too-large"
    RATE_LIMITED = "rate-limited"
    INTERNAL = "internal"


class Kind(enum.IntEnum):
    ANNOUNCE = 1
    WITHDRAW = 2
    LOOKUP_ID = 3
    LOOKUP_NAME = 4
    OK = 0x81
    ROOMS = 0x82
    ERROR = 0x83


class ProtocolError(WireError):
    """A message that cannot be decoded; ``code`` says what to answer."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen
class Announce:
    announcement: Announcement


@attrs.frozen
class Withdraw:
    withdrawal: Withdrawal


@attrs.frozen
class LookupId:
    room_id: RoomId


@attrs.frozen
class LookupName:
    text: str


@attrs.frozen
class Ok:
    detail: str = ""
    """What happened, e.g. ``added``, ``kept`` or ``withdrawn``: informative only."""


@attrs.frozen
class Rooms:
    rooms: tuple[Announcement, ...]


@attrs.frozen
class Error:
    code: str
    message: str


Request = Announce | Withdraw | LookupId | LookupName
Response = Ok | Rooms | Error


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8 without splitting a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def encode_request(request: Request) -> bytes:
    writer = Writer().u8(PROTOCOL_VERSION)
    match request:
        case Announce(announcement):
            writer.u8(Kind.ANNOUNCE).raw(announcement.to_bytes())
        case Withdraw(withdrawal):
            writer.u8(Kind.WITHDRAW).raw(withdrawal.to_bytes())
        case LookupId(room_id):
            writer.u8(Kind.LOOKUP_ID).fixed(room_id.raw, ROOM_ID_SIZE)
        case LookupName(text):
            writer.u8(Kind.LOOKUP_NAME).text(_clip(text, MAX_NAME_BYTES))
    return writer.getvalue()


def encode_response(response: Response) -> bytes:
    writer = Writer().u8(PROTOCOL_VERSION)
    match response:
        case Ok(detail):
            writer.u8(Kind.OK).text(_clip(detail, MAX_CODE_BYTES))
        case Rooms(rooms):
            rooms = rooms[:MAX_ROOMS_PER_RESPONSE]
            writer.u8(Kind.ROOMS).u16(len(rooms))
            for room in rooms:
                writer.blob(room.to_bytes())
        case Error(code, message):
            writer.u8(Kind.ERROR).text(_clip(code, MAX_CODE_BYTES))
            writer.text(_clip(message, MAX_MESSAGE_BYTES))
    return writer.getvalue()


def _open(data: bytes, what: str, limit: int) -> tuple[Reader, int]:
    if len(data) > limit:
        raise ProtocolError(ErrorCode.TOO_LARGE,
                            f"{what} of {len(data)} bytes exceeds the {limit}-byte limit")
    reader = Reader(data, what)
    version = reader.u8()
    if version != PROTOCOL_VERSION:
        raise WireError(f"{what}: protocol version {version} is not supported")
    return reader, reader.u8()


def decode_request(data: bytes) -> Request:
    """Decode one request; :class:`WireError` (or :class:`ProtocolError`) if it is bad."""
    reader, kind = _open(data, "request", MAX_REQUEST_SIZE)
    request: Request
    if kind == Kind.ANNOUNCE:
        request = Announce(Announcement.from_bytes(reader.rest()))
    elif kind == Kind.WITHDRAW:
        request = Withdraw(Withdrawal.from_bytes(reader.rest()))
    elif kind == Kind.LOOKUP_ID:
        request = LookupId(RoomId(reader.fixed(ROOM_ID_SIZE)))
    elif kind == Kind.LOOKUP_NAME:
        request = LookupName(reader.text(MAX_NAME_BYTES))
    else:
        raise WireError(f"request: unknown kind {kind}")
    reader.finish()
    return request


def decode_response(data: bytes) -> Response:
    """Decode one response.  Announcements in it are not yet verified."""
    reader, kind = _open(data, "response", MAX_RESPONSE_SIZE)
    response: Response
    if kind == Kind.OK:
        response = Ok(reader.text(MAX_CODE_BYTES))
    elif kind == Kind.ROOMS:
        count = reader.u16()
        if count > MAX_ROOMS_PER_RESPONSE:
            raise WireError(f"response: {count} rooms, at most {MAX_ROOMS_PER_RESPONSE} allowed")
        response = Rooms(tuple(
            Announcement.from_bytes(reader.blob(MAX_ANNOUNCEMENT_SIZE)) for _ in range(count)
        ))
    elif kind == Kind.ERROR:
        response = Error(reader.text(MAX_CODE_BYTES), reader.text(MAX_MESSAGE_BYTES))
    else:
        raise WireError(f"response: unknown kind {kind}")
    reader.finish()
    return response
