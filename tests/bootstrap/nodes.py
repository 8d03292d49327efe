"""Running bootstrap nodes on 127.0.0.1 for tests, and talking to them at the byte level."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import attrs
import trio
from trio_websocket import WebSocketConnection, open_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event
from wsproto.events import Request as WsRequest

from bootstrap.config import BootstrapConfig
from bootstrap.protocol import LookupId, Prove, Response, decode_response, encode_request
from bootstrap.registry import Registry
from bootstrap.server import BootstrapServer, serve_bootstrap
from tests.bootstrap import NOW, ROOM


@attrs.define
class WallClock:
    """The node's unix time, moved by hand."""

    now: float = NOW

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running_node(
    config: BootstrapConfig | None = None,
    clock: Callable[[], float] | None = None,
    registry: Registry | None = None,
) -> AsyncIterator[tuple[str, BootstrapServer]]:
    server = BootstrapServer(registry if registry is not None else Registry(),
                             config or BootstrapConfig(),
                             clock or WallClock())
    async with trio.open_nursery() as nursery:
        address: str = await nursery.start(server.serve, "127.0.0.1:0")
        yield address, server
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def node_with_state(
    state: Path, clock: WallClock, registry: Registry | None = None
) -> AsyncIterator[str]:
    """A node that keeps its state in ``state``; leaving the block stops it."""
    async with trio.open_nursery() as nursery:
        address: str = await nursery.start(
            lambda task_status: serve_bootstrap(
                "127.0.0.1:0", registry=registry, clock=clock, state=state,
                task_status=task_status,
            )
        )
        yield address
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw_connection(address: str) -> AsyncIterator[WebSocketConnection]:
    host, port = address.rsplit(":", 1)
    async with open_websocket(host, int(port), "/", use_ssl=False) as websocket:
        yield websocket


async def exchange_bytes(websocket: WebSocketConnection, message: bytes | str) -> bytes:
    await websocket.send_message(message)
    reply = await websocket.get_message()
    assert isinstance(reply, bytes)
    return reply


async def exchange(websocket: WebSocketConnection, message: bytes | str) -> Response:
    return decode_response(await exchange_bytes(websocket, message))


async def prove(websocket: WebSocketConnection, server: BootstrapServer) -> None:
    """Prove the connection's address with the cookie the node would give 127.0.0.1."""
    cookie = server.cookies.issue("127.0.0.1", trio.current_time())
    await exchange(websocket, encode_request(Prove(cookie, LookupId(ROOM))))


@asynccontextmanager
async def wsproto_connection(address: str) -> AsyncIterator[tuple[trio.SocketStream,
                                                                  WSConnection, list[Event]]]:
    """A websocket spoken by hand, for tests that must see the node close first (the
    trio-websocket client leaves its socket open then).  Yields the events so far."""
    host, port = address.rsplit(":", 1)
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(WsRequest(host=host, target="/")))
        events: list[Event] = []
        while not any(isinstance(e, AcceptConnection) for e in events):
            ws.receive_data(await stream.receive_some())
            events.extend(ws.events())
        yield stream, ws, events


async def read_until_closed(stream: trio.SocketStream, ws: WSConnection,
                            events: list[Event]) -> None:
    while data := await stream.receive_some():
        ws.receive_data(data)
        events.extend(ws.events())


@contextmanager
def dead_address() -> Iterator[str]:
    """A loopback port where nothing listens: a bound, non-listening socket holds the port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"
