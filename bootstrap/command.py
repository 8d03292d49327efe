"""The bootstrap node's command line, shared by ``mitalk-bootstrap`` and ``mitalk bootstrap``.

:func:`add_options` declares the node's options on any parser and :func:`run`
runs a node from the parsed arguments, so both commands take the same options.
Once listening, the node prints one line to stdout ending in the ``ws://`` URL it
serves.  SIGTERM stops it with status 0, Ctrl-C (SIGINT) with 130; either way
the state file is closed properly.  Problems are one line: :class:`NodeError`
(or :class:`~bootstrap.store.StoreError`), both :class:`MitalkError`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn, TextIO

import attrs
import trio

from mitalk_p2p.arg_types import bounded_int
from mitalk_p2p.core.errors import MitalkError, leaf_exceptions
from mitalk_p2p.runtime.addresses import AddressError, parse_address

from .announcement import MAX_ADDRESSES
from .config import BootstrapConfig
from .registry import Registry, RegistryConfig

if TYPE_CHECKING:
    from .server import BootstrapServer

logger = logging.getLogger(__name__)

PROG: Final = "mitalk-bootstrap"
EXIT_OK: Final = 0
EXIT_ERROR: Final = 2
EXIT_INTERRUPTED: Final = 130
DESCRIPTION: Final = (
    "Run a bootstrap node: a rendezvous where peers find rooms by name or id. "
    "It stores signed announcements only; it cannot let anyone into a room."
)


class NodeError(MitalkError):
    """The node cannot run as asked; ``str()`` is one line."""


def _listen_address(text: str) -> str:
    try:
        parse_address(text, any_port=True)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (above 0, at most 86400)")
    return value


def add_options(parser: argparse.ArgumentParser) -> None:
    """Declare the node's options (all but logging, which each command does its own way)."""
    rooms = RegistryConfig()
    limits = BootstrapConfig()
    parser.add_argument("--listen", required=True, type=_listen_address, metavar="HOST:PORT",
                        help="address to listen on, e.g. 0.0.0.0:4400 or [::]:4400 "
                        "(port 0: any free port)")
    parser.add_argument("--state", type=Path, metavar="FILE",
                        help="keep announcements in this SQLite file, so a restart loses none")
    group = parser.add_argument_group("limits")
    group.add_argument("--max-rooms", type=bounded_int(1, 10_000_000), metavar="N",
                       default=rooms.max_rooms,
                       help=f"rooms to hold at most (default {rooms.max_rooms})")
    group.add_argument("--max-addresses", type=bounded_int(1, MAX_ADDRESSES), metavar="N",
                       default=rooms.max_addresses,
                       help=f"addresses one room may list (default {rooms.max_addresses})")
    group.add_argument("--max-connections", type=bounded_int(1, 1_000_000), metavar="N",
                       default=limits.max_connections,
                       help=f"open connections in total (default {limits.max_connections})")
    group.add_argument("--max-connections-per-ip", type=bounded_int(1, 1_000_000),
                       metavar="N", default=limits.max_connections_per_ip,
                       help="open connections from one source IP "
                       f"(default {limits.max_connections_per_ip})")
    group.add_argument("--idle-timeout", type=_positive_seconds, metavar="SECONDS",
                       default=limits.idle_timeout,
                       help="close silent connections after this many seconds "
                       f"(default {limits.idle_timeout:g})")
    group.add_argument("--request-rate", type=_positive_seconds, metavar="PER_SECOND",
                       default=limits.request_rate,
                       help=f"requests per second one connection may sustain "
                       f"(default {limits.request_rate:g})")
    group.add_argument("--request-burst", type=bounded_int(1, 10_000), metavar="N",
                       default=limits.request_burst,
                       help=f"requests one connection may send at once "
                       f"(default {limits.request_burst})")


@attrs.frozen
class NodeSettings:
    """Everything :func:`add_options` declares, checked."""

    address: str
    state: Path | None
    registry: RegistryConfig
    limits: BootstrapConfig

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NodeSettings:
        return cls(
            address=args.listen,
            state=args.state,
            registry=RegistryConfig(max_rooms=args.max_rooms, max_addresses=args.max_addresses),
            limits=BootstrapConfig(
                max_connections=args.max_connections,
                max_connections_per_ip=args.max_connections_per_ip,
                idle_timeout=args.idle_timeout,
                request_rate=args.request_rate,
                request_burst=args.request_burst,
            ),
        )


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run a node from :func:`add_options`'s arguments until SIGTERM or SIGINT.

    Returns the exit status; raises :class:`MitalkError` (one line) if it cannot run.
    """
    from .server import BootstrapServer  # imported here: declaring options stays cheap
    from .store import AnnouncementStore

    settings = NodeSettings.from_args(args)
    registry = Registry(settings.registry)
    store = None
    if settings.state is not None:
        store = AnnouncementStore.open(settings.state)
    try:
        if store is not None:
            report = store.restore(registry, time.time())
            logger.info("restored from %s: %s", settings.state, report)
        server = BootstrapServer(registry, settings.limits, store=store)
        try:
            signum = trio.run(_serve_until_signal, server, settings.address, out)
        except (OSError, BaseExceptionGroup) as exc:
            leaves = leaf_exceptions(exc)
            if not all(isinstance(leaf, OSError) for leaf in leaves):
                raise
            error = leaves[0]
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise NodeError(f"cannot listen on {settings.address}: {reason}") from None
    finally:
        if store is not None:
            store.close()
    return EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_OK


async def _serve_until_signal(server: BootstrapServer, address: str, out: TextIO) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            actual = await nursery.start(server.serve, address)
            print(f"bootstrap node listening on ws://{actual}/", file=out, flush=True)
            async for signum in signals:
                logger.info("stopping on signal %d", signum)
                nursery.cancel_scope.cancel()
                return int(signum)
    raise AssertionError("the signal receiver ended")  # pragma: no cover


# --- mitalk-bootstrap ------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{PROG}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=DESCRIPTION)
    add_options(parser)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log restores, refused and idle connections")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mitalk-bootstrap``; returns the exit status (errors are one line on stderr)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return run(args, sys.stdout)
    except MitalkError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:  # before the node listens for signals itself
        return EXIT_INTERRUPTED
