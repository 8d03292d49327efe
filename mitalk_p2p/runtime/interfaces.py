"""Turning a wildcard listen address into one that other peers can dial.

``--listen 0.0.0.0:7000`` is what people type on a LAN, but the address goes
into invites, announcements, mDNS records and the room's roster, where
``0.0.0.0`` means nothing to anyone else.  :func:`dialable_address` replaces a
wildcard host with this machine's one LAN address, and refuses with the list
of choices when there are several, so that a room is never advertised at an
address nobody can reach.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import attrs
import ifaddr

from .addresses import AddressError, format_address, parse_address

WILDCARDS = frozenset({"0.0.0.0", "::"})


@attrs.frozen
class LocalAddress:
    host: str
    interface: str


def local_addresses(version: int = 4) -> list[LocalAddress]:
    """This machine's unicast addresses of one IP version, loopback excluded."""
    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            host = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                parsed = ipaddress.ip_address(host)
            except ValueError:  # scoped IPv6 ("fe80::1%eth0") and the like
                continue
            if parsed.version != version or parsed.is_loopback or parsed.is_link_local:
                continue
            found.append(LocalAddress(str(parsed), adapter.nice_name))
    return found


def dialable_address(text: str, candidates: Sequence[LocalAddress] | None = None) -> str:
    """``text`` itself, or for a wildcard host the one local address to use instead.

    ``candidates`` defaults to :func:`local_addresses` of the wildcard's IP
    version.  With none, loopback is used (a machine with no network can still
    hold a room with itself); with several, :class:`AddressError` lists them.
    """
    host, port = parse_address(text, any_port=True)
    if host not in WILDCARDS:
        return text
    version = 6 if ":" in host else 4
    options = local_addresses(version) if candidates is None else list(candidates)
    unique = list(dict.fromkeys(options))
    if not unique:
        return format_address("::1" if version == 6 else "127.0.0.1", port)
    if len({option.host for option in unique}) == 1:
        return format_address(unique[0].host, port)
    listed = ", ".join(f"{option.host} ({option.interface})" for option in unique)
    raise AddressError(
        f"{text}: this machine has several addresses ({listed}); others need one they can"
        f" reach, so give it instead of {host}, e.g. {format_address(unique[0].host, port)}"
    )
