"""Floods: handshakes from one address, announcements at the bootstrap node, oversized messages.

Each flood is refused and counted, no exception reaches a nursery (the peer or node
under attack still serves afterwards), and memory stays bounded: the work and the
memory after ``N`` attempts and after ``10 N`` attempts are compared.

The per-source budget (:mod:`mitalk_p2p.core.admission`) is tested without I/O on a
virtual clock, then on real websockets on 127.0.0.1 with ``limit_loopback`` on
(loopback is exempt by default, since the demo and the tests run many peers there).
"""

from __future__ import annotations

import contextlib
import gc
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing
import trio_websocket
from wsproto.events import BytesMessage, CloseConnection

from bootstrap.config import BootstrapConfig
from bootstrap.protocol import Announce, Error, Ok, encode_request
from bootstrap.registry import Registry, RegistryConfig, RegistryError
from bootstrap.server import MAX_WEBSOCKET_MESSAGE as BOOTSTRAP_MAX_MESSAGE
from mitalk_p2p.core.admission import Admission, AdmissionConfig, Verdict
from mitalk_p2p.core.handshake import LinkHandshake
from mitalk_p2p.core.identity import Identity, PublicKey
from mitalk_p2p.core.ids import RoomId
from mitalk_p2p.runtime.control_plane import MAX_WEBSOCKET_MESSAGE, ControlPlane
from mitalk_p2p.runtime.link_records import DEFAULT_MAX_MESSAGE, Channel
from tests.bootstrap import NOW, make_announcement, room_id
from tests.bootstrap.nodes import exchange, raw_connection, read_until_closed, running_node
from tests.bootstrap.nodes import wsproto_connection as bootstrap_wsproto

from .control_attacker import BOUND, knock, serving_plane, tap

ROOM = RoomId(bytes(range(16)))
HOST = Identity.from_seed(b"h" * 32, "host")
ATTACKER = Identity.from_seed(b"a" * 32, "attacker")
N = 30
"""Attempts in the short flood; the long one makes ten times as many."""
GROWTH_LIMIT = 48 * 1024
"""Bytes the heap may grow by between the short and the long flood (about 100 bytes per
extra attempt would exceed it)."""


async def _heap_growth(flood: Callable[[int], Awaitable[None]]) -> int:
    """How much the traced heap grows from after ``N`` attempts to after ``10 N``."""
    tracemalloc.start()
    try:
        await flood(N)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        short, _ = tracemalloc.get_traced_memory()
        await flood(10 * N)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        long, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return long - short


# --- the per-source budget, without I/O --------------------------------------------------------


def test_one_source_gets_its_burst_then_its_rate_and_no_more_than_its_slots() -> None:
    budget = Admission(AdmissionConfig(handshake_rate=2.0, handshake_burst=4,
                                       max_links_per_source=6, limit_loopback=True))  # fmt: skip
    verdicts = [budget.admit("10.0.0.7", 0.0) for _ in range(6)]
    assert verdicts == [Verdict.ADMITTED] * 4 + [Verdict.RATE_LIMITED] * 2
    assert budget.admit("10.0.0.7", 0.49) is Verdict.RATE_LIMITED
    assert budget.admit("10.0.0.7", 0.5) is Verdict.ADMITTED  # one token per half second
    assert budget.admit("10.0.0.7", 1.0) is Verdict.ADMITTED
    # Six held at once: the seventh is refused for its slots even with tokens to spare.
    assert budget.admit("10.0.0.7", 60.0) is Verdict.SOURCE_FULL
    budget.release("10.0.0.7", 60.0)
    assert budget.admit("10.0.0.7", 60.0) is Verdict.ADMITTED
    # Another address has its own budget.
    assert budget.admit("10.0.0.8", 60.0) is Verdict.ADMITTED
    stats = budget.statistics()
    assert stats.refused == {"rate-limited": 3, "source-full": 1}
    assert (stats.admitted, stats.held, stats.sources) == (8, 7, 2)


def test_an_ipv6_host_counts_as_its_whole_64_and_loopback_is_exempt_by_default() -> None:
    budget = Admission(AdmissionConfig(handshake_burst=2, handshake_rate=0.001))
    many = [f"2001:db8:1:2::{n:x}" for n in range(1, 6)]
    assert [budget.admit(a, 0.0) for a in many] == [Verdict.ADMITTED] * 2 + [
        Verdict.RATE_LIMITED
    ] * 3
    assert budget.admit("::ffff:10.1.1.1", 0.0) is budget.admit("10.1.1.1", 0.0)
    assert all(budget.admit(a, 0.0) is Verdict.ADMITTED for a in ["127.0.0.1", "::1"] * 50)
    assert budget.statistics().exempt == 100
    assert len(budget) == 2  # the /64 and 10.1.1.1: loopback takes no entry


def test_the_table_stays_bounded_however_many_sources_knock() -> None:
    config = AdmissionConfig(max_sources=64, handshake_burst=4, limit_loopback=True)

    def flood(budget: Admission, count: int, start: int) -> None:
        for n in range(start, start + count):
            address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
            if budget.admit(address, n * 0.001) is Verdict.ADMITTED:
                budget.release(address, n * 0.001)

    budget = Admission(config)
    tracemalloc.start()
    try:
        flood(budget, 100, 0)
        short, _ = tracemalloc.get_traced_memory()
        flood(budget, 1000, 100)
        long, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(budget) == 64
    assert budget.statistics().admitted == 1100  # idle sources are forgotten, not refused
    assert long - short < 16 * 1024
    # Sources that all hold a connection are never forgotten: newcomers wait.
    holding = Admission(config)
    for n in range(64):
        assert holding.admit(f"10.9.0.{n}", 0.0) is Verdict.ADMITTED
    assert holding.admit("10.9.1.1", 0.0) is Verdict.TABLE_FULL
    holding.release("10.9.0.5", 1.0)
    assert holding.admit("10.9.1.1", 1.0) is Verdict.ADMITTED
    assert len(holding) == 64 and holding.statistics().refused == {"table-full": 1}


# --- handshakes from one address, on real websockets ------------------------------------------


def _limited(burst: int, *, slots: int = 1000) -> Callable[[ControlPlane], None]:
    def configure(plane: ControlPlane) -> None:
        plane.admission = Admission(AdmissionConfig(
            handshake_rate=0.001, handshake_burst=burst, max_links_per_source=slots,
            limit_loopback=True,
        ))  # fmt: skip

    return configure


async def test_a_handshake_flood_is_refused_before_any_handshake_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[None] = []
    responder = LinkHandshake.responder

    def counting_responder(*args: object, **kwargs: object) -> LinkHandshake:
        started.append(None)
        return responder(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(LinkHandshake, "responder", counting_responder)
    async with serving_plane(HOST, ROOM, configure=_limited(burst=5)) as plane:
        address = plane.own_address

        async def flood(count: int) -> None:
            for _ in range(count):
                assert await knock(address) in (None, 429)

        growth = await _heap_growth(flood)
        stats = plane.statistics()
        # Five were let in (and failed their handshake: the knocker hung up); every other
        # attempt was answered 429 before a websocket, let alone a Noise state, existed.
        assert len(started) == 5 and stats.handshakes_failed == 5
        assert stats.handshakes_rate_limited == 11 * N - 5
        budget = plane.admission.statistics()
        assert (budget.sources, budget.held) == (1, 0)
        assert growth < GROWTH_LIMIT, f"the heap grew by {growth} bytes over {10 * N} attempts"
        # The peer still serves: a well-behaved address gets in.
        plane.admission = Admission()
        with trio.fail_after(BOUND):
            async with tap(address, ATTACKER, ROOM, HOST.public_key) as link:
                assert link.link.remote == HOST.public_key


async def test_connections_held_open_are_capped_per_address() -> None:
    async with serving_plane(HOST, ROOM, configure=_limited(burst=100, slots=4)) as plane:
        # A slow-loris: websockets that never start their handshake hold the four slots...
        async with AsyncExitStack() as idle:
            for _ in range(4):
                await idle.enter_async_context(_idle_websocket(plane.own_address))
            await trio.testing.wait_all_tasks_blocked()
            assert plane.admission.statistics().held == 4
            # ... so the fifth is refused at once, with no handshake.
            assert await knock(plane.own_address) == 429
            assert plane.statistics().links_refused_source == 1
        await trio.testing.wait_all_tasks_blocked()
        assert plane.admission.statistics().held == 0
        assert await knock(plane.own_address) is None


@asynccontextmanager
async def _idle_websocket(address: str) -> AsyncIterator[None]:
    host, port = address.split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(BOUND):
                await trio_websocket.wrap_client_stream(nursery, stream, host, "/")
            yield
            nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


# --- room announcements at the bootstrap node -------------------------------------------------


def test_announcements_beyond_the_registrys_quota_are_refused_and_memory_stays_flat() -> None:
    registry = Registry(RegistryConfig(max_rooms=20))
    signer = Identity.from_seed(b"s" * 32, "flooder")
    # Signing happens before the measurement: only the registry's own memory counts.
    first = [make_announcement(signer=signer, room=room_id(n)) for n in range(N)]
    more = [make_announcement(signer=signer, room=room_id(n)) for n in range(N, 11 * N)]

    def flood(batch: list[object]) -> None:
        for announcement in batch:
            with contextlib.suppress(RegistryError):
                registry.announce(announcement, NOW)  # type: ignore[arg-type]

    tracemalloc.start()
    try:
        flood(first)  # type: ignore[arg-type]
        short, _ = tracemalloc.get_traced_memory()
        flood(more)  # type: ignore[arg-type]
        long, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stats = registry.statistics()
    assert stats.rooms == len(registry) == 20
    assert stats.refused == {"registry-full": 11 * N - 20}
    assert long - short < 16 * 1024


async def test_an_announcement_flood_over_the_wire_meets_the_rate_and_connection_quotas() -> None:
    config = BootstrapConfig(request_burst=10, request_rate=0.001, max_connections_per_ip=3)
    registry = Registry(RegistryConfig(max_rooms=1000))
    signer = Identity.from_seed(b"f" * 32, "flooder")
    requests = [encode_request(Announce(make_announcement(signer=signer, room=room_id(n))))
                for n in range(11 * N)]  # fmt: skip
    async with running_node(config, registry=registry) as (address, server):
        async with raw_connection(address) as websocket:
            replies = [await exchange(websocket, request) for request in requests]
        assert replies[:10] == [Ok("added")] * 10
        assert {r.code for r in replies[10:] if isinstance(r, Error)} == {"rate-limited"}
        assert len(registry) == 10
        assert server.statistics().errors == {"rate-limited": 11 * N - 10}
        # A flooder may not multiply its budget with connections beyond the cap.
        async with raw_connection(address), raw_connection(address), raw_connection(address):
            assert await knock(address) == 503
        assert server.statistics().connections_refused == 1
        assert server.statistics().connections_open == 0
        # The node still serves a fresh connection.
        async with raw_connection(address) as websocket:
            reply = await exchange(websocket, encode_request(Announce(make_announcement())))
            assert reply == Ok("added")


# --- oversized messages ------------------------------------------------------------------------


async def test_an_oversized_first_message_is_refused_and_its_connection_closed() -> None:
    async with serving_plane(HOST, ROOM) as plane:

        async def flood(count: int) -> None:
            for _ in range(count):
                async with bootstrap_wsproto(plane.own_address) as (stream, ws, events):
                    oversized = BytesMessage(data=bytes(MAX_WEBSOCKET_MESSAGE + 1))
                    await stream.send_all(ws.send(oversized))
                    # The attacker never answers the close: the peer still ends the TCP
                    # connection, so nothing of it stays behind.
                    with trio.fail_after(BOUND):
                        await read_until_closed(stream, ws, events)
                    assert [e.code for e in events if isinstance(e, CloseConnection)] == [1009]

        growth = await _heap_growth(flood)
        stats = plane.statistics()
        assert stats.handshakes_failed == 11 * N and stats.links_accepted == 0
        assert plane.admission.statistics().held == 0
        assert growth < GROWTH_LIMIT, f"the heap grew by {growth} bytes over {10 * N} attempts"


async def test_an_oversized_message_on_a_link_ends_that_link_and_is_counted() -> None:
    received: list[tuple[PublicKey, bytes]] = []
    async with serving_plane(HOST, ROOM, received=received) as plane:
        # Over the websocket limit: the peer stops reading at once (close code 1009).
        async with tap(plane.own_address, ATTACKER, ROOM, HOST.public_key) as link:
            await link.link.websocket.send_message(bytes(MAX_WEBSOCKET_MESSAGE + 1))
            with trio.fail_after(BOUND):
                await link.closed.wait()
        # Within each record's limit, but a message that never ends: refused at 4 MiB.
        async with tap(plane.own_address, ATTACKER, ROOM, HOST.public_key) as link:
            assert link.link.send(Channel.CORE, bytes(DEFAULT_MAX_MESSAGE + 1))
            with trio.fail_after(BOUND):
                await link.closed.wait()
        await trio.testing.wait_all_tasks_blocked()
        stats = plane.statistics()
        assert stats.links_failed == 2 and stats.links_accepted == 2
        assert received == []  # neither message reached the core
        assert stats.links_open == 0


async def test_an_oversized_request_at_the_bootstrap_node_is_refused() -> None:
    async with running_node(BootstrapConfig(close_timeout=0.05)) as (address, server):
        async with bootstrap_wsproto(address) as (stream, ws, events):
            await stream.send_all(ws.send(BytesMessage(data=bytes(BOOTSTRAP_MAX_MESSAGE + 1))))
            with trio.fail_after(BOUND):
                await read_until_closed(stream, ws, events)
        assert [e.code for e in events if isinstance(e, CloseConnection)] == [1009]
        assert server.statistics().errors == {"too-large": 1}
        assert server.statistics().connections_open == 0
