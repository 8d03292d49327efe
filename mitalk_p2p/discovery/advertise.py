"""Keep a running peer's room advertised on the LAN for as long as the peer is its host.

Every peer may run :func:`keep_room_advertised`; it does nothing until the peer is
the host, so after a succession the new host takes over the advertisement, and a
host that steps down or leaves withdraws its record (goodbye packets).  A host that
crashes leaves its record to expire (:data:`~.mdns.RECORD_TTL`).

An *open* room (``mitalk host --open``) also publishes a listener invite in its
record: signed by the host, usable by anyone, up to 65535 times, valid for
:data:`OPEN_INVITE_LIFETIME` and renewed halfway through.  Only the peer that was
started with ``--open`` publishes one; a successor advertises the room without it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Final

import ifaddr
import trio
from zeroconf import Zeroconf

from ..core.errors import LocalProtocolError
from ..core.invite import SignedInvite, create_invite
from ..core.roles import Role
from ..runtime.addresses import parse_address
from ..runtime.peer_runtime import RunningPeer
from .mdns import (
    Advert,
    ZeroconfFactory,
    default_zeroconf,
    open_room_advertiser,
    open_zeroconf,
)
from .room_record import MAX_TOPIC_BYTES, RoomRecord, trim_utf8
from .switch import MdnsError

logger = logging.getLogger(__name__)

OPEN_INVITE_LIFETIME: Final = 3600
OPEN_INVITE_USES: Final = 65535

_Snapshot = tuple[object, ...]


def advertised_hosts(control_host: str) -> tuple[str, ...]:
    """The addresses to advertise for a peer listening on ``control_host``.

    A specific address is advertised as it is; a wildcard (``0.0.0.0``, ``::``) stands
    for every non-loopback address of this machine of that family.
    """
    parsed = ipaddress.ip_address(control_host)
    if not parsed.is_unspecified:
        return (str(parsed),)
    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                continue
            if address.version == parsed.version and not (
                address.is_loopback or address.is_link_local
            ):
                found.append(str(address))
    return tuple(dict.fromkeys(found))


def default_interfaces(control_host: str) -> tuple[str, ...]:
    """Where to speak mDNS for a peer on ``control_host``: its own interface, or all."""
    parsed = ipaddress.ip_address(control_host)
    return () if parsed.is_unspecified else (str(parsed),)


def _snapshot(peer: RunningPeer) -> _Snapshot | None:
    """What the record depends on, cheaply; ``None`` unless the peer hosts its room."""
    state = peer.state
    if state is None or peer.role is not Role.HOST:
        return None
    listeners = max(0, len(state.members) - 1)
    return (state.room_id, state.name, state.topic, listeners, peer.control_address,
            peer.media_address)  # fmt: skip


def _changed_from(peer: RunningPeer, last: _Snapshot | None) -> Callable[[], bool]:
    return lambda: _snapshot(peer) != last


def make_open_invite(peer: RunningPeer, now: float) -> SignedInvite:
    """A listener invite for anyone, signed by this (hosting) peer, without addresses."""
    state = peer.state
    assert state is not None
    return create_invite(
        peer.identity,
        room_id=state.room_id,
        room_name=state.name,
        role=Role.LISTENER,
        now=now,
        lifetime=OPEN_INVITE_LIFETIME,
        max_uses=OPEN_INVITE_USES,
        issuer_role=Role.HOST,
    )


def make_advert(peer: RunningPeer, open_invite: SignedInvite | None) -> Advert:
    """The room's advertisement as this peer, its host, sees it now."""
    state = peer.state
    assert state is not None
    control_host, control_port = parse_address(peer.control_address)
    _, media_port = parse_address(peer.media_address)
    build = partial(
        RoomRecord,
        room_id=state.room_id,
        name=state.name,
        host_key=peer.me,
        listeners=max(0, len(state.members) - 1),
        control_port=control_port,
        open_invite=open_invite,
    )
    try:
        record = build(topic=trim_utf8(state.topic, MAX_TOPIC_BYTES))
    except LocalProtocolError:  # a topic the TXT record can't carry is left out
        record = build()
    return Advert(record, advertised_hosts(control_host), media_port)


async def keep_room_advertised(
    peer: RunningPeer,
    *,
    interfaces: Sequence[str] = (),
    open_room: bool = False,
    env: Mapping[str, str] | None = None,
    create: ZeroconfFactory = default_zeroconf,
    note: Callable[[str], None] | None = None,
) -> None:
    """Advertise ``peer``'s room whenever it is the host, until cancelled.

    ``interfaces`` default to the peer's own control address (all interfaces when it
    listens on a wildcard; none when it listens on loopback, where nobody on the LAN
    could reach it).  Problems with mDNS are reported once through ``note`` and end
    the advertising; they never end the room.
    """
    control_host, _ = parse_address(peer.control_address)
    if not interfaces and ipaddress.ip_address(control_host).is_loopback:
        logger.info("the room listens on loopback only: not advertising it on the LAN")
        return
    while True:
        await peer.wait_for(lambda: _snapshot(peer) is not None)
        try:
            async with open_zeroconf(
                interfaces or default_interfaces(control_host), env=env, create=create
            ) as zc:
                await _advertise_while_hosting(zc, peer, open_room)
        except (MdnsError, LocalProtocolError) as exc:
            message = f"the room is not advertised on the LAN: {exc}"
            if note is not None:
                note(message)
            else:
                logger.warning("%s", message)
            return


async def _advertise_while_hosting(zc: Zeroconf, peer: RunningPeer, open_room: bool) -> None:
    invite = make_open_invite(peer, time.time()) if open_room else None
    renew_at = trio.current_time() + OPEN_INVITE_LIFETIME / 2 if open_room else math.inf
    snapshot = _snapshot(peer)
    async with open_room_advertiser(zc, make_advert(peer, invite)) as advertiser:
        logger.info("advertising the room on the LAN as %r", advertiser.name)
        while True:
            with trio.move_on_at(renew_at):
                await peer.wait_for(_changed_from(peer, snapshot))
            snapshot = _snapshot(peer)
            if snapshot is None:
                logger.info("no longer the host: withdrawing the room's mDNS record")
                return
            if trio.current_time() >= renew_at:
                invite = make_open_invite(peer, time.time())
                renew_at = trio.current_time() + OPEN_INVITE_LIFETIME / 2
            advertiser.update(make_advert(peer, invite))
