"""Requests and responses between a client and a bootstrap node.

Each is one binary websocket message: a version byte (1), a kind byte, then the
kind's fields in the :mod:`mitalk_p2p.core.wire` encoding, with nothing after.
A client sends one request and reads exactly one response before the next, so
no request ids are needed (the one exception: a request under 2 bytes, which is
malformed anyway, gets no reply from a connection that has not proven its address).

=====  =============  ==================================================
kind   message        fields
=====  =============  ==================================================
1      Announce       announcement (rest of the message)
2      Withdraw       withdrawal (rest of the message)
3      LookupId       room id (16 bytes)
4      LookupName     text (u16 length, at most 100 bytes of UTF-8)
5      Prove          cookie (16 bytes), then a whole request (not a Prove)
0x81   Ok             detail (text, at most 32 bytes)
0x82   Rooms          u16 count, then each announcement as a u16-prefixed blob
0x83   Error          code (text, at most 32 bytes), message (text, at most 300)
0x84   ProofRequired  cookie (16 bytes), or nothing
=====  =============  ==================================================

Error codes are :class:`ErrorCode` values here and
:class:`~bootstrap.registry.Refusal` values from the registry.

Address proof
=============

Until a connection has proven its address, no reply is larger than the request
that caused it, so a forged source address cannot turn the node into an
amplifier.  A reply that would be larger is replaced by ``ProofRequired`` carrying
a cookie the node derives from the source address (see
:mod:`bootstrap.address_proof`); the client sends the same request again inside
``Prove`` with that cookie, which proves the connection and gets the full reply.
A request under :data:`PROOF_REQUIRED_SIZE` bytes has no room for a cookie in its
reply, so it gets ``ProofRequired`` without one; a client then wraps the request in
``Prove`` with the all-zero cookie :data:`NO_COOKIE` (which proves nothing but is
big enough to be answered with a cookie).
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
COOKIE_SIZE = 16
NO_COOKIE = bytes(COOKIE_SIZE)
"""The cookie a client sends before the node has given it one."""
PROOF_REQUIRED_SIZE = 2 + COOKIE_SIZE
"""Bytes of a ``ProofRequired`` reply that carries a cookie."""


class ErrorCode(enum.StrEnum):
    """Refusals that come from the node rather than from the registry."""

    MALFORMED = "malformed"
    TOO_LARGE = "too-large"
    """A request over :data:`MAX_REQUEST_SIZE`; far larger ones end the connection (1009)."""
    RATE_LIMITED = "rate-limited"
    INTERNAL = "internal"
    TOO_MANY_CONNECTIONS = "too-many-connections"
    """The websocket handshake was refused (HTTP 503, this code as the body)."""
    IDLE_TIMEOUT = "idle-timeout"
    """The node closed a silent connection (close code 1000, this code as the reason)."""
    ADDRESS_PROOF_REQUIRED = "address-proof-required"
    """The node kept asking for an address proof (raised by clients, never sent)."""


class Kind(enum.IntEnum):
    ANNOUNCE = 1
    WITHDRAW = 2
    LOOKUP_ID = 3
    LOOKUP_NAME = 4
    PROVE = 5
    OK = 0x81
    ROOMS = 0x82
    ERROR = 0x83
    PROOF_REQUIRED = 0x84


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


PlainRequest = Announce | Withdraw | LookupId | LookupName
"""Any request but a proof: what a ``Prove`` may wrap."""


@attrs.frozen
class Prove:
    """``request``, sent with the cookie that proves the sender's address."""

    cookie: bytes = attrs.field(repr=False)
    request: PlainRequest

    def __attrs_post_init__(self) -> None:
        if len(self.cookie) != COOKIE_SIZE:
            raise WireError(f"a cookie is {COOKIE_SIZE} bytes, not {len(self.cookie)}")


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


@attrs.frozen
class ProofRequired:
    """The real reply is larger than the request: prove the address with ``cookie`` first."""

    cookie: bytes = attrs.field(default=b"", repr=False)
    """Empty when the request was too small to be answered with a cookie."""

    def __attrs_post_init__(self) -> None:
        if len(self.cookie) not in (0, COOKIE_SIZE):
            raise WireError(f"a cookie is {COOKIE_SIZE} bytes, not {len(self.cookie)}")


Request = PlainRequest | Prove
Response = Ok | Rooms | Error | ProofRequired


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
        case Prove(cookie, inner):
            writer.u8(Kind.PROVE).fixed(cookie, COOKIE_SIZE).raw(encode_request(inner))
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
        case ProofRequired(cookie):
            writer.u8(Kind.PROOF_REQUIRED).raw(cookie)
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
    elif kind == Kind.PROVE:
        cookie = reader.fixed(COOKIE_SIZE)
        rest = reader.rest()
        if rest[1:2] == bytes((Kind.PROVE,)):  # checked first: nesting must not recurse
            raise WireError("request: a proof may not wrap another proof")
        inner = decode_request(rest)
        assert not isinstance(inner, Prove)
        request = Prove(cookie, inner)
    else:
        raise WireError(f"request: unknown kind {kind}")
    reader.finish()
    return request


def peel_proof(data: bytes) -> tuple[bytes, bytes] | None:
    """``(cookie, inner request bytes)`` if ``data`` is a ``Prove`` request, without decoding
    the inner request, so that a good cookie counts even when the request is bad."""
    header = bytes((PROTOCOL_VERSION, Kind.PROVE))
    if len(data) < len(header) + COOKIE_SIZE or not data.startswith(header):
        return None
    body = len(header) + COOKIE_SIZE
    return data[len(header):body], data[body:]


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
    elif kind == Kind.PROOF_REQUIRED:
        response = ProofRequired(reader.rest())
    else:
        raise WireError(f"response: unknown kind {kind}")
    reader.finish()
    return response
