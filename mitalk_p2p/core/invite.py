"""Signed invites: a copy-paste token that lets one peer into a room with a given role.

An invite is checked offline.  Everything a verifier needs is in the token (the
issuer's public key, the signature, the validity window); the checks that need
knowledge of the room (which room this is, who is redeeming, what role the issuer
holds) are parameters of :meth:`SignedInvite.verify`.  Counting uses and checking
the revocation list are the room host's job; :class:`InviteProblem` names those
outcomes too so every refusal reads the same way.

Token format, version 1
=======================

A token is the text ``mitalk:`` followed by the URL-safe base64 alphabet
(RFC 4648 §5, ``A-Z a-z 0-9 - _``) without ``=`` padding, encoding
``body ‖ signature``.  The encoding must be canonical: the unused low bits of the
last character are zero.  Whitespace anywhere in the text (line breaks a terminal
inserts when copying, indentation, surrounding blanks) is ignored.  The prefix is
case-sensitive.

``signature`` is the 64-byte Ed25519 signature, by the issuer's key, of
``u8(16) ‖ "mitalk/v1/invite" ‖ body`` (the one-byte length of the domain label,
the ASCII label, then the body).

``body`` is the following fields in order, with no padding.  Integers are unsigned
big-endian.  ``text`` is a u16 byte length followed by that many bytes of UTF-8.

====  ====================  ==========  ==============================================
#     field                 encoding    rules
====  ====================  ==========  ==============================================
1     version               u8          1; read first, so a later version may change
                                        everything after it
2     room id               16 bytes
3     room name             text        1..100 bytes; no control characters, line
                                        separators or bidirectional-override marks
4     issuer                32 bytes    Ed25519 public key of the signer
5     has audience          u8          0 (anyone holding the token) or 1
6     audience              32 bytes    present only if *has audience* is 1: the
                                        Ed25519 public key of the one peer it is for
7     role                  u8          0 listener, 1 speaker, 2 moderator; 3 (host)
                                        decodes but never verifies
8     not before            u64         unix seconds
9     expires at            u64         unix seconds, greater than *not before*
10    nonce                 16 bytes    random; with the issuer, names the invite
                                        for use counting and revocation
11    max uses              u16         at least 1
12    address count         u8          0..8
13    addresses             text × n    each 3..64 bytes of printable ASCII,
                                        ``host:port`` (IPv6 in brackets, port
                                        1..65535 without leading zeros)
14    bootstrap URL count   u8          0..4
15    bootstrap URLs        text × n    each at most 128 bytes of printable ASCII,
                                        scheme ``ws``, ``wss``, ``http`` or ``https``
====  ====================  ==========  ==============================================

Nothing may follow the last field.  An invite is valid at time ``now`` when
``not_before - 60 <= now < expires_at + 60`` (clock skew of 60 seconds either way).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import enum
import math
import unicodedata
from collections.abc import Iterable

import attrs
import nacl.utils

from .errors import LocalProtocolError, RemoteProtocolError, WireError
from .identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Domain, Identity, PublicKey
from .ids import ROOM_ID_SIZE, RoomId
from .roles import Role
from .wire import Reader, Writer

INVITE_VERSION = 1
TOKEN_PREFIX = "mitalk:"
NONCE_SIZE = 16
CLOCK_SKEW_SECONDS = 60
MAX_ROOM_NAME_BYTES = 100
MAX_ADDRESSES = 8
MAX_ADDRESS_BYTES = 64
MAX_BOOTSTRAP_URLS = 4
MAX_URL_BYTES = 128
BOOTSTRAP_URL_SCHEMES = ("ws", "wss", "http", "https")

_U16_MAX = 0xFFFF
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF

# Bytes in every body: version, room id, name length, issuer, audience flag, role,
# not before, expires at, nonce, max uses, and the two list counts.
_FIXED_BODY_SIZE = 1 + ROOM_ID_SIZE + 2 + PUBLIC_KEY_SIZE + 1 + 1 + 8 + 8 + NONCE_SIZE + 2 + 1 + 1
_MIN_BODY_SIZE = _FIXED_BODY_SIZE + 1  # a one-byte room name
_MAX_BODY_SIZE = (
    _FIXED_BODY_SIZE
    + MAX_ROOM_NAME_BYTES
    + PUBLIC_KEY_SIZE
    + MAX_ADDRESSES * (2 + MAX_ADDRESS_BYTES)
    + MAX_BOOTSTRAP_URLS * (2 + MAX_URL_BYTES)
)
MAX_TOKEN_LENGTH = len(TOKEN_PREFIX) + math.ceil((_MAX_BODY_SIZE + SIGNATURE_SIZE) * 4 / 3)
"""The longest token a valid invite can produce (whitespace excluded)."""

# Pasted text longer than this is refused before any whitespace is stripped.
_MAX_PASTED_LENGTH = 16 * MAX_TOKEN_LENGTH
_BASE64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
# Characters that could rewrite a terminal line or reorder displayed text.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


class InviteProblem(enum.Enum):
    """Why an invite was refused.  Each has its own message; drivers count them by value."""

    MALFORMED = "malformed"
    """Truncated, garbage, or not an invite at all."""
    UNKNOWN_VERSION = "unknown-version"
    TAMPERED = "tampered"
    """The signature does not match the contents."""
    WRONG_ISSUER = "wrong-issuer"
    """Validly signed, but not by the key the verifier expected."""
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    WRONG_ROOM = "wrong-room"
    WRONG_AUDIENCE = "wrong-audience"
    ROLE_TOO_HIGH = "role-too-high"
    USED_UP = "used-up"
    """The host has already admitted ``max_uses`` peers with it."""
    REVOKED = "revoked"
    BANNED = "banned"
    """The peer redeeming it is banned from the room."""


class InviteError(RemoteProtocolError):
    """An invite was refused.  ``str(error)`` is a sentence for the person at the terminal."""

    def __init__(self, problem: InviteProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem

    def __repr__(self) -> str:
        return f"InviteError({self.problem.name}, {str(self)!r})"


# --- field validation (shared by local construction and decoding) -------------------------


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise LocalProtocolError(f"{name} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise LocalProtocolError(f"{name} must be between {low} and {high}, got {value}")


def _is_printable_ascii(text: str) -> bool:
    return all(0x21 <= ord(c) <= 0x7E for c in text)


def _check_room_name(_instance: object, _attribute: object, name: str) -> None:
    if not isinstance(name, str):
        raise LocalProtocolError("room name must be text")
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in _BIDI_CONTROLS:
            raise LocalProtocolError(f"room name contains the control character {char!r}")
    size = len(name.encode("utf-8"))
    if not 1 <= size <= MAX_ROOM_NAME_BYTES:
        raise LocalProtocolError(
            f"room name must be 1 to {MAX_ROOM_NAME_BYTES} bytes of UTF-8, got {size}"
        )


def _check_address(address: str) -> None:
    if len(address) > MAX_ADDRESS_BYTES or not _is_printable_ascii(address):
        raise LocalProtocolError(
            f"address {address[:MAX_ADDRESS_BYTES]!r} must be at most {MAX_ADDRESS_BYTES}"
            " printable ASCII characters"
        )
    host, colon, port = address.rpartition(":")
    if not colon or not host:
        raise LocalProtocolError(f"address {address!r} is not of the form host:port")
    if not (port.isdigit() and port == str(int(port)) and 1 <= int(port) <= _U16_MAX):
        raise LocalProtocolError(f"address {address!r} has an invalid port")
    bracketed = host.startswith("[") and host.endswith("]") and len(host) > 2
    if ":" in host and not bracketed:
        raise LocalProtocolError(f"address {address!r}: write an IPv6 host in brackets")
    if not bracketed and ("[" in host or "]" in host):
        raise LocalProtocolError(f"address {address!r} has stray brackets")


def _check_url(url: str) -> None:
    if len(url) > MAX_URL_BYTES or not _is_printable_ascii(url):
        raise LocalProtocolError(
            f"bootstrap URL {url[:MAX_URL_BYTES]!r} must be at most {MAX_URL_BYTES}"
            " printable ASCII characters"
        )
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in BOOTSTRAP_URL_SCHEMES or not rest:
        schemes = ", ".join(BOOTSTRAP_URL_SCHEMES)
        raise LocalProtocolError(f"bootstrap URL {url!r} must use one of the schemes {schemes}")


def _to_str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str | bytes):
        raise LocalProtocolError("expected a sequence of strings, not a single string")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise LocalProtocolError(f"expected a string, got {type(item).__name__}")
    return items


def _check_addresses(_instance: object, _attribute: object, value: tuple[str, ...]) -> None:
    if len(value) > MAX_ADDRESSES:
        raise LocalProtocolError(f"at most {MAX_ADDRESSES} addresses, got {len(value)}")
    for address in value:
        _check_address(address)


def _check_urls(_instance: object, _attribute: object, value: tuple[str, ...]) -> None:
    if len(value) > MAX_BOOTSTRAP_URLS:
        raise LocalProtocolError(f"at most {MAX_BOOTSTRAP_URLS} bootstrap URLs, got {len(value)}")
    for url in value:
        _check_url(url)


def _check_time(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    _check_int(attribute.name, value, 0, _U64_MAX)


def _check_max_uses(_instance: object, _attribute: object, value: int) -> None:
    _check_int("max_uses", value, 1, _U16_MAX)


def _check_version(_instance: object, _attribute: object, value: int) -> None:
    if value != INVITE_VERSION:
        raise LocalProtocolError(f"only invite version {INVITE_VERSION} can be made, not {value}")


def _check_nonce(_instance: object, _attribute: object, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != NONCE_SIZE:
        raise LocalProtocolError(f"nonce must be {NONCE_SIZE} bytes")


# --- the records ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Invite:
    """The contents of an invite.

    Construction checks every bound, so an ``Invite`` always encodes.  Its role
    may be ``HOST`` only because a decoded invite is represented faithfully
    until :meth:`SignedInvite.verify` refuses it; :meth:`sign` never signs one.
    """

    room_id: RoomId = attrs.field(validator=attrs.validators.instance_of(RoomId))
    room_name: str = attrs.field(validator=_check_room_name)
    issuer: PublicKey = attrs.field(validator=attrs.validators.instance_of(PublicKey))
    """The key that signs the invite."""
    role: Role = attrs.field(validator=attrs.validators.instance_of(Role))
    """The role the redeemer gets on joining."""
    not_before: int = attrs.field(validator=_check_time)
    """Unix seconds; the invite is valid from here (less the clock skew)."""
    expires_at: int = attrs.field(validator=_check_time)
    """Unix seconds; the invite is valid until here (plus the clock skew), exclusive."""
    nonce: bytes = attrs.field(repr=False, validator=_check_nonce)
    """Random bytes that make each invite unique; with ``issuer``, it names the invite."""
    audience: PublicKey | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.instance_of(PublicKey)),
    )
    """The one peer that may redeem the invite, or ``None`` for anyone holding it."""
    max_uses: int = attrs.field(default=1, validator=_check_max_uses)
    """How many peers the host admits with this invite."""
    addresses: tuple[str, ...] = attrs.field(
        default=(), converter=_to_str_tuple, validator=_check_addresses
    )
    """``host:port`` hints where the room's members may be reached."""
    bootstrap_urls: tuple[str, ...] = attrs.field(
        default=(), converter=_to_str_tuple, validator=_check_urls
    )
    """Rendezvous nodes that may know the room."""
    version: int = attrs.field(default=INVITE_VERSION, validator=_check_version)

    def __attrs_post_init__(self) -> None:
        if self.expires_at <= self.not_before:
            raise LocalProtocolError(
                f"invite expires ({self.expires_at}) at or before it starts ({self.not_before})"
            )

    def encode(self) -> bytes:
        """The canonical body that the signature covers (layout in the module docstring)."""
        w = Writer()
        w.u8(self.version)
        w.fixed(self.room_id.raw, ROOM_ID_SIZE)
        w.text(self.room_name)
        w.fixed(self.issuer.raw, PUBLIC_KEY_SIZE)
        w.boolean(self.audience is not None)
        if self.audience is not None:
            w.fixed(self.audience.raw, PUBLIC_KEY_SIZE)
        w.u8(int(self.role))
        w.u64(self.not_before)
        w.u64(self.expires_at)
        w.fixed(self.nonce, NONCE_SIZE)
        w.u16(self.max_uses)
        w.u8(len(self.addresses))
        for address in self.addresses:
            w.text(address)
        w.u8(len(self.bootstrap_urls))
        for url in self.bootstrap_urls:
            w.text(url)
        return w.getvalue()

    def sign(self, identity: Identity) -> SignedInvite:
        """Sign with the issuer's identity.  Refuses a host-role invite or a foreign issuer."""
        if identity.public_key != self.issuer:
            raise LocalProtocolError(
                f"invite names {self.issuer.fingerprint} as issuer,"
                f" but {identity.fingerprint} is signing it"
            )
        if self.role is Role.HOST:
            raise LocalProtocolError("an invite can't grant the host role")
        body = self.encode()
        return SignedInvite(invite=self, body=body, signature=identity.sign(Domain.INVITE, body))


@attrs.frozen(kw_only=True)
class SignedInvite:
    """An invite with its exact signed bytes.

    Build one with :meth:`Invite.sign`, :meth:`from_token` or :meth:`from_bytes`.
    It has no ``__str__`` returning the token on purpose: a token is a bearer
    credential and should reach logs only when someone asks for it.
    """

    invite: Invite
    body: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)

    def __attrs_post_init__(self) -> None:
        if len(self.signature) != SIGNATURE_SIZE:
            raise LocalProtocolError(f"signature must be {SIGNATURE_SIZE} bytes")
        if self.invite.encode() != self.body:
            raise LocalProtocolError("body is not the encoding of the invite")

    @property
    def token(self) -> str:
        """The copy-paste form: ``mitalk:`` and unpadded URL-safe base64 of body ‖ signature."""
        return TOKEN_PREFIX + _b64encode(self.to_bytes())

    def to_bytes(self) -> bytes:
        return self.body + self.signature

    @classmethod
    def from_token(cls, text: str) -> SignedInvite:
        """Parse a pasted token, ignoring any whitespace in it.  Raises :class:`InviteError`."""
        if len(text) > _MAX_PASTED_LENGTH:
            raise _malformed(f"that is far too long to be an invite ({len(text)} characters)")
        compact = "".join(text.split())
        if not compact:
            raise _malformed("invite is empty")
        if not compact.startswith(TOKEN_PREFIX):
            raise _malformed(f"that is not a mitalk invite: an invite starts with {TOKEN_PREFIX!r}")
        if len(compact) > MAX_TOKEN_LENGTH:
            raise _malformed(
                f"invite is too long ({len(compact)} characters, at most {MAX_TOKEN_LENGTH})"
            )
        payload = compact[len(TOKEN_PREFIX) :]
        for char in payload:
            if char not in _BASE64_ALPHABET:
                raise _malformed(f"invite contains {char!r}, which never appears in an invite")
        if len(payload) % 4 == 1:
            raise _malformed("invite is incomplete: part of it may not have been copied")
        try:
            data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            raise _malformed("invite is not valid base64") from None
        if _b64encode(data) != payload:
            raise _malformed("invite is damaged: its last character is wrong")
        return cls.from_bytes(data)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedInvite:
        """Decode body ‖ signature.  Checks the format only; call :meth:`verify` next."""
        data = bytes(data)
        if not data:
            raise _malformed("invite is empty")
        if data[0] != INVITE_VERSION:
            raise InviteError(
                InviteProblem.UNKNOWN_VERSION,
                f"invite uses format version {data[0]}, but this mitalk reads only version"
                f" {INVITE_VERSION}: update mitalk, or ask for a new invite",
            )
        if len(data) < _MIN_BODY_SIZE + SIGNATURE_SIZE:
            raise _malformed(
                f"invite is incomplete ({len(data)} bytes; at least"
                f" {_MIN_BODY_SIZE + SIGNATURE_SIZE} are needed)"
            )
        if len(data) > _MAX_BODY_SIZE + SIGNATURE_SIZE:
            raise _malformed(f"invite is too long ({len(data)} bytes)")
        body, signature = data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]
        # The reader is strict, so the decoded invite re-encodes to exactly ``body``.
        return cls(invite=_decode_body(body), body=body, signature=signature)

    def verify(
        self,
        now: float,
        *,
        room_id: RoomId | None = None,
        audience: PublicKey | None = None,
        expected_issuer: PublicKey | None = None,
        issuer_role: Role | None = None,
        skew: float = CLOCK_SKEW_SECONDS,
    ) -> Invite:
        """Check the invite offline and return its contents, or raise :class:`InviteError`.

        ``now`` is unix seconds.  Give ``room_id`` to require this room,
        ``audience`` as the key of the peer presenting the invite (an invite bound
        to a peer is refused without it), ``expected_issuer`` to require a
        particular signer, and ``issuer_role`` as the issuer's current role in the
        room.  A host-role invite is always refused.
        """
        if not math.isfinite(now):
            raise LocalProtocolError(f"now must be a finite time, got {now!r}")
        if not (math.isfinite(skew) and skew >= 0):
            raise LocalProtocolError(f"skew must be a non-negative number, got {skew!r}")
        invite = self.invite
        if not invite.issuer.verify(Domain.INVITE, self.body, self.signature):
            raise InviteError(
                InviteProblem.TAMPERED,
                "invite signature does not match its contents: it was altered or"
                f" corrupted (it claims to be from {invite.issuer.fingerprint})",
            )
        if expected_issuer is not None and invite.issuer != expected_issuer:
            raise InviteError(
                InviteProblem.WRONG_ISSUER,
                f"invite is signed by {invite.issuer.fingerprint}, not by the expected"
                f" issuer {expected_issuer.fingerprint}",
            )
        if room_id is not None and invite.room_id != room_id:
            raise InviteError(
                InviteProblem.WRONG_ROOM,
                f"invite is for another room ({invite.room_name!r},"
                f" id {invite.room_id.hex[:12]}…), not this one (id {room_id.hex[:12]}…)",
            )
        if invite.audience is not None and invite.audience != audience:
            if audience is None:
                detail = "and no peer key was given to check it against"
            else:
                detail = f"not for {audience.fingerprint}"
            raise InviteError(
                InviteProblem.WRONG_AUDIENCE,
                f"invite is meant only for peer {invite.audience.fingerprint}, {detail}",
            )
        if invite.role is Role.HOST:
            raise InviteError(
                InviteProblem.ROLE_TOO_HIGH,
                "invite grants the host role, which no invite can grant",
            )
        if issuer_role is not None and invite.role > issuer_role:
            raise InviteError(
                InviteProblem.ROLE_TOO_HIGH,
                f"invite grants the {invite.role.label} role, above its issuer's own role"
                f" ({issuer_role.label})",
            )
        if now < invite.not_before - skew:
            raise InviteError(
                InviteProblem.NOT_YET_VALID,
                f"invite is not valid yet: it starts in {_span(invite.not_before - now)}"
                f" (at {_utc(invite.not_before)}); if that looks wrong, check this computer's"
                " clock",
            )
        if now >= invite.expires_at + skew:
            raise InviteError(
                InviteProblem.EXPIRED,
                f"invite expired {_span(now - invite.expires_at)} ago"
                f" (at {_utc(invite.expires_at)})",
            )
        return invite


def create_invite(
    issuer: Identity,
    *,
    room_id: RoomId,
    room_name: str,
    role: Role,
    now: float,
    lifetime: int,
    audience: PublicKey | None = None,
    max_uses: int = 1,
    addresses: Iterable[str] = (),
    bootstrap_urls: Iterable[str] = (),
    not_before: int | None = None,
    nonce: bytes | None = None,
    issuer_role: Role | None = None,
) -> SignedInvite:
    """Make and sign an invite.  Raises :class:`LocalProtocolError` on bad input.

    The invite is valid from ``not_before`` (default: ``now``, rounded down) for
    ``lifetime`` seconds.  ``nonce`` defaults to fresh random bytes; pass one only
    to reproduce test vectors.  If ``issuer_role`` is given, a role above it is
    refused here rather than by every verifier.
    """
    if not math.isfinite(now):
        raise LocalProtocolError(f"now must be a finite time, got {now!r}")
    _check_int("lifetime", lifetime, 1, _U64_MAX)
    if issuer_role is not None and role > issuer_role:
        raise LocalProtocolError(
            f"a {issuer_role.label} can't invite someone as {role.label}: that is above their role"
        )
    start = math.floor(now) if not_before is None else not_before
    invite = Invite(
        room_id=room_id,
        room_name=room_name,
        issuer=issuer.public_key,
        role=role,
        not_before=start,
        expires_at=start + lifetime,
        nonce=nacl.utils.random(NONCE_SIZE) if nonce is None else nonce,
        audience=audience,
        max_uses=max_uses,
        addresses=addresses,
        bootstrap_urls=bootstrap_urls,
    )
    return invite.sign(issuer)


# --- helpers -------------------------------------------------------------------------------


def _malformed(message: str) -> InviteError:
    return InviteError(InviteProblem.MALFORMED, message)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _read_texts(reader: Reader, limit: int, max_bytes: int, what: str) -> tuple[str, ...]:
    count = reader.u8()
    if count > limit:
        raise WireError(f"{count} {what}, at most {limit} allowed")
    return tuple(reader.text(max_bytes) for _ in range(count))


def _decode_body(body: bytes) -> Invite:
    reader = Reader(body, "invite")
    try:
        version = reader.u8()
        room_id = RoomId(reader.fixed(ROOM_ID_SIZE))
        room_name = reader.text(MAX_ROOM_NAME_BYTES)
        issuer = PublicKey(reader.fixed(PUBLIC_KEY_SIZE))
        audience = PublicKey(reader.fixed(PUBLIC_KEY_SIZE)) if reader.boolean() else None
        role = Role.from_wire(reader.u8())
        not_before = reader.u64()
        expires_at = reader.u64()
        nonce = reader.fixed(NONCE_SIZE)
        max_uses = reader.u16()
        addresses = _read_texts(reader, MAX_ADDRESSES, MAX_ADDRESS_BYTES, "addresses")
        urls = _read_texts(reader, MAX_BOOTSTRAP_URLS, MAX_URL_BYTES, "bootstrap URLs")
        reader.finish()
    except WireError as exc:
        raise _malformed(f"invite is damaged or incomplete ({exc})") from None
    try:
        return Invite(
            version=version,
            room_id=room_id,
            room_name=room_name,
            issuer=issuer,
            audience=audience,
            role=role,
            not_before=not_before,
            expires_at=expires_at,
            nonce=nonce,
            max_uses=max_uses,
            addresses=addresses,
            bootstrap_urls=urls,
        )
    except LocalProtocolError as exc:
        raise _malformed(f"invite is invalid: {exc}") from None


def _utc(timestamp: int) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    except (OverflowError, ValueError, OSError):
        return f"unix time {timestamp}"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    """A rough duration for people: ``45 s``, ``3 min``, ``2 h 5 min``, ``4 days``."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min"
    if total < 2 * 86400:
        hours, minutes = divmod(total // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days = total // 86400
    return f"{days} days"
