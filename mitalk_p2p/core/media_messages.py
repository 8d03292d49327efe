"""Media-plane messages: the ones on secure links, and the tree probe datagram.

Link messages share the control envelope ``version:u8 kind:u8 payload`` with
kinds from 32 up, so a peer routes a message by its second byte.  They travel
only over pairwise Noise links, which authenticate the sender and keep sender
keys secret; nothing here is signed again.

* :class:`KeyGrant` (speaker → member): a sender key and its generation.
* :class:`KeyAck` (member → speaker): the grant arrived, so a rotation can complete.
* :class:`KeyRequest` (member → speaker): a verified frame arrived that no held key opens.
* :class:`RelayOffer` (member → host): media address, relay capacity, measured RTT.
* :class:`TreePosition` (host → member): parent, backup parent and children.
* :class:`ParentSwitched` (member → host): an orphan moved to its backup parent.
* :class:`ChildLost` (parent → host): a child stopped answering.
* :class:`ChildFound` (parent → host): a child it was not given (or lost) probes it.

:class:`Probe` is a UDP datagram exchanged by tree neighbours several times a
second: liveness, RTT and loss for each edge, and (in a parent's answer) the
parent's path to the root, by which a child detects a loop.  A member also
asks its backup parent now and then (:attr:`ProbeRole.WITNESS`) to be sent a
sample of the frames the backup verifies (see :mod:`.witness`).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable

import attrs

from .control import PROTOCOL_VERSION
from .errors import LocalProtocolError, WireError
from .identity import PUBLIC_KEY_SIZE, PublicKey
from .media_frame import KEY_SIZE, KeyGeneration
from .wire import Reader, Writer

MAX_LINK_MESSAGE = 16 * 1024
MAX_ADDRESS_LENGTH = 255
MAX_TREE_CHILDREN = 64
MAX_RELAY_CAPACITY = 64


class MediaKind(enum.IntEnum):
    KEY_GRANT = 32
    KEY_ACK = 33
    KEY_REQUEST = 34
    RELAY_OFFER = 35
    TREE_POSITION = 36
    PARENT_SWITCHED = 37
    CHILD_LOST = 38
    CHILD_FOUND = 39


FIRST_MEDIA_KIND = min(MediaKind)


def is_media_message(data: bytes) -> bool:
    """Whether a link message belongs to the media plane (by its kind byte)."""
    return len(data) >= 2 and data[1] >= FIRST_MEDIA_KIND


def _generation(r: Reader) -> KeyGeneration:
    return KeyGeneration(r.u16(), r.u16())


def _put_generation(w: Writer, generation: KeyGeneration) -> Writer:
    return w.u16(generation.epoch).u16(generation.step)


def _key(r: Reader) -> PublicKey:
    return PublicKey(r.fixed(PUBLIC_KEY_SIZE))


@attrs.frozen(repr=False)
class KeyGrant:
    speaker_index: int
    generation: KeyGeneration
    secret: bytes = attrs.field(repr=False)

    def encode(self) -> bytes:
        w = Writer().u32(self.speaker_index)
        return _put_generation(w, self.generation).fixed(self.secret, KEY_SIZE).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> KeyGrant:
        r = Reader(data, "key grant")
        grant = cls(r.u32(), _generation(r), r.fixed(KEY_SIZE))
        r.finish()
        return grant

    def __repr__(self) -> str:
        return f"KeyGrant(speaker={self.speaker_index}, {self.generation}, secret=<hidden>)"


@attrs.frozen
class KeyAck:
    generation: KeyGeneration

    def encode(self) -> bytes:
        return _put_generation(Writer(), self.generation).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> KeyAck:
        r = Reader(data, "key ack")
        ack = cls(_generation(r))
        r.finish()
        return ack


@attrs.frozen
class KeyRequest:
    generation: KeyGeneration

    def encode(self) -> bytes:
        return _put_generation(Writer(), self.generation).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> KeyRequest:
        r = Reader(data, "key request")
        request = cls(_generation(r))
        r.finish()
        return request


@attrs.frozen
class RelayOffer:
    address: str
    capacity: int
    rtt_ms: int = 0
    """Median RTT on this member's tree edges; 0 when not measured yet."""

    def encode(self) -> bytes:
        return Writer().text(self.address).u8(self.capacity).u32(self.rtt_ms).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> RelayOffer:
        r = Reader(data, "relay offer")
        address, capacity, rtt = r.text(MAX_ADDRESS_LENGTH), r.u8(), r.u32()
        r.finish()
        if capacity > MAX_RELAY_CAPACITY:
            raise WireError(f"relay capacity {capacity} exceeds {MAX_RELAY_CAPACITY}")
        return cls(address, capacity, rtt)


@attrs.frozen
class Neighbor:
    key: PublicKey
    address: str

    def encode(self, w: Writer) -> None:
        w.fixed(self.key.raw, PUBLIC_KEY_SIZE).text(self.address)

    @classmethod
    def decode(cls, r: Reader) -> Neighbor:
        return cls(_key(r), r.text(MAX_ADDRESS_LENGTH))


def _optional_neighbor(r: Reader) -> Neighbor | None:
    return Neighbor.decode(r) if r.boolean() else None


def _put_optional(w: Writer, neighbor: Neighbor | None) -> None:
    w.boolean(neighbor is not None)
    if neighbor is not None:
        neighbor.encode(w)


@attrs.frozen
class TreePosition:
    version: int
    parent: Neighbor | None
    backup: Neighbor | None
    children: tuple[Neighbor, ...]
    depth: int = 0

    def encode(self) -> bytes:
        w = Writer().u32(self.version).u8(self.depth)
        _put_optional(w, self.parent)
        _put_optional(w, self.backup)
        w.u8(len(self.children))
        for child in self.children:
            child.encode(w)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> TreePosition:
        r = Reader(data, "tree position")
        version, depth = r.u32(), r.u8()
        parent, backup = _optional_neighbor(r), _optional_neighbor(r)
        count = r.u8()
        if count > MAX_TREE_CHILDREN:
            raise WireError(f"tree position lists {count} children, limit {MAX_TREE_CHILDREN}")
        children = tuple(Neighbor.decode(r) for _ in range(count))
        r.finish()
        return cls(version, parent, backup, children, depth)


class SwitchReason(enum.IntEnum):
    SILENT = 0
    """The parent stopped answering probes."""
    CORRUPT = 1
    """The parent forwarded frames that failed verification."""
    DETACHED = 2
    """The parent's path to the root ran through this peer (a loop) or stopped reaching the root."""
    LOSSY = 3
    """The parent answered probes but passed on too few of the speakers' frames."""


@attrs.frozen
class ParentSwitched:
    version: int
    old_parent: PublicKey
    new_parent: PublicKey
    reason: SwitchReason = SwitchReason.SILENT

    def encode(self) -> bytes:
        w = Writer().u32(self.version).fixed(self.old_parent.raw, PUBLIC_KEY_SIZE)
        return w.fixed(self.new_parent.raw, PUBLIC_KEY_SIZE).u8(self.reason).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> ParentSwitched:
        r = Reader(data, "parent switched")
        version, old, new, reason = r.u32(), _key(r), _key(r), r.u8()
        r.finish()
        try:
            return cls(version, old, new, SwitchReason(reason))
        except ValueError:
            raise WireError(f"unknown parent switch reason {reason}") from None


@attrs.frozen
class ChildLost:
    version: int
    child: PublicKey

    def encode(self) -> bytes:
        return Writer().u32(self.version).fixed(self.child.raw, PUBLIC_KEY_SIZE).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> ChildLost:
        r = Reader(data, "child lost")
        lost = cls(r.u32(), _key(r))
        r.finish()
        return lost


@attrs.frozen
class ChildFound:
    """A child the host did not place under this relay (or that it lost since) probes it."""

    version: int
    child: PublicKey

    def encode(self) -> bytes:
        return Writer().u32(self.version).fixed(self.child.raw, PUBLIC_KEY_SIZE).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> ChildFound:
        r = Reader(data, "child found")
        found = cls(r.u32(), _key(r))
        r.finish()
        return found


MediaMessage = (
    KeyGrant
    | KeyAck
    | KeyRequest
    | RelayOffer
    | TreePosition
    | ParentSwitched
    | ChildLost
    | ChildFound
)

_KINDS: dict[type, MediaKind] = {
    KeyGrant: MediaKind.KEY_GRANT,
    KeyAck: MediaKind.KEY_ACK,
    KeyRequest: MediaKind.KEY_REQUEST,
    RelayOffer: MediaKind.RELAY_OFFER,
    TreePosition: MediaKind.TREE_POSITION,
    ParentSwitched: MediaKind.PARENT_SWITCHED,
    ChildLost: MediaKind.CHILD_LOST,
    ChildFound: MediaKind.CHILD_FOUND,
}
_DECODERS: dict[MediaKind, Callable[[bytes], MediaMessage]] = {
    MediaKind.KEY_GRANT: KeyGrant.decode,
    MediaKind.KEY_ACK: KeyAck.decode,
    MediaKind.KEY_REQUEST: KeyRequest.decode,
    MediaKind.RELAY_OFFER: RelayOffer.decode,
    MediaKind.TREE_POSITION: TreePosition.decode,
    MediaKind.PARENT_SWITCHED: ParentSwitched.decode,
    MediaKind.CHILD_LOST: ChildLost.decode,
    MediaKind.CHILD_FOUND: ChildFound.decode,
}


def encode_media_message(message: MediaMessage) -> bytes:
    return bytes([PROTOCOL_VERSION, _KINDS[type(message)]]) + message.encode()


def decode_media_message(data: bytes) -> MediaMessage:
    """Open a media link message.  Raises :class:`WireError` on anything malformed."""
    if len(data) > MAX_LINK_MESSAGE:
        raise WireError(f"media message of {len(data)} bytes exceeds {MAX_LINK_MESSAGE}")
    if len(data) < 2 or data[0] != PROTOCOL_VERSION:
        raise WireError("media message is truncated or of an unsupported version")
    try:
        kind = MediaKind(data[1])
    except ValueError:
        raise WireError(f"unknown media message kind {data[1]}") from None
    return _DECODERS[kind](data[2:])


# --- the probe datagram ------------------------------------------------------------

PROBE_TYPE = 0x12
"""First byte of a probe datagram: protocol version 1, kind 2."""
_PROBE = struct.Struct(">B4s32sIBIIIBB")
MAX_PROBE_PATH = 16
"""Most ancestors a probe names; a deeper sender names its nearest ones."""
_ROOTED = 0x01
_LAGGING = 0x04
_FLAGS = _ROOTED | _LAGGING
_MAX_PATH_BYTES = MAX_PROBE_PATH * PUBLIC_KEY_SIZE


def encode_path(keys: tuple[PublicKey, ...]) -> bytes:
    """A probe path: the raw keys, concatenated (at most :data:`MAX_PROBE_PATH` of them)."""
    return b"".join(key.raw for key in keys[:MAX_PROBE_PATH])


def path_keys(path: bytes) -> tuple[PublicKey, ...]:
    """The keys in a probe path, nearest first."""
    return tuple(
        PublicKey(path[i : i + PUBLIC_KEY_SIZE]) for i in range(0, len(path), PUBLIC_KEY_SIZE)
    )


def path_holds(path: bytes, key: PublicKey) -> bool:
    """Whether ``key`` is one of the keys in a probe path."""
    raw = key.raw
    at = path.find(raw)
    while at >= 0:
        if at % PUBLIC_KEY_SIZE == 0:
            return True
        at = path.find(raw, at + 1)
    return False


class ProbeRole(enum.IntEnum):
    CHILD = 1
    """From a child to its parent: "I am your child; forward me the room's frames"."""
    PARENT = 2
    """A parent's answer."""
    WITNESS = 3
    """From a member to its backup parent: "send me a sample of the frames you verify".

    Not a tree edge and not answered (see :mod:`.witness`)."""
    WITNESS_END = 4
    """From a member to a peer that is no longer its backup parent: "stop the samples"."""


@attrs.frozen
class Probe:
    """A tree heartbeat.  ``echo_id``/``echo_hold_us`` let the sender of ``probe_id`` time the
    round trip: the answerer says which probe it saw last and how long it held it.

    ``path`` names the sender's ancestors, its parent first, as far as the sender
    knows them (at most :data:`MAX_PROBE_PATH`); ``rooted`` says whether that chain
    reaches the root over edges that are alive right now.  A child finding itself
    in its parent's path has found a loop.  The path stays in its wire form, the
    raw keys concatenated (probes are the most frequent datagram): see
    :func:`encode_path`, :func:`path_keys` and :func:`path_holds`.

    ``lagging`` is about frames withheld (:mod:`.witness`).  In a parent's
    answer: the lag its children see is being dealt with above them.  In a
    child's probe: the child sees this parent lag.  In a witness request: the
    sender's parent lags, so the backup should sample densely.
    """

    room_tag: bytes
    sender: PublicKey
    tree_version: int
    role: ProbeRole
    probe_id: int
    echo_id: int
    echo_hold_us: int
    rooted: bool = attrs.field(default=True, kw_only=True)
    path: bytes = attrs.field(default=b"", kw_only=True)
    lagging: bool = attrs.field(default=False, kw_only=True)

    def encode(self) -> bytes:
        return encode_probe(
            self.room_tag,
            self.sender,
            self.tree_version,
            self.role,
            self.probe_id,
            self.echo_id,
            self.echo_hold_us,
            rooted=self.rooted,
            path=self.path,
            lagging=self.lagging,
        )

    @classmethod
    def decode(cls, data: bytes) -> Probe:
        if len(data) < _PROBE.size:
            raise WireError(f"probe of {len(data)} bytes, expected at least {_PROBE.size}")
        kind, tag, sender, version, role, probe_id, echo_id, hold, flags, count = (
            _PROBE.unpack_from(data)
        )
        if (
            kind != PROBE_TYPE
            or flags & ~_FLAGS
            or count > MAX_PROBE_PATH
            or len(data) != _PROBE.size + count * PUBLIC_KEY_SIZE
        ):
            raise _probe_error(data, kind, flags, count)
        try:
            probe_role = ProbeRole(role)
        except ValueError:
            raise WireError(f"unknown probe role {role}") from None
        return cls(
            tag,
            PublicKey(sender),
            version,
            probe_role,
            probe_id,
            echo_id,
            hold,
            rooted=bool(flags & _ROOTED),
            path=data[_PROBE.size :] if count else b"",
            lagging=bool(flags & _LAGGING),
        )


def encode_probe(
    room_tag: bytes,
    sender: PublicKey,
    tree_version: int,
    role: ProbeRole,
    probe_id: int,
    echo_id: int,
    echo_hold_us: int,
    *,
    rooted: bool,
    path: bytes,
    lagging: bool = False,
) -> bytes:
    """A probe datagram, without building a :class:`Probe` first (the hottest send path).

    A path longer than :data:`MAX_PROBE_PATH` keys keeps its nearest ones.
    """
    if len(path) % PUBLIC_KEY_SIZE:
        raise LocalProtocolError(f"a probe path of {len(path)} bytes is not whole keys")
    if len(path) > _MAX_PATH_BYTES:
        path = path[:_MAX_PATH_BYTES]
    head = _PROBE.pack(
        PROBE_TYPE,
        room_tag,
        sender.raw,
        tree_version,
        role,
        probe_id,
        echo_id,
        min(echo_hold_us, 0xFFFF_FFFF),
        (_ROOTED if rooted else 0) | (_LAGGING if lagging else 0),
        len(path) // PUBLIC_KEY_SIZE,
    )
    return head + path if path else head


def _probe_error(data: bytes, kind: int, flags: int, count: int) -> WireError:
    """What is wrong with a probe whose fixed part did not add up."""
    if kind != PROBE_TYPE:
        return WireError(f"datagram type {kind:#04x} is not a probe")
    if flags & ~_FLAGS:
        return WireError(f"unknown probe flags {flags:#04x}")
    if count > MAX_PROBE_PATH:
        return WireError(f"probe path of {count} entries exceeds {MAX_PROBE_PATH}")
    return WireError(f"probe of {len(data)} bytes does not fit its {count} path entries")
