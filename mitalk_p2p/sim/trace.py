"""The record of a simulation run: frozen records, and a digest that pins it down.

Tests and scenario expectations read the trace, never log text.  Frame sends and
deliveries are by far the most numerous records, so they are kept in compact
columns and turned into :class:`FrameSent` / :class:`FrameDelivered` records
only when asked for; everything else is kept as records directly.

The digest is a BLAKE2b over a canonical encoding of every record in the order
it happened: peers by their scenario index, times as IEEE-754 doubles.  It
covers events (deliveries and their times, roles, tree changes, elections,
actions), never ciphertext, so it is the same on every run and every machine
for one scenario and seed.
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from collections.abc import Iterator
from typing import Any, TypeVar

import attrs

_DELIVERY = struct.Struct("<BIIId")
_SEND = struct.Struct("<BIId")
R = TypeVar("R")


@attrs.frozen
class FrameSent:
    time: float
    speaker: str
    seq: int


@attrs.frozen
class FrameDelivered:
    time: float
    listener: str
    speaker: str
    seq: int
    latency: float
    """Seconds from the speaker handing the frame to its peer to verified arrival."""


@attrs.frozen
class ActionTaken:
    time: float
    action: str
    peer: str
    detail: str = ""


@attrs.frozen
class ActionRefused:
    time: float
    action: str
    peer: str
    reason: str


@attrs.frozen
class JoinedRoom:
    time: float
    peer: str


@attrs.frozen
class JoinRefused:
    time: float
    peer: str
    reason: str


@attrs.frozen
class LeftRoom:
    time: float
    peer: str
    reason: str


@attrs.frozen
class RoleChanged:
    """The host sequenced a change: ``member`` now has ``role`` (as the host sees it)."""

    time: float
    host: str
    member: str
    role: str
    change: str


@attrs.frozen
class TermObserved:
    """``observer`` started following ``host`` in ``term`` (first time each pair is seen)."""

    time: float
    observer: str
    term: str
    host: str


@attrs.frozen
class ParentChanged:
    time: float
    peer: str
    parent: str | None
    reason: str


@attrs.frozen
class KeyChanged:
    time: float
    speaker: str
    generation: str
    reason: str


@attrs.frozen
class TreePlanned:
    """The host's coordinator replanned the tree (``parents``: child → parent names)."""

    time: float
    host: str
    parents: tuple[tuple[str, str], ...]


Record = (
    FrameSent
    | FrameDelivered
    | ActionTaken
    | ActionRefused
    | JoinedRoom
    | JoinRefused
    | LeftRoom
    | RoleChanged
    | TermObserved
    | ParentChanged
    | KeyChanged
    | TreePlanned
)


@attrs.define(eq=False)
class Trace:
    names: tuple[str, ...]
    """Peer names by scenario index."""
    records: list[Record] = attrs.Factory(list)
    """Every record except frame sends and deliveries, in order."""
    _digest: Any = attrs.Factory(lambda: hashlib.blake2b(person=b"mitalk-trace"))
    _index: dict[str, int] = attrs.field(init=False)
    # Frame deliveries, column by column.
    _d_listener: array[int] = attrs.Factory(lambda: array("I"))
    _d_speaker: array[int] = attrs.Factory(lambda: array("I"))
    _d_seq: array[int] = attrs.Factory(lambda: array("I"))
    _d_time: array[float] = attrs.Factory(lambda: array("d"))
    _d_latency: array[float] = attrs.Factory(lambda: array("d"))
    # Frame sends.
    _s_speaker: array[int] = attrs.Factory(lambda: array("I"))
    _s_seq: array[int] = attrs.Factory(lambda: array("I"))
    _s_time: array[float] = attrs.Factory(lambda: array("d"))

    def __attrs_post_init__(self) -> None:
        self._index = {name: i for i, name in enumerate(self.names)}

    # --- recording -------------------------------------------------------------

    def frame_sent(self, time: float, speaker: int, seq: int) -> None:
        self._s_speaker.append(speaker)
        self._s_seq.append(seq)
        self._s_time.append(time)
        self._digest.update(_SEND.pack(1, speaker, seq, time))

    def frame_delivered(
        self, time: float, listener: int, speaker: int, seq: int, latency: float
    ) -> None:
        self._d_listener.append(listener)
        self._d_speaker.append(speaker)
        self._d_seq.append(seq)
        self._d_time.append(time)
        self._d_latency.append(latency)
        self._digest.update(_DELIVERY.pack(2, listener, speaker, seq, time))

    def add(self, record: Record) -> None:
        self.records.append(record)
        self._digest.update(_canonical(record))

    # --- reading -------------------------------------------------------------------

    @property
    def digest(self) -> str:
        digest: str = self._digest.copy().hexdigest()
        return digest[:32]

    def __len__(self) -> int:
        return len(self.records) + len(self._d_time) + len(self._s_time)

    def sends(self) -> Iterator[FrameSent]:
        names = self.names
        for speaker, seq, time in zip(self._s_speaker, self._s_seq, self._s_time, strict=True):
            yield FrameSent(time, names[speaker], seq)

    def deliveries(self) -> Iterator[FrameDelivered]:
        names = self.names
        columns = zip(
            self._d_time,
            self._d_listener,
            self._d_speaker,
            self._d_seq,
            self._d_latency,
            strict=True,
        )
        for time, listener, speaker, seq, latency in columns:
            yield FrameDelivered(time, names[listener], names[speaker], seq, latency)

    def of_type(self, kind: type[R]) -> list[R]:
        return [r for r in self.records if isinstance(r, kind)]

    # Column access for metrics over millions of deliveries.

    def send_columns(self) -> tuple[array[int], array[int], array[float]]:
        return self._s_speaker, self._s_seq, self._s_time

    def delivery_columns(
        self,
    ) -> tuple[array[int], array[int], array[int], array[float], array[float]]:
        return self._d_listener, self._d_speaker, self._d_seq, self._d_time, self._d_latency

    def index_of(self, name: str) -> int:
        return self._index[name]


def _canonical(record: Record) -> bytes:
    fields = attrs.astuple(record, recurse=True)
    parts = [type(record).__name__]
    parts.extend(repr(value) for value in fields)
    return ("\x1f".join(parts) + "\x1e").encode()
