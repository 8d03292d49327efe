"""The media socket over real UDP on the loopback interface."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from mitalk_p2p.runtime.addresses import AddressError, format_address, parse_address
from mitalk_p2p.runtime.udp import UdpEndpoint, open_udp_endpoint


async def test_datagrams_arrive_with_their_source_address() -> None:
    async with open_udp_endpoint() as a, open_udp_endpoint() as b:
        assert a.send(b"hello", b.local_address)
        [(data, source)] = await b.receive_batch()
        assert (data, source) == (b"hello", a.local_address)
        assert a.statistics().datagrams_sent == 1
        assert b.statistics().datagrams_received == 1


async def test_a_burst_is_drained_in_batches_not_one_trip_per_packet() -> None:
    # 200 small datagrams fit the smallest default receive buffer (Linux: 208 KiB).
    async with open_udp_endpoint() as a, open_udp_endpoint() as b:
        for i in range(200):
            assert a.send(i.to_bytes(2, "big") * 50, b.local_address)
        received: list[bytes] = []
        while len(received) < 200:
            received.extend(data for data, _ in await b.receive_batch(max_batch=64))
        assert [int.from_bytes(d[:2], "big") for d in received] == list(range(200))
        stats = b.statistics()
        assert stats.batches == 4  # 64 + 64 + 64 + 8: the kernel held the whole burst
        assert stats.largest_batch == 64


async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("this machine has no IPv6 support")
    async with open_udp_endpoint("[::1]:0") as a, open_udp_endpoint("[::1]:0") as b:
        assert a.local_address.startswith("[::1]:")
        a.send(b"six", b.local_address)
        assert await b.receive_batch() == [(b"six", a.local_address)]


async def test_bad_destinations_are_counted_not_raised() -> None:
    async with open_udp_endpoint() as a:
        assert not a.send(b"x", "not an address")
        assert not a.send(b"x" * 70_000, a.local_address)  # larger than any datagram
        stats = a.statistics()
        assert (stats.send_errors, stats.datagrams_sent) == (2, 0)


async def test_closing_wakes_a_waiting_receiver() -> None:
    woken: list[str] = []

    async def wait_for_datagrams(endpoint: UdpEndpoint) -> None:
        with pytest.raises(trio.ClosedResourceError):
            await endpoint.receive_batch()
        woken.append("closed")

    async with open_udp_endpoint() as a:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_datagrams, a)
            await trio.testing.wait_all_tasks_blocked()
            a.close()
        assert woken == ["closed"]
        with pytest.raises(trio.ClosedResourceError):
            a.send(b"x", a.local_address)


async def test_cancelled_receive_loses_nothing_queued() -> None:
    async with open_udp_endpoint() as a, open_udp_endpoint() as b:
        with trio.CancelScope() as scope:
            scope.cancel()
            a.send(b"kept", b.local_address)
            await b.receive_batch()
        assert scope.cancelled_caught
        assert await b.receive_batch() == [(b"kept", a.local_address)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:4000", ("127.0.0.1", 4000)), ("[::1]:9", ("::1", 9))],
)
def test_addresses_round_trip(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected
    assert format_address(*expected) == text


def test_port_zero_only_when_binding() -> None:
    assert parse_address("127.0.0.1:0", any_port=True) == ("127.0.0.1", 0)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("127.0.0.1", "not HOST:PORT"),
        (":4000", "not HOST:PORT"),
        ("example.org:4000", "not a numeric IP address"),
        ("::1:4000", "brackets"),
        ("127.0.0.1:0", "port must be 1"),
        ("127.0.0.1:70000", "port must be"),
        ("127.0.0.1:-1", "port must be"),
    ],
)
def test_bad_addresses_say_why(text: str, reason: str) -> None:
    with pytest.raises(AddressError, match=reason):
        parse_address(text)
