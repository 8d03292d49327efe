"""Who may open a control link: a per-source-address budget, checked before any handshake.

A listener asks :meth:`Admission.admit` for every incoming connection, with the
peer's IP address and ``now``, before it reads a byte: a refused connection is
closed with no handshake state, no websocket and no task of its own.  Each
source address has

* a token bucket of handshakes (``handshake_rate`` per second, up to
  ``handshake_burst`` at once), so one address cannot make this peer spend its
  CPU on Noise handshakes; and
* a cap on the connections it holds open at once (handshakes in progress and
  links), so one address cannot pose as many members: each key of a Sybil
  still needs a connection, and each connection still needs an invite.

An admitted connection holds its slot until :meth:`Admission.release`.

The table of sources is bounded by ``max_sources``: when it is full, the source
seen least recently that holds no connection is forgotten (forgetting one only
refills its bucket early), and when every source holds one, a new source is
refused.  IPv6 sources are counted per /64 network, the block one LAN host can
pick addresses from by itself.

What a LAN user gets by default: one device is one address, and a room's member
makes one or two links to each peer it talks to, so the budget never touches
ordinary use.  A handful of people behind one NAT (a guest network, a VPN) fit
within ``max_links_per_source``.  Loopback sources are exempt (``limit_loopback``
off): every one of them runs on this machine, where the demo, the tests and
the benchmarks run hundreds of peers, and a local process can exhaust the
machine in easier ways than with handshakes.
"""

from __future__ import annotations

import collections
import enum
import ipaddress

import attrs

IPV6_SOURCE_PREFIX = 64


class Verdict(enum.Enum):
    ADMITTED = "admitted"
    RATE_LIMITED = "rate-limited"
    """The source started too many handshakes lately."""
    SOURCE_FULL = "source-full"
    """The source already holds ``max_links_per_source`` connections."""
    TABLE_FULL = "table-full"
    """Every tracked source holds a connection and there is no room for another."""


@attrs.frozen
class AdmissionConfig:
    handshake_rate: float = 2.0
    """Handshakes per second one source address may start, sustained."""
    handshake_burst: int = 16
    """Handshakes one source address may start at once after a quiet spell."""
    max_links_per_source: int = 16
    """Connections (handshakes in progress and links) one source address may hold open."""
    max_sources: int = 1024
    """Source addresses tracked at once: the bound on the table's memory."""
    limit_loopback: bool = False
    """Apply the limits to 127.0.0.0/8 and ::1 too (tests of the limits turn this on)."""


@attrs.frozen
class AdmissionStatistics:
    admitted: int
    exempt: int
    """Connections from loopback, admitted without a budget."""
    refused: dict[str, int]
    """Refusals by :class:`Verdict` value."""
    sources: int
    """Source addresses in the table now."""
    held: int
    """Connections holding a slot now."""

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


@attrs.define
class _Source:
    tokens: float
    updated: float
    held: int = 0


@attrs.define
class Admission:
    """The per-source budget; sans-I/O, ``now`` is any monotonic clock in seconds."""

    config: AdmissionConfig = attrs.Factory(AdmissionConfig)
    _table: collections.OrderedDict[str, _Source] = attrs.Factory(collections.OrderedDict)
    _admitted: int = 0
    _exempt: int = 0
    _held: int = 0
    _refused: collections.Counter[str] = attrs.Factory(collections.Counter)

    def __len__(self) -> int:
        return len(self._table)

    def admit(self, address: str, now: float) -> Verdict:
        """Whether a connection from ``address`` may start its handshake; takes a slot if so."""
        key = self._key(address)
        if key is None:
            self._exempt += 1
            return Verdict.ADMITTED
        config = self.config
        source = self._table.get(key)
        if source is None:
            if len(self._table) >= config.max_sources and not self._forget_one():
                return self._refuse(Verdict.TABLE_FULL)
            source = _Source(float(config.handshake_burst), now)
            self._table[key] = source
        else:
            self._table.move_to_end(key)
            self._refill(source, now)
        if source.held >= config.max_links_per_source:
            return self._refuse(Verdict.SOURCE_FULL)
        if source.tokens < 1.0:
            return self._refuse(Verdict.RATE_LIMITED)
        source.tokens -= 1.0
        source.held += 1
        self._held += 1
        self._admitted += 1
        return Verdict.ADMITTED

    def release(self, address: str, now: float) -> None:
        """A connection :meth:`admit` admitted from ``address`` has ended."""
        key = self._key(address)
        source = self._table.get(key) if key is not None else None
        if source is None or source.held == 0:
            return
        source.held -= 1
        self._held -= 1
        self._refill(source, now)
        if source.held == 0 and source.tokens >= self.config.handshake_burst:
            del self._table[key]  # type: ignore[arg-type]  # key is not None here

    def statistics(self) -> AdmissionStatistics:
        return AdmissionStatistics(
            admitted=self._admitted,
            exempt=self._exempt,
            refused=dict(self._refused),
            sources=len(self._table),
            held=self._held,
        )

    # --- internals -----------------------------------------------------------------

    def _key(self, address: str) -> str | None:
        """The table key for ``address``, or ``None`` when it is exempt."""
        try:
            ip = ipaddress.ip_address(address.strip("[]").partition("%")[0])
        except ValueError:
            return address  # not an IP address: its own source
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback and not self.config.limit_loopback:
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            return str(ipaddress.IPv6Network((ip, IPV6_SOURCE_PREFIX), strict=False))
        return str(ip)

    def _refill(self, source: _Source, now: float) -> None:
        elapsed = max(0.0, now - source.updated)
        burst = float(self.config.handshake_burst)
        source.tokens = min(burst, source.tokens + elapsed * self.config.handshake_rate)
        source.updated = max(source.updated, now)

    def _forget_one(self) -> bool:
        """Drop the least recently seen source that holds no connection, if there is one."""
        for key, source in self._table.items():
            if source.held == 0:
                del self._table[key]
                return True
        return False

    def _refuse(self, verdict: Verdict) -> Verdict:
        self._refused[verdict.value] += 1
        return verdict
