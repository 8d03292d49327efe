"""The DNS-SD TXT record of a room, encoded and decoded without I/O.

A room is advertised as an instance of ``_mitalk._udp.local.``.  The SRV record
carries the host's media (UDP) port, the A/AAAA records its addresses, and the TXT
record the rest, one ``key=value`` string per field:

=========  ========================================================================
key        value
=========  ========================================================================
``v``      protocol version, decimal (:data:`~..core.control.PROTOCOL_VERSION`)
``id``     room id, 32 lowercase hex digits
``name``   room name, UTF-8, 1..100 bytes, no control characters
``key``    the host's Ed25519 public key, 64 lowercase hex digits
``fp``     the host's fingerprint; must be the fingerprint of ``key``
``n``      listener count, decimal without leading zeros
``ctl``    the host's control (websocket) port, decimal 1..65535
``topic``  optional: the room's topic, UTF-8, at most 160 bytes (cut short to fit)
``inv0``…  optional: an *open* listener invite, its token split into strings of at
           most 200 characters (``inv0``, ``inv1``, … without gaps, at most four)
=========  ========================================================================

Keys are compared without regard to case (RFC 6763 §6.4); unknown keys are
ignored so later versions can add fields.  Decoding is strict otherwise: a missing
or malformed field, a fingerprint that is not ``key``'s, or an open invite that is
not a listener invite for anyone, for this room, signed by ``key``, makes the
whole record :class:`RecordError`.  Browsers drop such a record and count it.

Nothing in a record is trusted.  The open invite's signature is checked here so
that a garbled one is refused early, but that proves only that whoever holds
``key`` issued it; the joiner's handshake still requires the room's host to prove
it holds ``key``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Final

import attrs

from ..core.control import PROTOCOL_VERSION
from ..core.errors import LocalProtocolError, WireError
from ..core.identity import Domain, PublicKey
from ..core.ids import RoomId
from ..core.invite import InviteError, SignedInvite
from ..core.roles import Role

SERVICE_TYPE: Final = "_mitalk._udp.local."
MAX_NAME_BYTES: Final = 100
MAX_TOPIC_BYTES: Final = 160
MAX_LISTENERS: Final = 1_000_000
INVITE_CHUNK: Final = 200
MAX_INVITE_CHUNKS: Final = 4
MAX_TXT_STRING: Final = 255
MAX_INSTANCE_BYTES: Final = 63
"""A DNS label: the instance name is one."""

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NUMBER = re.compile(r"0|[1-9][0-9]{0,9}")
_INVITE_PART = re.compile(r"inv[0-9]+")
_REQUIRED = ("v", "id", "name", "key", "fp", "n", "ctl")
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


class RecordError(WireError):
    """A TXT record that is not a valid room record; the message says which field."""


def _bad_text(text: str) -> str | None:
    """Why ``text`` can't be shown on a terminal, or ``None`` if it can."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in _BIDI_CONTROLS:
            return f"contains the control character {char!r}"
    return None


def trim_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, on a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")


def _check_name(_instance: object, _attribute: object, name: str) -> None:
    problem = _bad_text(name)
    if problem is not None:
        raise LocalProtocolError(f"room name {problem}")
    if not 1 <= len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        raise LocalProtocolError(f"room name must be 1 to {MAX_NAME_BYTES} bytes of UTF-8")


def _check_topic(_instance: object, _attribute: object, topic: str) -> None:
    problem = _bad_text(topic)
    if problem is not None:
        raise LocalProtocolError(f"topic {problem}")
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        raise LocalProtocolError(f"topic must be at most {MAX_TOPIC_BYTES} bytes (trim_utf8 it)")


def _check_listeners(_instance: object, _attribute: object, value: int) -> None:
    if not 0 <= value <= MAX_LISTENERS:
        raise LocalProtocolError(f"listener count must be 0..{MAX_LISTENERS}, got {value}")


def _check_port(_instance: object, _attribute: object, value: int) -> None:
    if not 1 <= value <= 65535:
        raise LocalProtocolError(f"control port must be 1..65535, got {value}")


@attrs.frozen(kw_only=True)
class RoomRecord:
    """What a room's TXT record says.  Construction checks every bound, so it always encodes."""

    room_id: RoomId
    name: str = attrs.field(validator=_check_name)
    host_key: PublicKey
    """The key the advertiser claims the room's host holds (a claim, not a proof)."""
    listeners: int = attrs.field(validator=_check_listeners)
    control_port: int = attrs.field(validator=_check_port)
    topic: str = attrs.field(default="", validator=_check_topic)
    open_invite: SignedInvite | None = None
    """A listener invite anyone may use, published by an open room's host."""
    version: int = PROTOCOL_VERSION

    def __attrs_post_init__(self) -> None:
        if self.open_invite is not None:
            problem = _open_invite_problem(self.open_invite, self.room_id, self.host_key)
            if problem is not None:
                raise LocalProtocolError(f"open invite: {problem}")

    @property
    def fingerprint(self) -> str:
        return self.host_key.fingerprint

    def to_properties(self) -> dict[str, bytes]:
        """The TXT record as zeroconf takes it (each ``key=value`` at most 255 bytes)."""
        properties = {
            "v": str(self.version).encode(),
            "id": self.room_id.hex.encode(),
            "name": self.name.encode("utf-8"),
            "key": self.host_key.raw.hex().encode(),
            "fp": self.fingerprint.encode(),
            "n": str(self.listeners).encode(),
            "ctl": str(self.control_port).encode(),
        }
        if self.topic:
            properties["topic"] = self.topic.encode("utf-8")
        if self.open_invite is not None:
            token = self.open_invite.token
            chunks = [token[i : i + INVITE_CHUNK] for i in range(0, len(token), INVITE_CHUNK)]
            for index, chunk in enumerate(chunks):
                properties[f"inv{index}"] = chunk.encode("ascii")
        return properties

    @classmethod
    def from_properties(cls, properties: Mapping[bytes, bytes | None]) -> RoomRecord:
        """Decode a TXT record (``ServiceInfo.properties``).  Raises :class:`RecordError`."""
        fields: dict[str, bytes] = {}
        for raw_key, value in properties.items():
            if not isinstance(raw_key, bytes):
                raise RecordError("a TXT key is not bytes")
            try:
                key = raw_key.decode("ascii").lower()
            except UnicodeDecodeError:
                continue  # not one of ours: every key we use is ASCII
            if key in fields:
                raise RecordError(f"the key {key!r} appears twice")
            if value is None:
                if key in _REQUIRED or key == "topic" or _INVITE_PART.fullmatch(key):
                    raise RecordError(f"{key!r} has no value")
                continue
            if not isinstance(value, bytes):
                raise RecordError(f"{key!r} is not bytes")
            fields[key] = value
        missing = [key for key in _REQUIRED if key not in fields]
        if missing:
            raise RecordError(f"missing {', '.join(missing)}")
        version = _number(fields, "v", 255)
        if version != PROTOCOL_VERSION:
            raise RecordError(f"protocol version {version}, this mitalk speaks {PROTOCOL_VERSION}")
        room_id = RoomId.from_hex(_matching(fields, "id", _HEX32, "32 lowercase hex digits"))
        host_key = PublicKey(
            bytes.fromhex(_matching(fields, "key", _HEX64, "64 lowercase hex digits"))
        )
        if _text(fields, "fp") != host_key.fingerprint:
            raise RecordError("the fingerprint is not that of the key")
        try:
            return cls(
                room_id=room_id,
                name=_text(fields, "name"),
                host_key=host_key,
                listeners=_number(fields, "n", MAX_LISTENERS),
                control_port=_number(fields, "ctl", 65535),
                topic=_text(fields, "topic") if "topic" in fields else "",
                open_invite=_open_invite(fields),
                version=version,
            )
        except LocalProtocolError as exc:
            raise RecordError(str(exc)) from None


def instance_name(name: str, host_key: PublicKey) -> str:
    """The DNS-SD instance label: the room name and the host's short fingerprint.

    Two rooms with the same name on one LAN then differ; dots (label separators)
    become dashes, and the name is shortened to fit one 63-byte DNS label.
    """
    suffix = f" ({host_key.short})"
    room = trim_utf8(name.replace(".", "-"), MAX_INSTANCE_BYTES - len(suffix)).strip()
    return f"{room or 'room'}{suffix}"


# --- decoding helpers ---------------------------------------------------------------


def _text(fields: Mapping[str, bytes], key: str) -> str:
    try:
        return fields[key].decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError(f"{key!r} is not UTF-8") from None


def _matching(fields: Mapping[str, bytes], key: str, pattern: re.Pattern[str], what: str) -> str:
    text = _text(fields, key)
    if not pattern.fullmatch(text):
        raise RecordError(f"{key!r} is not {what}")
    return text


def _number(fields: Mapping[str, bytes], key: str, high: int) -> int:
    value = int(_matching(fields, key, _NUMBER, "a decimal number"))
    if value > high:
        raise RecordError(f"{key!r} is out of range ({value} > {high})")
    return value


def _open_invite(fields: Mapping[str, bytes]) -> SignedInvite | None:
    chunks = {key for key in fields if _INVITE_PART.fullmatch(key)}
    if not chunks:
        return None
    expected = [f"inv{index}" for index in range(len(chunks))]
    if chunks != set(expected) or len(chunks) > MAX_INVITE_CHUNKS:
        raise RecordError("the open invite's parts are not inv0, inv1, … without gaps")
    token = "".join(_text(fields, key) for key in expected)
    try:
        return SignedInvite.from_token(token)
    except InviteError as exc:
        raise RecordError(f"the open invite is unusable: {exc}") from None


def _open_invite_problem(invite: SignedInvite, room_id: RoomId, host_key: PublicKey) -> str | None:
    contents = invite.invite
    if contents.room_id != room_id:
        return "it is for another room"
    if contents.issuer != host_key:
        return "it is not issued by the record's key"
    if contents.audience is not None:
        return "it is meant for one peer only"
    if contents.role is not Role.LISTENER:
        return f"it grants {contents.role.label}, an open invite grants listener only"
    if not host_key.verify(Domain.INVITE, invite.body, invite.signature):
        return "its signature does not verify"
    if len(invite.token) > INVITE_CHUNK * MAX_INVITE_CHUNKS:
        return "it is too long for the TXT record"
    return None
