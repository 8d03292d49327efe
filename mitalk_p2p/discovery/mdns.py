"""zeroconf under trio: advertise a room, browse for rooms.

zeroconf runs its own threads: an asyncio loop that owns the multicast sockets,
and one thread per :class:`~zeroconf.ServiceBrowser` that calls listeners.  Every
blocking zeroconf call (opening, registering, updating, withdrawing, closing) runs
in a trio worker thread; a browser's listener resolves each service in the
browser's own thread and hands the result to trio *only* through a
:class:`TokenBridge` (``TrioToken.run_sync_soon``), so all room state lives in the
trio thread.

mDNS sends multicast on every chosen interface.  ``MITALK_MDNS=off`` in the
environment turns all of it off: :func:`open_zeroconf` then refuses to open
anything (the test suite sets it; mDNS tests opt back in inside network namespaces
they create).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Final, Generic, TypeVar

import attrs
import ifaddr
import trio
from zeroconf import Error as ZeroconfError
from zeroconf import (
    InterfaceChoice,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

from ..core.ids import RoomId
from ..runtime.addresses import format_address
from .room_record import SERVICE_TYPE, RecordError, RoomRecord, instance_name
from .switch import MDNS_ENV, MdnsError, mdns_allowed

logger = logging.getLogger(__name__)

RESOLVE_TIMEOUT_MS: Final = 3000
"""How long a browser waits for a newly seen service's records (SRV, TXT, addresses)."""
UPDATE_INTERVAL: Final = 2.0
"""At most one TXT update per this many seconds; later changes are coalesced."""
RECORD_TTL: Final = 120
"""TTL of every record we publish: a host that vanishes without a goodbye ages out in 2 min."""
EVENT_BUFFER: Final = 256

T = TypeVar("T")
ZeroconfFactory = Callable[[list[str] | InterfaceChoice], Zeroconf]


def default_zeroconf(interfaces: list[str] | InterfaceChoice) -> Zeroconf:
    """A zeroconf instance on ``interfaces`` in the calling thread's network namespace.

    Addresses no interface has are refused first: zeroconf would fail on them only
    after opening its listening socket, and leak it.
    """
    if isinstance(interfaces, list):
        local = set()
        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                local.add(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
        missing = [address for address in interfaces if address not in local]
        if missing:
            raise OSError(errno.EADDRNOTAVAIL, f"no interface has the address {missing[0]}")
    return Zeroconf(interfaces=interfaces)


@asynccontextmanager
async def open_zeroconf(
    interfaces: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    create: ZeroconfFactory = default_zeroconf,
) -> AsyncIterator[Zeroconf]:
    """A running zeroconf on ``interfaces`` (IP addresses; empty: every interface).

    ``create`` builds the instance (in a worker thread); tests pass one that does so
    inside a network namespace.  Raises :class:`MdnsError` if mDNS is turned off or
    can't start.  On exit, zeroconf says goodbye for anything still registered and
    closes its sockets and threads.
    """
    if not mdns_allowed(env):
        raise MdnsError(f"mDNS is turned off ({MDNS_ENV}=off in the environment)")
    choice: list[str] | InterfaceChoice = list(interfaces) or InterfaceChoice.All
    try:
        zc = await trio.to_thread.run_sync(create, choice)
    except (OSError, RuntimeError, ValueError, ZeroconfError) as exc:
        where = ", ".join(interfaces) or "any interface"
        raise MdnsError(f"mDNS could not start on {where}: {exc}") from None
    try:
        yield zc
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(zc.close)


# --- the bridge from foreign threads into trio ---------------------------------------


@attrs.define(eq=False)
class TokenBridge(Generic[T]):
    """Hands items from any thread to ``handle`` in the trio thread, via the run's token.

    :meth:`post` never blocks and never raises: once the bridge is closed or the trio
    run is over, items are dropped and counted.  ``handle`` runs in the trio thread
    and must not raise (an exception there would crash the run), so one that does is
    logged and counted.
    """

    token: trio.lowlevel.TrioToken
    handle: Callable[[T], None]
    delivered: int = 0
    undeliverable: int = 0
    failed: int = 0
    _closed: bool = False

    @classmethod
    def here(cls, handle: Callable[[T], None]) -> TokenBridge[T]:
        """A bridge into the current trio run."""
        return cls(trio.lowlevel.current_trio_token(), handle)

    def post(self, item: T) -> bool:
        """From any thread: schedule ``handle(item)`` in trio.  False if it can't be."""
        if self._closed:
            self.undeliverable += 1
            return False
        try:
            self.token.run_sync_soon(self._run, item)
        except trio.RunFinishedError:
            self.undeliverable += 1
            return False
        return True

    def close(self) -> None:
        """From the trio thread: drop whatever is posted from now on."""
        self._closed = True

    def _run(self, item: T) -> None:
        if self._closed:
            self.undeliverable += 1
            return
        try:
            self.handle(item)
        except Exception:
            self.failed += 1
            logger.exception("a zeroconf result could not be handled")
        else:
            self.delivered += 1


# --- browsing ------------------------------------------------------------------------


@attrs.frozen
class RoomSeen:
    """A room appeared, or its record changed (``updated``)."""

    record: RoomRecord
    instance: str
    """The DNS-SD service name, unique on the LAN."""
    hosts: tuple[str, ...]
    """The advertised IP addresses."""
    media_port: int
    updated: bool = False

    @property
    def control_addresses(self) -> tuple[str, ...]:
        return tuple(format_address(host, self.record.control_port) for host in self.hosts)

    @property
    def media_addresses(self) -> tuple[str, ...]:
        return tuple(format_address(host, self.media_port) for host in self.hosts)


@attrs.frozen
class RoomGone:
    """A room withdrew its record, its record expired, or it became unusable."""

    last: RoomSeen
    """How it was last seen."""

    @property
    def record(self) -> RoomRecord:
        return self.last.record

    @property
    def instance(self) -> str:
        return self.last.instance


RoomEvent = RoomSeen | RoomGone


@attrs.frozen
class BrowserStatistics:
    services_resolved: int
    records_ignored: int
    """Services whose TXT record was malformed, or that never resolved."""
    events_dropped: int
    """Events not queued because nobody read ``events`` (``rooms`` is still current)."""
    bridge_failures: int


@attrs.frozen
class _Resolved:
    name: str
    record: RoomRecord
    hosts: tuple[str, ...]
    port: int


@attrs.frozen
class _Removed:
    name: str


@attrs.frozen
class _Ignored:
    name: str
    reason: str


_Result = _Resolved | _Removed | _Ignored


@attrs.define(eq=False)
class RoomBrowser:
    """The rooms on the LAN right now, and the changes as events.  Trio thread only."""

    _send: trio.MemorySendChannel[RoomEvent]
    events: trio.MemoryReceiveChannel[RoomEvent]
    rooms: dict[str, RoomSeen] = attrs.Factory(dict)
    """By instance name."""
    version: int = 0
    """Counts the changes to ``rooms``."""
    _changed: trio.Event = attrs.Factory(trio.Event)
    _resolved: int = 0
    _ignored: int = 0
    _dropped: int = 0
    _bridge: TokenBridge[_Result] | None = None

    def statistics(self) -> BrowserStatistics:
        failures = self._bridge.failed if self._bridge is not None else 0
        return BrowserStatistics(self._resolved, self._ignored, self._dropped, failures)

    def with_room_id(self, room_id: RoomId) -> list[RoomSeen]:
        return [seen for seen in self.rooms.values() if seen.record.room_id == room_id]

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds; re-checked after every result from zeroconf."""
        while not condition():
            await self._changed.wait()

    async def wait_changed(self, since: int) -> None:
        """Return once ``version`` differs from ``since``."""
        while self.version == since:
            await self._changed.wait()

    def _apply(self, result: _Result) -> None:
        event: RoomEvent | None = None
        if isinstance(result, _Resolved):
            self._resolved += 1
            known = self.rooms.get(result.name)
            seen = RoomSeen(
                result.record, result.name, result.hosts, result.port, updated=known is not None
            )
            if known is None or attrs.evolve(known, updated=True) != seen:
                self.rooms[result.name] = seen
                event = seen
        else:
            if isinstance(result, _Ignored):
                self._ignored += 1
                logger.info("ignored the mDNS record %r: %s", result.name, result.reason)
            gone = self.rooms.pop(result.name, None)
            if gone is not None:
                event = RoomGone(gone)
        if event is not None:
            self.version += 1
            try:
                self._send.send_nowait(event)
            except trio.WouldBlock:
                self._dropped += 1
        self._changed.set()
        self._changed = trio.Event()


def _usable_hosts(info: ServiceInfo) -> tuple[str, ...]:
    """The addresses a peer can dial: IPv4, and IPv6 other than link-local (needs a scope)."""
    hosts = []
    for text in info.parsed_addresses():
        try:
            parsed = ipaddress.ip_address(text)
        except ValueError:
            continue
        if parsed.version == 6 and parsed.is_link_local:
            continue
        hosts.append(str(parsed))
    return tuple(dict.fromkeys(hosts))


@attrs.define(eq=False)
class _Listener:
    """Runs in the ServiceBrowser's thread: resolves services and posts the results."""

    bridge: TokenBridge[_Result]

    def on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        try:
            self.bridge.post(self._resolve(zeroconf, service_type, name, state_change))
        except Exception as exc:  # nothing may escape into zeroconf's thread
            logger.exception("resolving %r failed", name)
            self.bridge.post(_Ignored(name, f"resolution failed: {exc}"))

    @staticmethod
    def _resolve(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> _Result:
        if state_change is ServiceStateChange.Removed:
            return _Removed(name)
        info = zeroconf.get_service_info(service_type, name, timeout=RESOLVE_TIMEOUT_MS)
        if info is None or info.port is None:
            return _Ignored(name, "it did not resolve")
        try:
            record = RoomRecord.from_properties(info.properties)
        except RecordError as exc:
            return _Ignored(name, str(exc))
        hosts = _usable_hosts(info)
        if not hosts:
            return _Ignored(name, "it has no usable address")
        return _Resolved(name, record, hosts, info.port)


@asynccontextmanager
async def open_room_browser(zc: Zeroconf) -> AsyncIterator[RoomBrowser]:
    """Browse for rooms until the block exits (``zc`` from :func:`open_zeroconf`)."""
    send, receive = trio.open_memory_channel[RoomEvent](EVENT_BUFFER)
    browser = RoomBrowser(send, receive)
    bridge: TokenBridge[_Result] = TokenBridge.here(browser._apply)
    browser._bridge = bridge
    listener = _Listener(bridge)
    service_browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[listener.on_change])
    try:
        yield browser
    finally:
        bridge.close()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(service_browser.cancel)
        send.close()
        receive.close()


# --- advertising ---------------------------------------------------------------------


@attrs.frozen
class Advert:
    """What to publish: the TXT record, the addresses (A/AAAA) and the media port (SRV)."""

    record: RoomRecord
    hosts: tuple[str, ...]
    media_port: int


def service_info(
    advert: Advert, *, name: str | None = None, server: str | None = None
) -> ServiceInfo:
    """The zeroconf service for ``advert`` (``name``/``server`` keep a registered one's)."""
    record = advert.record
    if name is None:
        name = f"{instance_name(record.name, record.host_key)}.{SERVICE_TYPE}"
    if server is None:  # unique per advertiser, so two never fight over one host name
        server = f"mitalk-{record.host_key.short.lower()}-{secrets.token_hex(4)}.local."
    return ServiceInfo(
        SERVICE_TYPE,
        name,
        port=advert.media_port,
        properties=dict(record.to_properties()),
        server=server,
        host_ttl=RECORD_TTL,
        other_ttl=RECORD_TTL,
        addresses=[ipaddress.ip_address(host).packed for host in advert.hosts],
    )


@attrs.define(eq=False)
class RoomAdvertiser:
    """A registered room.  :meth:`update` republishes it, at most once per ``min_interval``."""

    zc: Zeroconf
    info: ServiceInfo
    min_interval: float = UPDATE_INTERVAL
    updates_sent: int = 0
    update_failures: int = 0
    _pending: Advert | None = None
    _wake: trio.Event = attrs.Factory(trio.Event)

    @property
    def name(self) -> str:
        """The registered service name (zeroconf renames it if it clashed)."""
        return self.info.name

    def update(self, advert: Advert) -> None:
        """Publish ``advert`` soon; updates closer together than ``min_interval`` coalesce."""
        self._pending = advert
        self._wake.set()

    async def _apply_updates(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            advert, self._pending = self._pending, None
            if advert is None:
                continue
            info = service_info(advert, name=self.info.name, server=self.info.server)
            try:
                await trio.to_thread.run_sync(self.zc.update_service, info)
            except (ZeroconfError, OSError, RuntimeError) as exc:
                self.update_failures += 1
                logger.warning("could not update the room's mDNS record: %s", exc)
            else:
                self.info = info
                self.updates_sent += 1
            await trio.sleep(self.min_interval)


@asynccontextmanager
async def open_room_advertiser(
    zc: Zeroconf, advert: Advert, *, min_interval: float = UPDATE_INTERVAL
) -> AsyncIterator[RoomAdvertiser]:
    """Register ``advert`` (probing for a unique name takes about 1.5 s) until the block exits.

    On exit the record is withdrawn with goodbye packets, so browsers drop it at once.
    """
    info = service_info(advert)
    try:
        await trio.to_thread.run_sync(partial(zc.register_service, info, allow_name_change=True))
    except (ZeroconfError, OSError, RuntimeError) as exc:
        raise MdnsError(f"could not advertise the room over mDNS: {exc}") from None
    advertiser = RoomAdvertiser(zc, info, min_interval)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(advertiser._apply_updates)
            yield advertiser
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            try:
                await trio.to_thread.run_sync(zc.unregister_service, advertiser.info)
            except (ZeroconfError, OSError, RuntimeError) as exc:
                logger.warning("could not withdraw the room's mDNS record: %s", exc)
