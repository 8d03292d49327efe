"""Optional measurement of one peer's media receive path, for benchmarks.

A :class:`MediaMeter` given in :class:`~.peer_runtime.PeerConfig` is told, for
every batch of datagrams the peer reads, when the batch left the socket, when
the peer started and finished handling it, and which frames it sent on while
doing so.  From that it keeps:

- how long the peer held each frame it relayed, to the ``sendto`` of each
  forwarded copy: from the kernel's arrival timestamp of the datagram
  (``SO_TIMESTAMPNS``, where the socket offers it; ``arrival_us``), from
  reading it off the socket (``hold_us``), and from the moment the peer's task
  started handling the batch (``handling_us``).  Arrival to read is the wait
  for the event loop to run the peer's receive task; read to handling is
  whatever the task yielded to in between;
- the thread CPU time of the receive path (reading, checking, forwarding,
  decrypting), split between batches that forwarded frames and batches that
  did not, so the cost of relaying can be told from the cost of listening;
- the datagrams and bytes received, frames and other datagrams apart.

Without a meter the runtime makes none of these calls.  Counting, and reading
the clocks, happen only while :attr:`MediaMeter.active` is true, so a benchmark
meters exactly its measurement window.  While active, a batch costs four reads
of the thread CPU clock and one of the wall clock per forwarded copy (about
0.2 to 1 µs each, depending on the machine).
"""

from __future__ import annotations

import random
import time
from typing import Final

import attrs

from ..core.media_frame import FRAME_TYPE

MAX_HOLD_SAMPLES: Final = 200_000
"""Hold-time samples kept per peer (a relay with 8 children fills this in about 8 minutes)."""


CPU_SAMPLE_EVERY: Final = 8
"""On average one batch in this many has its CPU time read (see :class:`MediaMeter`)."""


@attrs.define(eq=False)
class MediaMeter:
    """The receive path's timings and counts for one peer.

    Reading the thread CPU clock is a system call (0.4 µs on an idle machine,
    several µs when the cores are contended), so only one batch in
    ``cpu_sample_every``, chosen at random, is timed.  The ``relay_*`` and ``leaf_*`` fields cover
    the timed batches only: they are the numerator and denominators of the CPU
    figures, which are ratios and so need no scaling.
    """

    active: bool = False
    cpu_sample_every: int = CPU_SAMPLE_EVERY
    frames_received: int = 0
    frame_bytes: int = 0
    other_received: int = 0
    other_bytes: int = 0
    forwarded_copies: int = 0
    """Frame copies sent on while handling received batches (every batch)."""
    relay_batches: int = 0
    """Timed batches during which this peer forwarded at least one copy."""
    relay_frames: int = 0
    """Frames in those batches."""
    relay_copies: int = 0
    """Frame copies forwarded in those batches."""
    relay_cpu: float = 0.0
    """Thread CPU seconds spent on those batches."""
    leaf_frames: int = 0
    """Frames in timed batches that forwarded nothing."""
    leaf_cpu: float = 0.0
    """Thread CPU seconds spent on those batches."""
    arrival_us: list[int] = attrs.Factory(list)
    hold_us: list[int] = attrs.Factory(list)
    handling_us: list[int] = attrs.Factory(list)
    _arrivals: dict[bytes, float] = attrs.Factory(dict)
    _read_at: float | None = None
    _handling_at: float | None = None
    _cpu: float = 0.0
    _cpu_at: float = 0.0
    _batch_frames: int = 0
    _batch_copies: int = 0
    _timed: bool = False

    def draining(self) -> None:
        """The socket is about to be read (the start of the batch's CPU time)."""
        if self.active:
            # Chosen at random, not every n-th: a relay's batches come in patterns
            # (a frame, a probe answer, a frame...) that a fixed stride would alias with.
            self._timed = random.random() * self.cpu_sample_every < 1.0
            if self._timed:
                self._cpu_at = time.thread_time()

    def received(
        self, batch: list[tuple[bytes, str]], arrivals: list[float] | None = None
    ) -> None:
        """``batch`` was just read off the socket.

        ``arrivals`` holds the kernel's receive timestamp of each datagram
        (``time.time()`` clock) when the socket provides them.
        """
        if not self.active:
            self._read_at = None
            return
        # A relay forwards a frame's bytes unchanged: a copy is matched to its arrival by them.
        self._arrivals = (
            {data: at for (data, _), at in zip(batch, arrivals, strict=True)} if arrivals else {}
        )
        self._read_at = time.perf_counter()
        if self._timed:
            self._cpu = time.thread_time() - self._cpu_at
        frames = 0
        for data, _source in batch:
            if data and data[0] == FRAME_TYPE:
                frames += 1
                self.frame_bytes += len(data)
            else:
                self.other_received += 1
                self.other_bytes += len(data)
        self.frames_received += frames
        self._batch_frames = frames

    def handling(self) -> None:
        """The peer's task runs again and starts handling the batch."""
        if not self.active or self._read_at is None:
            # Metering started while this batch waited: it is not measured.
            self._handling_at = None
            return
        self._handling_at = time.perf_counter()
        if self._timed:
            self._cpu_at = time.thread_time()
        self._batch_copies = 0

    def sent(self, data: bytes) -> None:
        """A datagram went out; while a batch is handled, a frame sent is a forwarded copy."""
        handling_at = self._handling_at
        if handling_at is None or not data or data[0] != FRAME_TYPE:
            return
        self._batch_copies += 1
        if len(self.hold_us) < MAX_HOLD_SAMPLES and self._read_at is not None:
            now = time.perf_counter()
            self.hold_us.append(round((now - self._read_at) * 1e6))
            self.handling_us.append(round((now - handling_at) * 1e6))
            arrival = self._arrivals.get(data)
            if arrival is not None and arrival == arrival:  # NaN: no timestamp
                self.arrival_us.append(round((time.time() - arrival) * 1e6))

    def handled(self) -> None:
        """The batch is handled and everything it caused is sent."""
        if self._handling_at is None:
            return
        self._handling_at = None
        self.forwarded_copies += self._batch_copies
        if not self._batch_frames or not self._timed:
            return
        cpu = self._cpu + time.thread_time() - self._cpu_at
        if self._batch_copies:
            self.relay_batches += 1
            self.relay_frames += self._batch_frames
            self.relay_copies += self._batch_copies
            self.relay_cpu += cpu
        else:
            self.leaf_frames += self._batch_frames
            self.leaf_cpu += cpu
