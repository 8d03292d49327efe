"""One UDP socket per peer, for media frames and tree probes.

A relay in a busy room receives a frame every few milliseconds from its parent
and sends eight copies on.  Going through the trio scheduler for every packet
would cost more than handling it, so :meth:`UdpEndpoint.receive_batch` waits
for the socket to become readable once and then drains what the kernel holds
with non-blocking calls, and :meth:`UdpEndpoint.send` never waits: a datagram
the kernel can't take right now is dropped and counted, as the network would
have done with it anyway.
"""

from __future__ import annotations

import errno
import math
import socket
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

from .addresses import format_address, parse_address
from .media_meter import MediaMeter

_SO_TIMESTAMPNS: Final = 35
"""Linux's SO_TIMESTAMPNS (also the ancillary message type); absent from :mod:`socket`."""
_TIMESPEC: Final = struct.Struct("@qq")
_TIMESTAMP_SPACE: Final = socket.CMSG_SPACE(_TIMESPEC.size)

MAX_DATAGRAM = 65_535
DEFAULT_MAX_BATCH = 256
MAX_REMEMBERED_DESTINATIONS = 4096
SOCKET_BUFFER_BYTES = 1 << 20
"""Receive and send buffers asked of the kernel: about a second of a busy relay's traffic."""

# Errors a UDP socket reports for one datagram (an ICMP error for an earlier send,
# an oversized or unroutable datagram); the socket itself is still fine.
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EMSGSIZE,
        errno.EINVAL,
        errno.EADDRNOTAVAIL,
        errno.ENOBUFS,
        errno.EPERM,
    }
)


@attrs.frozen
class UdpStatistics:
    datagrams_received: int
    datagrams_sent: int
    send_dropped: int
    """Datagrams the kernel would not take at once (its send buffer was full)."""
    send_errors: int
    """Datagrams refused outright: bad address, too large, unreachable."""
    receive_errors: int
    batches: int
    largest_batch: int


@attrs.define(eq=False, repr=False)
class UdpEndpoint:
    """A bound, non-blocking UDP socket.  Open it with :func:`open_udp_endpoint`."""

    _sock: socket.socket
    local_address: str
    _counts: dict[str, int] = attrs.Factory(
        lambda: dict.fromkeys(
            (
                "datagrams_received",
                "datagrams_sent",
                "send_dropped",
                "send_errors",
                "receive_errors",
                "batches",
                "largest_batch",
            ),
            0,
        )
    )
    # Destinations already parsed: a relay sends to the same few children 50 times a second.
    _destinations: dict[str, tuple[str, int]] = attrs.Factory(dict)
    _closed: bool = False
    meter: MediaMeter | None = None
    """Benchmark instrumentation (see :mod:`.media_meter`); set with :meth:`attach_meter`."""
    _kernel_timestamps: bool = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"UdpEndpoint({self.local_address}, {state})"

    async def receive_batch(self, max_batch: int = DEFAULT_MAX_BATCH) -> list[tuple[bytes, str]]:
        """Wait for at least one datagram; return it and whatever else is queued.

        Returns ``(data, "HOST:PORT")`` pairs, at most ``max_batch`` of them.
        Raises :class:`trio.ClosedResourceError` once the endpoint is closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the UDP endpoint is closed")
            meter = self.meter
            arrivals: list[float] | None = None
            if meter is None:
                batch = self._drain(max_batch)
            else:
                meter.draining()
                if self._kernel_timestamps and meter.active:
                    batch, arrivals = self._drain_stamped(max_batch)
                else:
                    batch = self._drain(max_batch)
            if batch:
                if meter is not None:
                    meter.received(batch, arrivals)
                if not waited:
                    # Data was already queued: yield once, so that a busy socket
                    # cannot starve the other tasks.  After a wait for readability
                    # the task has just been scheduled, and a second trip through
                    # the run queue only delays the datagrams.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return batch
            await trio.lowlevel.wait_readable(self._sock)
            waited = True

    def attach_meter(self, meter: MediaMeter | None) -> None:
        """Meter the receive path; the kernel then timestamps each arriving datagram."""
        self.meter = meter
        if meter is not None and not self._kernel_timestamps and sys.platform == "linux":
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            self._kernel_timestamps = True

    def _drain(self, max_batch: int) -> list[tuple[bytes, str]]:
        batch: list[tuple[bytes, str]] = []
        recvfrom = self._sock.recvfrom
        counts = self._counts
        while len(batch) < max_batch:
            try:
                data, source = recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno not in _TRANSIENT_ERRNOS:
                    raise
                counts["receive_errors"] += 1
                continue
            batch.append((data, format_address(source[0], source[1])))
        if batch:
            self._count_batch(len(batch))
        return batch

    def _count_batch(self, size: int) -> None:
        counts = self._counts
        counts["datagrams_received"] += size
        counts["batches"] += 1
        if size > counts["largest_batch"]:
            counts["largest_batch"] = size

    def _drain_stamped(self, max_batch: int) -> tuple[list[tuple[bytes, str]], list[float]]:
        """:meth:`_drain` with each datagram's kernel arrival time (NaN if missing)."""
        batch: list[tuple[bytes, str]] = []
        arrivals: list[float] = []
        recvmsg = self._sock.recvmsg
        while len(batch) < max_batch:
            try:
                data, ancillary, _flags, source = recvmsg(MAX_DATAGRAM, _TIMESTAMP_SPACE)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno not in _TRANSIENT_ERRNOS:
                    raise
                self._counts["receive_errors"] += 1
                continue
            arrival = math.nan
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= 16:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
                    arrival = seconds + nanoseconds / 1e9
            batch.append((data, format_address(source[0], source[1])))
            arrivals.append(arrival)
        if batch:
            self._count_batch(len(batch))
        return batch, arrivals

    def send(self, data: bytes, address: str) -> bool:
        """Send without waiting.  False (and counted) if the datagram could not go."""
        if self._closed:
            raise trio.ClosedResourceError("the UDP endpoint is closed")
        try:
            self._sock.sendto(data, self._destination(address))
        except BlockingIOError:
            self._counts["send_dropped"] += 1
            return False
        except ValueError:
            self._counts["send_errors"] += 1
            return False
        except OSError as exc:
            if exc.errno not in _TRANSIENT_ERRNOS:
                raise
            self._counts["send_errors"] += 1
            return False
        self._counts["datagrams_sent"] += 1
        if self.meter is not None:
            self.meter.sent(data)
        return True

    def _destination(self, address: str) -> tuple[str, int]:
        destination = self._destinations.get(address)
        if destination is None:
            destination = parse_address(address)  # raises AddressError, a ValueError
            if len(self._destinations) >= MAX_REMEMBERED_DESTINATIONS:
                self._destinations.clear()
            self._destinations[address] = destination
        return destination

    def statistics(self) -> UdpStatistics:
        return UdpStatistics(**self._counts)

    def close(self) -> None:
        """Close the socket; a task waiting in :meth:`receive_batch` gets ClosedResourceError."""
        if self._closed:
            return
        self._closed = True
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()


@asynccontextmanager
async def open_udp_endpoint(address: str = "127.0.0.1:0") -> AsyncIterator[UdpEndpoint]:
    """Bind a UDP socket at ``address`` (port 0: any free port) for the block's duration."""
    host, port = parse_address(address, any_port=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        sock.bind((host, port))
        bound_host, bound_port = sock.getsockname()[:2]
        endpoint = UdpEndpoint(sock, format_address(bound_host, bound_port))
    except BaseException:
        sock.close()
        raise
    try:
        await trio.lowlevel.checkpoint()
        yield endpoint
    finally:
        endpoint.close()
