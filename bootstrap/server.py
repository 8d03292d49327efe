"""The bootstrap node: a trio-websocket server in front of a :class:`Registry`.

Everything a client sends is untrusted.  Each connection gets a token bucket
(too many requests are answered ``rate-limited`` without being decoded), an idle
timeout, and a share of a per-source-IP connection cap.  A bad request is
answered with an error and counted; it never ends more than its own connection,
and never the server.

:func:`answer` is the whole request logic without I/O, so it can be tested (and
later reused by another transport) with ``now`` passed in.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Final, NoReturn, assert_never

import attrs
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from mitalk_p2p.core.errors import WireError
from mitalk_p2p.runtime.addresses import AddressError, format_address, parse_address

from .protocol import (
    MAX_REQUEST_SIZE,
    Announce,
    Error,
    ErrorCode,
    LookupId,
    LookupName,
    Ok,
    ProtocolError,
    Response,
    Rooms,
    Withdraw,
    decode_request,
    encode_response,
)
from .registry import Registry, RegistryConfig, RegistryError

logger = logging.getLogger(__name__)

PROG: Final = "mitalk-bootstrap"
EXIT_ERROR: Final = 2
EXIT_INTERRUPTED: Final = 130
MAX_WEBSOCKET_MESSAGE: Final = 2 * MAX_REQUEST_SIZE
"""Messages up to this size are read and answered ``too-large``; larger ones end the
connection (websocket close code 1009) without being buffered further."""
_CLOSE_MESSAGE_TOO_BIG: Final = 1009


@attrs.frozen
class BootstrapConfig:
    max_connections: int = 4096
    """Open connections in total; more are refused with HTTP 503."""
    max_connections_per_ip: int = 32
    """Open connections from one source IP; more are refused with HTTP 503."""
    idle_timeout: float = 60.0
    """Seconds a connection may stay silent before the node closes it."""
    handshake_timeout: float = 5.0
    """Seconds a client has to complete the websocket opening handshake."""
    send_timeout: float = 10.0
    """Seconds a reply may take to send before the node gives up on the client."""
    close_timeout: float = 1.0
    """Seconds to wait for the client's side of a closing handshake."""
    request_rate: float = 5.0
    """Requests per second one connection may sustain."""
    request_burst: int = 20
    """Requests one connection may send at once after being quiet."""
    expire_interval: float = 30.0
    """Seconds between sweeps that drop expired announcements."""


@attrs.define
class TokenBucket:
    """A request budget that refills at ``rate`` per second up to ``burst``."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


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


def answer(registry: Registry, message: bytes | str, now: float) -> Response:
    """The reply to one request message.  Never raises for bad input."""
    if isinstance(message, str):
        return Error(ErrorCode.MALFORMED, "requests are binary websocket messages")
    try:
        request = decode_request(message)
    except ProtocolError as exc:
        return Error(exc.code, str(exc))
    except WireError as exc:
        return Error(ErrorCode.MALFORMED, str(exc))
    try:
        if isinstance(request, Announce):
            return Ok(registry.announce(request.announcement, now).value)
        if isinstance(request, Withdraw):
            return Ok("withdrawn" if registry.withdraw(request.withdrawal, now) else "absent")
        if isinstance(request, LookupId):
            found = registry.lookup_id(request.room_id, now)
            return Rooms(() if found is None else (found,))
        if isinstance(request, LookupName):
            return Rooms(tuple(registry.lookup_name(request.text, now)))
        assert_never(request)
    except RegistryError as exc:
        return Error(exc.code.value, str(exc))


@attrs.define(eq=False)
class BootstrapServer:
    """One bootstrap node: its registry, its limits and its counters."""

    registry: Registry = attrs.Factory(Registry)
    config: BootstrapConfig = attrs.Factory(BootstrapConfig)
    clock: Callable[[], float] = time.time
    """Wall-clock unix seconds, for expiry (the limits use trio's clock)."""
    _per_ip: Counter[str] = attrs.Factory(Counter)
    _open: int = 0
    _accepted: int = 0
    _refused: int = 0
    _idle_closed: int = 0
    _requests: int = 0
    _errors: Counter[str] = attrs.Factory(Counter)

    async def serve(
        self, address: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``address`` (``HOST:PORT``, port 0 for any) until cancelled.

        Reports the actual address through ``task_status``.  Binding happens before
        any task starts, so a busy port raises a plain :class:`OSError`.
        """
        host, port = parse_address(address, any_port=True)
        listeners = await trio.open_tcp_listeners(port, host=host)
        async with trio.open_nursery() as nursery:
            server = trio_websocket.WebSocketServer(
                self._handle,
                listeners,
                handler_nursery=nursery,
                max_message_size=MAX_WEBSOCKET_MESSAGE,
                connect_timeout=self.config.handshake_timeout,
                disconnect_timeout=self.config.close_timeout,
            )
            await nursery.start(lambda task_status: server.run(task_status=task_status))
            nursery.start_soon(self._expire_periodically)
            actual = format_address(host, server.port)
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
        )

    # --- internals -----------------------------------------------------------------

    async def _expire_periodically(self) -> None:
        while True:
            await trio.sleep(self.config.expire_interval)
            removed = self.registry.expire(self.clock())
            if removed:
                logger.debug("expired %d announcements", removed)

    async def _handle(self, request: WebSocketRequest) -> None:
        source = _source_ip(request)
        config = self.config
        try:
            if self._open >= config.max_connections or (
                self._per_ip[source] >= config.max_connections_per_ip
            ):
                self._refused += 1
                logger.debug("refused a connection from %s: too many open", source)
                await request.reject(503)
                return
            self._open += 1
            self._per_ip[source] += 1
            try:
                websocket = await request.accept()
                self._accepted += 1
                await self._converse(websocket)
            finally:
                self._open -= 1
                self._per_ip[source] -= 1
                if not self._per_ip[source]:
                    del self._per_ip[source]
        except ConnectionClosed as exc:
            if exc.reason is not None and exc.reason.code == _CLOSE_MESSAGE_TOO_BIG:
                self._errors[ErrorCode.TOO_LARGE.value] += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            pass
        except Exception:  # a bug: log it, and keep serving everyone else
            logger.exception("connection from %s failed", source)

    async def _converse(self, websocket: WebSocketConnection) -> None:
        config = self.config
        bucket = TokenBucket.full(config.request_rate, config.request_burst, trio.current_time())
        while True:
            message: bytes | str | None = None
            with trio.move_on_after(config.idle_timeout):
                message = await websocket.get_message()
            if message is None:
                self._idle_closed += 1
                logger.debug("closing a connection idle for %g s", config.idle_timeout)
                with trio.move_on_after(config.close_timeout):
                    await websocket.aclose(1000, "idle")
                return
            self._requests += 1
            if bucket.take(trio.current_time()):
                response = self._answer(message)
            else:
                response = Error(ErrorCode.RATE_LIMITED, "too many requests; slow down")
            if isinstance(response, Error):
                self._errors[response.code] += 1
            with trio.fail_after(config.send_timeout):
                await websocket.send_message(encode_response(response))

    def _answer(self, message: bytes | str) -> Response:
        try:
            return answer(self.registry, message, self.clock())
        except Exception:  # a bug, not bad input: answer() handles all of that
            logger.exception("failed to answer a request")
            return Error(ErrorCode.INTERNAL, "the node failed to answer this request")


def _source_ip(request: WebSocketRequest) -> str:
    remote = request.remote
    return str(remote.address) if isinstance(remote, trio_websocket.Endpoint) else str(remote)


async def serve_bootstrap(
    address: str,
    *,
    registry: Registry | None = None,
    config: BootstrapConfig | None = None,
    clock: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a bootstrap node on ``address`` until cancelled; reports ``"HOST:PORT"``."""
    server = BootstrapServer(
        registry if registry is not None else Registry(),
        config if config is not None else BootstrapConfig(),
        clock,
    )
    await server.serve(address, task_status=task_status)


# --- command line ----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{PROG}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Run a bootstrap node: a rendezvous where peers find rooms by name or id. "
        "It stores signed announcements only; it cannot let anyone into a room.",
    )
    parser.add_argument("--listen", required=True, metavar="HOST:PORT",
                        help="address to listen on, e.g. 0.0.0.0:4400 or [::]:4400")
    defaults = RegistryConfig()
    limits = BootstrapConfig()
    parser.add_argument("--max-rooms", type=int, default=defaults.max_rooms, metavar="N",
                        help=f"rooms to hold at most (default {defaults.max_rooms})")
    parser.add_argument("--max-connections-per-ip", type=int, metavar="N",
                        default=limits.max_connections_per_ip,
                        help=f"connections per source IP (default "
                        f"{limits.max_connections_per_ip})")
    parser.add_argument("--idle-timeout", type=float, default=limits.idle_timeout,
                        metavar="SECONDS",
                        help="close silent connections after this many seconds "
                        f"(default {limits.idle_timeout:g})")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log refused and idle connections")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mitalk-bootstrap``; returns the exit status (errors are one line on stderr)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    address: str = args.listen
    try:
        parse_address(address, any_port=True)
    except AddressError as exc:
        return _fail(str(exc))
    if args.max_rooms < 1 or args.max_connections_per_ip < 1 or args.idle_timeout <= 0:
        return _fail("--max-rooms, --max-connections-per-ip and --idle-timeout must be positive")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    registry = Registry(RegistryConfig(max_rooms=args.max_rooms))
    config = BootstrapConfig(
        max_connections_per_ip=args.max_connections_per_ip, idle_timeout=args.idle_timeout
    )
    try:
        trio.run(_run, address, registry, config)
    except (OSError, KeyboardInterrupt, BaseExceptionGroup) as exc:
        leaves = _leaves(exc)
        if all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            return EXIT_INTERRUPTED
        if all(isinstance(leaf, OSError) for leaf in leaves):
            error = leaves[0]
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            return _fail(f"cannot listen on {address}: {reason}")
        raise
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def _run(address: str, registry: Registry, config: BootstrapConfig) -> None:
    async with trio.open_nursery() as nursery:
        actual = await nursery.start(
            lambda task_status: serve_bootstrap(
                address, registry=registry, config=config, task_status=task_status
            )
        )
        print(f"{PROG}: listening on {actual}", flush=True)


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_ERROR
