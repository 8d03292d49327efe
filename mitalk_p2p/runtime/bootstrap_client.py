"""Talking to bootstrap nodes: announce a room, withdraw it, look rooms up.

A bootstrap node is not trusted, so every announcement it returns is checked
here against its own signature, and one that fails is dropped.  That proves only
that the room's signer said it; the room's handshake still decides whom a peer
is talking to.

Each call opens one websocket, sends one request, reads one reply and closes,
all within ``node_timeout`` seconds.  Failures raise :class:`BootstrapError` with a
one-line message and a ``code``: the node's own refusal code, or ``unreachable``,
``timeout``, ``closed``, ``bad-reply`` or ``bad-address`` for failures on the
way.  The ``*_all`` helpers ask several nodes at once and tolerate some of them
being down.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import attrs
import trio
import wsproto.utilities
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    TextMessage,
)
from wsproto.events import Request as WsRequest

from bootstrap.announcement import Announcement, Withdrawal
from bootstrap.protocol import (
    MAX_RESPONSE_SIZE,
    Announce,
    Error,
    LookupId,
    LookupName,
    Ok,
    Request,
    Rooms,
    Withdraw,
    decode_response,
    encode_request,
)

from ..core.errors import LocalProtocolError, MitalkError, WireError
from ..core.ids import RoomId
from .addresses import AddressError, format_address, parse_address

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds one request to one node may take, connecting included."""
CLOSE_TIMEOUT: Final = 1.0
"""Seconds to wait for the node to end the connection after a reply."""
RECEIVE_SIZE: Final = 65536
WITHDRAW_TIMEOUT: Final = 2.0
"""Seconds :func:`keep_announced` spends withdrawing when it is cancelled."""


class BootstrapError(MitalkError):
    """A bootstrap node could not be used.  ``str()`` is one line for the person at the terminal."""

    def __init__(self, node: str, code: str, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.code = code


@attrs.frozen
class Delivery:
    """Which nodes took a record and which did not (and why)."""

    accepted: tuple[str, ...]
    failed: tuple[BootstrapError, ...]


def _endpoint(node: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``ws://HOST:PORT[/path]`` → ``(host, port)``."""
    text = node.strip()
    if text.startswith("ws://"):
        text = text.removeprefix("ws://").split("/", 1)[0]
    elif "://" in text:
        raise BootstrapError(node, "bad-address",
                             f"bootstrap node {node!r}: only ws:// URLs or HOST:PORT are supported")
    try:
        return parse_address(text)
    except AddressError as exc:
        raise BootstrapError(node, "bad-address", f"bootstrap node {node!r}: {exc}") from None


class _Failed(Exception):
    """A failure on the way to a reply: a :class:`BootstrapError` code and the reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def _exchange(node: str, request: Request, node_timeout: float) -> Ok | Rooms:
    """Send ``request`` to ``node`` and return its reply; errors become :class:`BootstrapError`."""
    host, port = _endpoint(node)
    try:
        reply = await _round_trip(host, port, encode_request(request), node_timeout)
    except _Failed as exc:
        raise BootstrapError(node, exc.code, f"bootstrap node {node} {exc.reason}") from None
    try:
        response = decode_response(reply)
    except WireError as exc:
        raise BootstrapError(node, "bad-reply",
                             f"bootstrap node {node} sent a malformed reply: {exc}") from None
    if isinstance(response, Error):
        raise BootstrapError(node, response.code, f"bootstrap node {node} refused the request "
                             f"({response.code}): {response.message}")
    return response


async def _round_trip(host: str, port: int, message: bytes, node_timeout: float) -> bytes:
    """One binary message out and one back, over a websocket owned here end to end.

    This speaks wsproto directly rather than through trio-websocket, whose client
    leaves its socket open when a server rejects the handshake or closes first; and a
    single exchange needs no background reader task.
    """
    deadline = trio.current_time() + node_timeout
    too_slow = _Failed("timeout", f"did not answer within {node_timeout:g} s")
    with trio.move_on_at(deadline) as connecting:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise _Failed("unreachable", f"is unreachable: {_reason(exc)}") from None
    if connecting.cancelled_caught:
        raise too_slow
    async with stream:
        ws = WSConnection(ConnectionType.CLIENT)
        reply: bytes | None = None
        with trio.move_on_at(deadline):
            try:
                handshake = WsRequest(host=format_address(host, port), target="/")
                await stream.send_all(ws.send(handshake))
                reply = await _receive_reply(stream, ws, message)
            except trio.BrokenResourceError:
                raise _Failed("closed", "closed the connection without answering") from None
            except (wsproto.utilities.RemoteProtocolError,
                    wsproto.utilities.LocalProtocolError) as exc:
                raise _Failed("bad-reply", f"does not speak the websocket protocol ({exc})"
                              ) from None
        if reply is None:
            raise too_slow
        if ws.state is ConnectionState.OPEN:
            # Close politely, then wait briefly for the server to end TCP (RFC 6455 §7.1.1).
            with contextlib.suppress(trio.BrokenResourceError), trio.move_on_after(CLOSE_TIMEOUT):
                await stream.send_all(ws.send(CloseConnection(code=1000)))
                while await stream.receive_some(RECEIVE_SIZE):
                    pass
        return reply


async def _receive_reply(stream: trio.SocketStream, ws: WSConnection, message: bytes) -> bytes:
    """Complete the handshake, send ``message`` and return the first whole reply."""
    parts: list[bytes] = []
    size = 0
    while True:
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            raise _Failed("closed", "closed the connection without answering")
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                await stream.send_all(ws.send(BytesMessage(data=message)))
            elif isinstance(event, RejectConnection):
                raise _Failed("busy", f"refused the connection (HTTP {event.status_code}; "
                              "too many connections?)")
            elif isinstance(event, BytesMessage):
                size += len(event.data)
                if size > MAX_RESPONSE_SIZE:
                    raise _Failed("bad-reply", "sent a reply larger than any valid one")
                parts.append(bytes(event.data))
                if event.message_finished:
                    return b"".join(parts)
            elif isinstance(event, TextMessage):
                raise _Failed("bad-reply", "sent a text reply")
            elif isinstance(event, Ping):
                await stream.send_all(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                reason = f": {event.reason}" if event.reason else ""
                raise _Failed("closed", "closed the connection without answering "
                              f"(code {event.code}{reason})")


def _reason(exc: BaseException) -> str:
    """The root cause in a few words: trio nests the per-attempt errors of a failed connect."""
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, BaseExceptionGroup):
        cause = cause.exceptions[0]
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused (nothing is listening there)"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(cause) or type(cause).__name__


async def _ask_ok(node: str, request: Request, node_timeout: float) -> Ok:
    response = await _exchange(node, request, node_timeout)
    if not isinstance(response, Ok):
        raise BootstrapError(node, "bad-reply", f"bootstrap node {node} sent an unexpected reply")
    return response


async def _ask_rooms(node: str, request: Request, node_timeout: float) -> Rooms:
    response = await _exchange(node, request, node_timeout)
    if not isinstance(response, Rooms):
        raise BootstrapError(node, "bad-reply", f"bootstrap node {node} sent an unexpected reply")
    return response


def _authentic(node: str, rooms: Sequence[Announcement]) -> list[Announcement]:
    kept = [room for room in rooms if room.verify()]
    if len(kept) < len(rooms):
        logger.info("dropped %d badly signed announcements from %s", len(rooms) - len(kept), node)
    return kept


# --- one node ------------------------------------------------------------------------


async def announce(
    node: str, announcement: Announcement, *, node_timeout: float = DEFAULT_TIMEOUT
) -> str:
    """Store ``announcement`` on ``node``; returns what it did: added, replaced or kept."""
    return (await _ask_ok(node, Announce(announcement), node_timeout)).detail


async def withdraw(
    node: str, withdrawal: Withdrawal, *, node_timeout: float = DEFAULT_TIMEOUT
) -> bool:
    """Ask ``node`` to drop the room's announcement; False if it held none."""
    return (await _ask_ok(node, Withdraw(withdrawal), node_timeout)).detail == "withdrawn"


async def lookup_id(
    node: str, room_id: RoomId, *, node_timeout: float = DEFAULT_TIMEOUT
) -> Announcement | None:
    """The room's current announcement on ``node``, if it holds an authentic one."""
    response = await _ask_rooms(node, LookupId(room_id), node_timeout)
    found = [room for room in _authentic(node, response.rooms) if room.room_id == room_id]
    return max(found, key=lambda room: room.rank_key, default=None)


async def lookup_name(
    node: str, text: str, *, node_timeout: float = DEFAULT_TIMEOUT
) -> list[Announcement]:
    """Rooms on ``node`` whose name contains ``text`` (ignoring case)."""
    response = await _ask_rooms(node, LookupName(text), node_timeout)
    folded = text.casefold()
    return [room for room in _authentic(node, response.rooms) if folded in room.name.casefold()]


# --- several nodes -------------------------------------------------------------------


def merge(announcements: Sequence[Announcement]) -> list[Announcement]:
    """One announcement per room, the freshest (highest term, then latest expiry).

    Ordered by listener count, then name, as a room list is shown.
    """
    best: dict[RoomId, Announcement] = {}
    for room in announcements:
        known = best.get(room.room_id)
        if known is None or room.rank_key > known.rank_key:
            best[room.room_id] = room
    return sorted(best.values(), key=lambda r: (-r.listener_count, r.name.casefold(), r.room_id))


async def query_all(
    nodes: Sequence[str], text: str, *, node_timeout: float = DEFAULT_TIMEOUT
) -> list[Announcement]:
    """Ask every node in parallel for rooms named like ``text`` and merge the answers.

    Nodes that fail are logged and skipped; only if all fail is :class:`BootstrapError`
    raised, listing each failure.
    """
    if not nodes:
        raise LocalProtocolError("no bootstrap nodes to ask")
    found: list[Announcement] = []
    failures: list[BootstrapError] = []

    async def ask(node: str) -> None:
        try:
            found.extend(await lookup_name(node, text, node_timeout=node_timeout))
        except BootstrapError as exc:
            logger.info("%s", exc)
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        for node in dict.fromkeys(nodes):
            nursery.start_soon(ask, node)
    if len(failures) == len(dict.fromkeys(nodes)):
        raise _all_failed(failures)
    return merge(found)


def _all_failed(failures: Sequence[BootstrapError]) -> BootstrapError:
    if len(failures) == 1:
        return failures[0]
    reasons = "; ".join(str(failure) for failure in failures)
    nodes = ", ".join(failure.node for failure in failures)
    return BootstrapError(nodes, "unavailable", f"no bootstrap node answered: {reasons}")


async def _deliver(nodes: Sequence[str], send: Callable[[str], Awaitable[object]]) -> Delivery:
    accepted: list[str] = []
    failed: list[BootstrapError] = []

    async def one(node: str) -> None:
        try:
            await send(node)
        except BootstrapError as exc:
            logger.info("%s", exc)
            failed.append(exc)
        else:
            accepted.append(node)

    async with trio.open_nursery() as nursery:
        for node in dict.fromkeys(nodes):
            nursery.start_soon(one, node)
    return Delivery(tuple(accepted), tuple(failed))


async def announce_all(nodes: Sequence[str], announcement: Announcement, *,
                       node_timeout: float = DEFAULT_TIMEOUT) -> Delivery:
    """Announce to every node in parallel; never raises for a node's failure."""
    return await _deliver(
        nodes, lambda node: announce(node, announcement, node_timeout=node_timeout)
    )


async def withdraw_all(nodes: Sequence[str], withdrawal: Withdrawal, *,
                       node_timeout: float = DEFAULT_TIMEOUT) -> Delivery:
    """Withdraw from every node in parallel; never raises for a node's failure."""
    return await _deliver(
        nodes, lambda node: withdraw(node, withdrawal, node_timeout=node_timeout)
    )


async def keep_announced(
    nodes: Sequence[str],
    make_announcement: Callable[[], Announcement],
    *,
    interval: float,
    make_withdrawal: Callable[[], Withdrawal] | None = None,
    retry_interval: float = 5.0,
    node_timeout: float = DEFAULT_TIMEOUT,
    withdraw_timeout: float = WITHDRAW_TIMEOUT,
    task_status: trio.TaskStatus[Delivery] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep a running room announced until cancelled, then withdraw it.

    Re-announces every ``interval`` seconds (choose it well below the announcement
    lifetime), or after ``retry_interval`` if no node took the last one.  A fresh
    announcement is made each round, so listener counts and addresses stay current.
    On cancellation it withdraws from every node, best effort and within
    ``withdraw_timeout``; without ``make_withdrawal`` the announcement simply lapses
    at its expiry.  Reports the first round's :class:`Delivery` through ``task_status``.
    """
    started = False
    try:
        while True:
            delivery = await announce_all(nodes, make_announcement(), node_timeout=node_timeout)
            if not started:
                task_status.started(delivery)
                started = True
            await trio.sleep(interval if delivery.accepted else min(interval, retry_interval))
    finally:
        if make_withdrawal is not None:
            with trio.move_on_after(withdraw_timeout, shield=True):
                await withdraw_all(nodes, make_withdrawal(), node_timeout=withdraw_timeout)
