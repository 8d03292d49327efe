"""Fixtures for the mDNS tests: a private LAN of network namespaces, and zeroconf inside it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from zeroconf import InterfaceChoice, Zeroconf

from mitalk_p2p.discovery.candidates import MdnsSettings
from mitalk_p2p.discovery.mdns import default_zeroconf
from mitalk_p2p.discovery.switch import MDNS_ENV

from .netns import GUEST_IP, HOST_IP, Lan, in_netns, unavailable_reason

MDNS_ON = {MDNS_ENV: "on"}


@pytest.fixture
def lan() -> Iterator[Lan]:
    """Two namespaces joined by a veth pair; deleted afterwards even if the test fails."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no private network for mDNS tests: {reason}")
    created = Lan.create()
    try:
        yield created
    finally:
        created.destroy()


def mdns_in(ns: str, address: str) -> MdnsSettings:
    """Settings for in-process zeroconf inside namespace ``ns`` on ``address`` only."""

    def create(interfaces: list[str] | InterfaceChoice) -> Zeroconf:
        assert interfaces == [address], "an in-process test must name its interface"
        return in_netns(ns, lambda: default_zeroconf(interfaces))

    return MdnsSettings((address,), MDNS_ON, create)


@pytest.fixture
def host_side(lan: Lan) -> MdnsSettings:
    return mdns_in(lan.host_ns, HOST_IP)


@pytest.fixture
def guest_side(lan: Lan) -> MdnsSettings:
    return mdns_in(lan.guest_ns, GUEST_IP)
