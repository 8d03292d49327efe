"""The bootstrap node over real websockets on 127.0.0.1, its wire protocol, and the client."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress

import attrs
import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket,
    serve_websocket,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection
from wsproto.events import Request as WsRequest

from bootstrap.announcement import Announcement, Withdrawal, create_withdrawal
from bootstrap.protocol import (
    MAX_REQUEST_SIZE,
    Announce,
    Error,
    LookupId,
    LookupName,
    Ok,
    Request,
    Response,
    Rooms,
    Withdraw,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from bootstrap.registry import Registry
from bootstrap.server import BootstrapConfig, BootstrapServer, answer, main
from mitalk_p2p.core.errors import WireError
from mitalk_p2p.core.term import Term
from mitalk_p2p.runtime import bootstrap_client as client
from mitalk_p2p.runtime.bootstrap_client import BootstrapError
from tests.bootstrap import HOST, NOW, ROOM, STRANGER, make_announcement, room_id

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECOND_TERM = Term.first().successor(rank=0, list_seq=5)


@attrs.define
class WallClock:
    """The node's unix time, moved by hand."""

    now: float = NOW

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running_node(
    config: BootstrapConfig | None = None, clock: WallClock | None = None
) -> AsyncIterator[tuple[str, BootstrapServer]]:
    server = BootstrapServer(Registry(), config or BootstrapConfig(), clock or WallClock())
    async with trio.open_nursery() as nursery:
        address: str = await nursery.start(server.serve, "127.0.0.1:0")
        yield address, server
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw_connection(address: str) -> AsyncIterator[WebSocketConnection]:
    host, port = address.rsplit(":", 1)
    async with open_websocket(host, int(port), "/", use_ssl=False) as websocket:
        yield websocket


async def exchange(websocket: WebSocketConnection, message: bytes | str) -> Response:
    await websocket.send_message(message)
    reply = await websocket.get_message()
    assert isinstance(reply, bytes)
    return decode_response(reply)


@contextmanager
def dead_address() -> Iterator[str]:
    """An address where nothing listens: a bound, never-listening socket holds the port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


# --- the wire protocol -------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        Announce(make_announcement()),
        Withdraw(create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=NOW)),
        LookupId(ROOM),
        LookupName("jazz"),
    ],
)
def test_requests_round_trip(request_: Request) -> None:
    assert decode_request(encode_request(request_)) == request_


@pytest.mark.parametrize(
    "response",
    [Ok("added"), Rooms(()), Rooms((make_announcement(),)), Error("stale-term", "too old")],
)
def test_responses_round_trip(response: Response) -> None:
    assert decode_response(encode_response(response)) == response


def test_oversized_and_foreign_messages_are_refused() -> None:
    with pytest.raises(WireError, match="exceeds") as caught:
        decode_request(bytes(MAX_REQUEST_SIZE + 1))
    assert getattr(caught.value, "code", None) == "too-large"
    with pytest.raises(WireError, match="version 9"):
        decode_request(b"\x09\x03" + bytes(16))
    with pytest.raises(WireError, match="unknown kind"):
        decode_request(b"\x01\x7f")
    with pytest.raises(WireError, match="trailing"):
        decode_request(encode_request(LookupId(ROOM)) + b"\x00")


@FUZZ
@given(st.binary(max_size=300))
def test_random_messages_only_ever_raise_wire_errors(data: bytes) -> None:
    for parse in (decode_request, decode_response):
        with suppress(WireError):
            parse(data)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=50))
def test_answer_never_raises(message: bytes | str) -> None:
    reply = answer(Registry(), message, NOW)
    assert isinstance(reply, Error | Rooms | Ok)


# --- the node over real websockets --------------------------------------------------------


async def test_announce_then_find_by_name_and_by_id() -> None:
    ann = make_announcement()
    async with running_node() as (address, server):
        assert await client.announce(address, ann) == "added"
        assert await client.announce(f"ws://{address}/", ann) == "kept"
        assert await client.lookup_name(address, "JAZZ") == [ann]
        assert await client.lookup_name(address, "polka") == []
        assert await client.lookup_id(address, ROOM) == ann
        assert await client.lookup_id(address, room_id(77)) is None
        assert server.statistics().requests == 6
        assert server.registry.statistics().announcements_accepted == 1


async def test_unsigned_and_tampered_announcements_are_refused_with_a_code() -> None:
    ann = make_announcement()
    async with running_node() as (address, server):
        for bad in (attrs.evolve(ann, signature=bytes(64)),
                    attrs.evolve(ann, name="Totally Legit Jazz")):
            with pytest.raises(BootstrapError, match="bad-signature") as caught:
                await client.announce(address, bad)
            assert caught.value.code == "bad-signature"
            assert caught.value.node == address
        assert await client.lookup_name(address, "jazz") == []
        assert server.statistics().errors == {"bad-signature": 2}


async def test_a_stale_term_is_refused() -> None:
    async with running_node() as (address, _):
        await client.announce(address, make_announcement(term=SECOND_TERM))
        with pytest.raises(BootstrapError) as caught:
            await client.announce(address, make_announcement(term=Term.first(), now=NOW + 1))
        assert caught.value.code == "stale-term"
        found = await client.lookup_id(address, ROOM)
        assert found is not None and found.term == SECOND_TERM


async def test_a_withdrawn_room_is_no_longer_found() -> None:
    async with running_node() as (address, _):
        await client.announce(address, make_announcement())
        with pytest.raises(BootstrapError) as caught:
            await client.withdraw(address, create_withdrawal(
                STRANGER, room_id=ROOM, term=Term.first(), now=NOW))
        assert caught.value.code == "not-authorized"
        withdrawal = create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=NOW)
        assert await client.withdraw(address, withdrawal)
        assert await client.lookup_id(address, ROOM) is None
        assert not await client.withdraw(address, withdrawal)


async def test_expired_rooms_disappear() -> None:
    clock = WallClock()
    async with running_node(clock=clock) as (address, _):
        await client.announce(address, make_announcement(lifetime=60))
        clock.now = NOW + 59
        assert await client.lookup_id(address, ROOM) is not None
        clock.now = NOW + 60
        assert await client.lookup_id(address, ROOM) is None
        assert await client.lookup_name(address, "jazz") == []
        with pytest.raises(BootstrapError) as caught:
            await client.announce(address, make_announcement(lifetime=60))
        assert caught.value.code == "expired"


async def test_the_node_sweeps_expired_rooms_periodically(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = WallClock()
    config = BootstrapConfig(expire_interval=30.0)
    async with running_node(config, clock) as (address, server):
        await client.announce(address, make_announcement(lifetime=60))
        clock.now = NOW + 61
        await trio.sleep(31)
        stats = server.registry.statistics()
        assert (stats.rooms, stats.expired) == (0, 1)


async def test_an_oversized_request_is_answered_too_large_and_the_connection_lives_on() -> None:
    async with running_node() as (address, server), raw_connection(address) as websocket:
        reply = await exchange(websocket, bytes(MAX_REQUEST_SIZE + 1))
        assert isinstance(reply, Error) and reply.code == "too-large"
        assert await exchange(websocket, encode_request(LookupId(ROOM))) == Rooms(())
        assert server.statistics().errors == {"too-large": 1}


async def test_a_flood_of_requests_is_rate_limited() -> None:
    config = BootstrapConfig(request_burst=3, request_rate=0.001)
    lookup = encode_request(LookupName("jazz"))
    async with running_node(config) as (address, server), raw_connection(address) as websocket:
        replies = [await exchange(websocket, lookup) for _ in range(5)]
        assert replies[:3] == [Rooms(())] * 3
        assert [r.code for r in replies[3:] if isinstance(r, Error)] == ["rate-limited"] * 2
        assert server.statistics().errors == {"rate-limited": 2}
        # Another connection has its own budget.
        assert await client.lookup_name(address, "jazz") == []


async def test_garbage_gets_an_error_reply_and_the_node_keeps_serving() -> None:
    garbage: list[bytes | str] = [b"", b"\xff" * 40, b"\x01\x01" + b"junk", "text, not binary"]
    async with running_node() as (address, server):
        async with raw_connection(address) as websocket:
            for message in garbage:
                reply = await exchange(websocket, message)
                assert isinstance(reply, Error) and reply.code == "malformed", reply
            assert await exchange(websocket, encode_request(LookupId(ROOM))) == Rooms(())
        assert await client.announce(address, make_announcement()) == "added"
        assert server.statistics().errors == {"malformed": 4}


async def test_connections_per_source_ip_are_capped() -> None:
    config = BootstrapConfig(max_connections_per_ip=2)
    async with running_node(config) as (address, server):
        async with raw_connection(address), raw_connection(address):
            with pytest.raises(BootstrapError, match="refused the connection") as caught:
                await client.lookup_name(address, "jazz")
            assert caught.value.code == "busy"
            assert server.statistics().connections_open == 2
        assert await client.lookup_name(address, "jazz") == []
        assert server.statistics().connections_refused == 1


async def test_idle_connections_are_closed(autojump_clock: trio.testing.MockClock) -> None:
    # wsproto by hand: trio-websocket's client leaves its socket open when the server
    # closes first, which this test must see happen.
    async with running_node(BootstrapConfig(idle_timeout=60.0)) as (address, server):
        host, port = address.rsplit(":", 1)
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            ws = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(ws.send(WsRequest(host=host, target="/")))
            events: list[object] = []
            while not any(isinstance(e, AcceptConnection) for e in events):
                ws.receive_data(await stream.receive_some())
                events.extend(ws.events())
            assert server.statistics().connections_open == 1
            await trio.sleep(61)
            while data := await stream.receive_some():
                ws.receive_data(data)
                events.extend(ws.events())
            closes = [e for e in events if isinstance(e, CloseConnection)]
            assert [(c.code, c.reason) for c in closes] == [(1000, "idle")]
        assert server.statistics().idle_closed == 1
        assert server.statistics().connections_open == 0


# --- several nodes ---------------------------------------------------------------------------


async def test_query_all_answers_while_one_node_is_down() -> None:
    newer = make_announcement(term=SECOND_TERM, addresses=("198.51.100.7:4000",))
    other = make_announcement(room=room_id(5), name="Jazz Brunch", listener_count=1)
    async with running_node() as (one, _), running_node() as (two, _):
        with dead_address() as down:
            await client.announce(one, make_announcement())
            await client.announce(one, other)
            await client.announce(two, newer)
            found = await client.query_all([down, one, two], "jazz")
            assert found == [newer, other]
            delivery = await client.announce_all([one, down], other)
            assert delivery.accepted == (one,)
            assert [f.code for f in delivery.failed] == ["unreachable"]


async def test_query_all_fails_only_when_every_node_does() -> None:
    with dead_address() as first, dead_address() as second:
        with pytest.raises(BootstrapError, match="no bootstrap node answered") as caught:
            await client.query_all([first, second], "jazz")
        assert "connection refused" in str(caught.value)
        assert "\n" not in str(caught.value)


async def test_client_errors_are_one_clear_line() -> None:
    with dead_address() as down:
        with pytest.raises(BootstrapError, match="unreachable: connection refused") as caught:
            await client.lookup_id(down, ROOM)
        assert caught.value.code == "unreachable"
    with pytest.raises(BootstrapError, match="not a numeric IP") as bad:
        await client.lookup_id("bootstrap.example:4400", ROOM)
    assert bad.value.code == "bad-address"


async def test_a_forged_answer_from_a_lying_node_is_dropped() -> None:
    forged = attrs.evolve(make_announcement(), addresses=("203.0.113.66:4000",))
    genuine = make_announcement(room=room_id(2), name="Real Jazz")

    async def liar(request: WebSocketRequest) -> None:
        websocket = await request.accept()
        await websocket.get_message()
        await websocket.send_message(encode_response(Rooms((forged, genuine))))
        with suppress(ConnectionClosed):
            await websocket.get_message()  # until the client closes

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, liar, "127.0.0.1", 0, None)
        assert await client.lookup_name(f"127.0.0.1:{server.port}", "jazz") == [genuine]
        nursery.cancel_scope.cancel()


async def test_a_node_that_never_answers_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with socket.socket() as sock:  # the kernel completes connections; nobody answers
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        silent = f"127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(BootstrapError, match="did not answer within 2 s") as caught:
            await client.lookup_id(silent, ROOM, node_timeout=2.0)
        assert caught.value.code == "timeout"


async def test_keep_announced_renews_and_withdraws_on_exit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    origin = trio.current_time()

    def wall_clock() -> float:
        return NOW + trio.current_time() - origin

    made: list[Announcement] = []

    def fresh() -> Announcement:
        made.append(make_announcement(now=wall_clock(), lifetime=120))
        return made[-1]

    def goodbye() -> Withdrawal:
        return create_withdrawal(HOST, room_id=ROOM, term=Term.first(), now=wall_clock())

    server = BootstrapServer(clock=wall_clock)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.serve, "127.0.0.1:0")
        with dead_address() as down:
            async with trio.open_nursery() as announcer:
                delivery = await announcer.start(
                    lambda task_status: client.keep_announced(
                        [address, down], fresh, interval=60.0, make_withdrawal=goodbye,
                        task_status=task_status,
                    )
                )
                assert delivery.accepted == (address,)
                await trio.sleep(150)  # renewals at 60 s and 120 s
                assert [a.issued_at - NOW for a in made] == [0, 60, 120]
                assert await client.lookup_id(address, ROOM) == made[-1]
                announcer.cancel_scope.cancel()
        assert await client.lookup_id(address, ROOM) is None
        assert server.registry.statistics().withdrawals == 1
        nursery.cancel_scope.cancel()


# --- the command line ------------------------------------------------------------------------


def test_the_command_line_reports_a_bad_address_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--listen", "localhost:4400"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mitalk-bootstrap: error: ") and err.count("\n") == 1
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "--listen" in err and err.count("\n") == 1
    assert main(["--help"]) == 0
    assert "--listen HOST:PORT" in capsys.readouterr().out


def test_the_command_line_reports_a_busy_port_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main(["--listen", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mitalk-bootstrap: error: cannot listen on 127.0.0.1:{port}: ")
    assert err.count("\n") == 1
