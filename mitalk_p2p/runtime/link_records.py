"""What travels inside a secure link: channels, and records small enough for Noise.

A Noise transport message carries at most 65,519 bytes of plaintext, and a room
snapshot of a large room is bigger than that.  So a link message is cut into
records: each record's plaintext starts with one flag byte, ``MORE`` when
another record of the same message follows and ``LAST`` on the final one.  The
reassembler refuses a message that grows past ``max_message`` bytes, so a peer
can't make us buffer without bound.

The first byte of every reassembled message names its channel: ``CORE`` for
the room and media messages the core handles, ``CONTACTS`` for the runtime's
own directory of control addresses.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from ..core.errors import RemoteProtocolError
from ..core.handshake import MAX_PLAINTEXT

MORE: Final = 1
LAST: Final = 0
RECORD_PAYLOAD: Final = MAX_PLAINTEXT - 1
DEFAULT_MAX_MESSAGE: Final = 4 << 20
"""4 MiB: a snapshot of a room of several thousand members, with room to spare."""


class Channel(enum.IntEnum):
    CORE = 0
    CONTACTS = 1


class RecordError(RemoteProtocolError):
    """A record with a bad flag, or a message larger than the link allows."""


def split_message(channel: Channel, data: bytes) -> list[bytes]:
    """The record plaintexts that carry ``data`` on ``channel``, in order."""
    body = bytes((channel,)) + data
    records = []
    for start in range(0, len(body), RECORD_PAYLOAD):
        chunk = body[start : start + RECORD_PAYLOAD]
        flag = MORE if start + RECORD_PAYLOAD < len(body) else LAST
        records.append(bytes((flag,)) + chunk)
    return records


@attrs.define
class Reassembler:
    """Joins records back into ``(channel, message)`` pairs."""

    max_message: int = DEFAULT_MAX_MESSAGE
    _parts: list[bytes] = attrs.Factory(list)
    _size: int = 0

    def add(self, record: bytes) -> tuple[Channel, bytes] | None:
        """Take one record; the whole message once its last record arrives."""
        if not record:
            raise RecordError("empty link record")
        flag = record[0]
        if flag not in (MORE, LAST):
            raise RecordError(f"link record flag {flag} is neither MORE nor LAST")
        self._size += len(record) - 1
        if self._size > self.max_message:
            raise RecordError(f"link message exceeds the {self.max_message}-byte limit")
        self._parts.append(record[1:])
        if flag == MORE:
            return None
        body = b"".join(self._parts)
        self._parts, self._size = [], 0
        if not body:
            raise RecordError("link message without a channel byte")
        try:
            channel = Channel(body[0])
        except ValueError:
            raise RecordError(f"unknown link channel {body[0]}") from None
        return channel, body[1:]
