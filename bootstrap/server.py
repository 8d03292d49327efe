"""The bootstrap node: a trio-websocket server in front of a :class:`Registry`.

Everything a client sends is untrusted.  Each connection gets a token bucket
(too many requests are answered ``rate-limited`` without being decoded), an idle
timeout (closed with reason ``idle-timeout``), a share of a per-source-IP
connection cap (refused with HTTP 503 and ``too-many-connections``), and replies
no larger than its requests until it has proven its address.  A bad request is
answered with an error and counted; it never ends more than its own connection,
and never the server.

What to reply is decided without I/O in :mod:`bootstrap.session`; with a
:class:`~bootstrap.store.AnnouncementStore`, every change the registry accepts
is written to disk before the reply goes out.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs
import trio
import trio.abc
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from mitalk_p2p.runtime.addresses import format_address, parse_address

from .address_proof import CookieMinter
from .config import BootstrapConfig
from .protocol import MAX_REQUEST_SIZE, ErrorCode
from .registry import Registry
from .session import Session, TokenBucket
from .store import AnnouncementStore

logger = logging.getLogger(__name__)

MAX_WEBSOCKET_MESSAGE: Final = 2 * MAX_REQUEST_SIZE
"""Messages up to this size are read and answered ``too-large``; larger ones end the
connection (websocket close code 1009) without being buffered further."""
CLOSE_MESSAGE_TOO_BIG: Final = 1009
CLOSE_NORMAL: Final = 1000
HTTP_SERVICE_UNAVAILABLE: Final = 503


@attrs.frozen
class ServerStatistics:
    connections_open: int
    connections_accepted: int
    connections_refused: int
    """Refused at the websocket handshake: too many in total or from one IP."""
    idle_closed: int
    requests: int
    errors: Mapping[str, int]
    """Error replies by code, registry refusals included."""
    proofs: Mapping[str, int]
    """Address-proof events: ``required`` (a reply replaced by a cookie), ``proven``,
    ``bad-cookie`` and ``withheld`` (a request too small for any reply)."""
    store_errors: int
    """Failed writes to the state file (the node keeps serving from memory)."""


@attrs.define(eq=False)
class _TrackingListener(trio.abc.Listener[trio.SocketStream]):
    """A TCP listener that remembers each open stream by its peer's address.

    trio-websocket leaves a connection's TCP stream open after it refuses an
    oversized message (close code 1009) until the client completes the closing
    handshake, which a hostile client never does; the node then closes the stream
    itself (see :meth:`BootstrapServer._handle`).
    """

    inner: trio.SocketListener
    streams: weakref.WeakValueDictionary[tuple[str, int], trio.SocketStream] = attrs.Factory(
        weakref.WeakValueDictionary
    )

    async def accept(self) -> trio.SocketStream:
        stream = await self.inner.accept()
        with contextlib.suppress(OSError):  # already reset: trio-websocket will notice
            host, port = stream.socket.getpeername()[:2]
            self.streams[(str(host), int(port))] = stream
        return stream

    async def aclose(self) -> None:
        await self.inner.aclose()


@attrs.define(eq=False)
class BootstrapServer:
    """One bootstrap node: its registry, its limits and its counters."""

    registry: Registry = attrs.Factory(Registry)
    config: BootstrapConfig = attrs.Factory(BootstrapConfig)
    clock: Callable[[], float] = time.time
    """Wall-clock unix seconds, for expiry (the limits and cookies use trio's clock)."""
    store: AnnouncementStore | None = None
    """Where accepted changes are written, if the node keeps state across restarts."""
    cookies: CookieMinter = attrs.Factory(CookieMinter)
    _per_ip: Counter[str] = attrs.Factory(Counter)
    _open: int = 0
    _accepted: int = 0
    _refused: int = 0
    _idle_closed: int = 0
    _requests: int = 0
    _errors: Counter[str] = attrs.Factory(Counter)
    _proofs: Counter[str] = attrs.Factory(Counter)
    _listeners: list[_TrackingListener] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        if self.store is not None:
            self.registry.record_changes = True

    async def serve(
        self, address: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``address`` (``HOST:PORT``, port 0 for any) until cancelled.

        Reports the actual address through ``task_status``.  Binding happens before
        any task starts, so a busy port raises a plain :class:`OSError`.
        """
        host, port = parse_address(address, any_port=True)
        self._listeners = [_TrackingListener(listener)
                           for listener in await trio.open_tcp_listeners(port, host=host)]
        async with trio.open_nursery() as nursery:
            server = trio_websocket.WebSocketServer(
                self._handle,
                list(self._listeners),  # type: ignore[arg-type]  # any trio Listener serves
                handler_nursery=nursery,
                max_message_size=MAX_WEBSOCKET_MESSAGE,
                connect_timeout=self.config.handshake_timeout,
                disconnect_timeout=self.config.close_timeout,
            )
            await nursery.start(lambda task_status: server.run(task_status=task_status))
            nursery.start_soon(self._expire_periodically)
            actual = format_address(host, self._listeners[0].inner.socket.getsockname()[1])
            logger.info("bootstrap node listening on %s", actual)
            task_status.started(actual)

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            connections_open=self._open,
            connections_accepted=self._accepted,
            connections_refused=self._refused,
            idle_closed=self._idle_closed,
            requests=self._requests,
            errors=dict(self._errors),
            proofs=dict(self._proofs),
            store_errors=self.store.errors if self.store is not None else 0,
        )

    # --- internals -----------------------------------------------------------------

    async def _expire_periodically(self) -> None:
        while True:
            await trio.sleep(self.config.expire_interval)
            now = self.clock()
            removed = self.registry.expire(now)
            if removed:
                logger.debug("expired %d announcements", removed)
            if self.store is not None:
                self.store.sweep(now, self.registry.tombstone_horizon(now))

    async def _handle(self, request: WebSocketRequest) -> None:
        source = _source_ip(request)
        config = self.config
        try:
            if self._open >= config.max_connections or (
                self._per_ip[source] >= config.max_connections_per_ip
            ):
                self._refused += 1
                self._errors[ErrorCode.TOO_MANY_CONNECTIONS] += 1
                logger.debug("refused a connection from %s: too many open", source)
                await request.reject(HTTP_SERVICE_UNAVAILABLE,
                                     body=ErrorCode.TOO_MANY_CONNECTIONS.encode())
                return
            self._open += 1
            self._per_ip[source] += 1
            try:
                websocket = await request.accept()
                self._accepted += 1
                await self._converse(websocket, source)
            except ConnectionClosed as exc:
                if exc.reason is not None and exc.reason.code == CLOSE_MESSAGE_TOO_BIG:
                    self._errors[ErrorCode.TOO_LARGE] += 1
                    await self._close_stream_later(request)  # still counted meanwhile
            finally:
                self._open -= 1
                self._per_ip[source] -= 1
                if not self._per_ip[source]:
                    del self._per_ip[source]
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError,
                trio.TooSlowError, OSError):
            pass
        except Exception:  # a bug: log it, and keep serving everyone else
            logger.exception("connection from %s failed", source)

    async def _close_stream_later(self, request: WebSocketRequest) -> None:
        """Close the TCP stream if the client has not completed the closing handshake
        within ``close_timeout`` (see :class:`_TrackingListener`)."""
        remote = request.remote
        if not isinstance(remote, trio_websocket.Endpoint):
            return
        key = (str(remote.address), remote.port)
        stream = next((listener.streams[key] for listener in self._listeners
                       if key in listener.streams), None)
        if stream is not None:
            await trio.sleep(self.config.close_timeout)
            await stream.aclose()

    async def _converse(self, websocket: WebSocketConnection, source: str) -> None:
        config = self.config
        session = Session(
            source,
            self.registry,
            self.cookies,
            TokenBucket.full(config.request_rate, config.request_burst, trio.current_time()),
            self._errors,
            self._proofs,
        )
        while True:
            message: bytes | str | None = None
            with trio.move_on_after(config.idle_timeout):
                message = await websocket.get_message()
            if message is None:
                self._idle_closed += 1
                logger.debug("closing a connection idle for %g s", config.idle_timeout)
                with trio.move_on_after(config.close_timeout):
                    await websocket.aclose(CLOSE_NORMAL, ErrorCode.IDLE_TIMEOUT)
                return
            self._requests += 1
            reply = session.respond(message, trio.current_time(), self.clock())
            if self.store is not None:
                self.store.apply(self.registry.take_changes())
            if reply is not None:
                with trio.fail_after(config.send_timeout):
                    await websocket.send_message(reply)


def _source_ip(request: WebSocketRequest) -> str:
    remote = request.remote
    return str(remote.address) if isinstance(remote, trio_websocket.Endpoint) else str(remote)


async def serve_bootstrap(
    address: str,
    *,
    registry: Registry | None = None,
    config: BootstrapConfig | None = None,
    clock: Callable[[], float] = time.time,
    state: Path | str | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a bootstrap node on ``address`` until cancelled; reports ``"HOST:PORT"``.

    With ``state``, the node loads that file first and writes every change to it
    (:class:`~bootstrap.store.StoreError` if it cannot be used).
    """
    registry = registry if registry is not None else Registry()
    store = None
    if state is not None:
        store = AnnouncementStore.open(state)
        report = store.restore(registry, clock())
        logger.info("restored from %s: %s", state, report)
    try:
        server = BootstrapServer(registry, config or BootstrapConfig(), clock, store)
        await server.serve(address, task_status=task_status)
    finally:
        if store is not None:
            store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The ``mitalk-bootstrap`` console script (see :mod:`bootstrap.command`)."""
    from .command import main as command_main  # the command module builds on this one

    return command_main(argv)
