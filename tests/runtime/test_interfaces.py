"""A wildcard --listen becomes the one address other peers can dial, or a clear error."""

from __future__ import annotations

import argparse

import pytest

from mitalk_p2p.room_cli import bootstrap_node
from mitalk_p2p.runtime.addresses import AddressError
from mitalk_p2p.runtime.interfaces import LocalAddress, dialable_address, local_addresses

LAN = LocalAddress("192.168.1.20", "eth0")
WIFI = LocalAddress("10.0.0.7", "wlan0")


def test_a_concrete_address_is_kept() -> None:
    assert dialable_address("192.168.1.20:7000", [WIFI]) == "192.168.1.20:7000"
    assert dialable_address("[::1]:7000", []) == "[::1]:7000"


def test_a_wildcard_becomes_the_only_lan_address() -> None:
    assert dialable_address("0.0.0.0:7000", [LAN]) == "192.168.1.20:7000"
    assert dialable_address("0.0.0.0:0", [LAN, LAN]) == "192.168.1.20:0"


def test_with_no_network_a_wildcard_means_loopback() -> None:
    assert dialable_address("0.0.0.0:7000", []) == "127.0.0.1:7000"
    assert dialable_address("[::]:7000", []) == "[::1]:7000"


def test_several_addresses_are_listed_for_the_user_to_choose() -> None:
    with pytest.raises(AddressError) as raised:
        dialable_address("0.0.0.0:7000", [LAN, WIFI])
    message = str(raised.value)
    assert "192.168.1.20 (eth0)" in message and "10.0.0.7 (wlan0)" in message
    assert "e.g. 192.168.1.20:7000" in message


def test_this_machines_addresses_are_unicast_and_not_loopback() -> None:
    for found in local_addresses():
        assert not found.host.startswith("127.")
        assert found.interface


def test_bootstrap_nodes_are_host_port_or_ws_urls() -> None:
    assert bootstrap_node("127.0.0.1:7400") == "127.0.0.1:7400"
    assert bootstrap_node("ws://127.0.0.1:7400/") == "ws://127.0.0.1:7400/"
    for bad in ("http://127.0.0.1:7400/", "ws://example.org:7400/", "nowhere"):
        with pytest.raises(argparse.ArgumentTypeError):
            bootstrap_node(bad)
