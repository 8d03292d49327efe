"""Talking to bootstrap nodes: announce a room, withdraw it, look rooms up.

A bootstrap node is not trusted, so every announcement it returns is checked
here against its own signature, and one that fails is dropped.  That proves only
that the room's signer said it; the room's handshake still decides whom a peer
is talking to.

Each call opens one websocket, sends one request, reads one reply and closes,
all within ``node_timeout`` seconds.  When the node asks this client to prove its
address first (see :mod:`bootstrap.protocol`), the call does so on the same
connection, and the caller sees only the final reply.  Failures raise
:class:`BootstrapError` with a one-line message and a ``code``: the node's own
refusal code (``too-many-connections`` and ``idle-timeout`` included), or
``unreachable``, ``timeout``, ``closed``, ``busy``, ``bad-reply``,
``address-proof-required`` or ``bad-address`` for failures on the way.

Several nodes: :func:`find_room` and :func:`query_all` ask them all at once,
:func:`announce_all` and :func:`keep_announced` announce to each independently,
so one node being down changes nothing while another answers.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import deque
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
    Event,
    Ping,
    RejectConnection,
    RejectData,
    TextMessage,
)
from wsproto.events import Request as WsRequest

from bootstrap.announcement import Announcement, Withdrawal
from bootstrap.protocol import (
    MAX_RESPONSE_SIZE,
    NO_COOKIE,
    PROOF_REQUIRED_SIZE,
    Announce,
    Error,
    ErrorCode,
    LookupId,
    LookupName,
    Ok,
    PlainRequest,
    ProofRequired,
    Prove,
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
MAX_PROOF_ROUNDS: Final = 3
"""Requests sent for one call at most: as is (or with no cookie), with a cookie, once more."""
MAX_REJECT_BODY: Final = 256
_CODE: Final = re.compile(r"[a-z][a-z0-9-]{0,31}")
"""What a code from the node looks like (anything else is not shown as a code)."""


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


async def _exchange(node: str, request: PlainRequest, node_timeout: float) -> Ok | Rooms:
    """Send ``request`` to ``node`` and return its reply; errors become :class:`BootstrapError`.

    Proves this client's address when the node asks (see :mod:`bootstrap.protocol`),
    so callers see only the final reply.
    """
    host, port = _endpoint(node)
    try:
        return await _converse(host, port, request, node_timeout)
    except _Failed as exc:
        raise BootstrapError(node, exc.code, f"bootstrap node {node} {exc.reason}") from None


async def _converse(host: str, port: int, request: PlainRequest, node_timeout: float) -> Ok | Rooms:
    """Connect, ask and close: all but the polite close within ``node_timeout``."""
    reply: Ok | Rooms | None = None
    with trio.move_on_after(node_timeout):
        connection = await _Connection.open(host, port)
        try:
            reply = await _ask(connection, request)
        finally:
            if reply is None:
                await connection.stream.aclose()
    if reply is None:
        raise _Failed("timeout", f"did not answer within {node_timeout:g} s")
    await connection.close()
    return reply


async def _ask(connection: _Connection, request: PlainRequest) -> Ok | Rooms:
    """Send ``request`` until the node gives a real reply, proving the address on the way."""
    message = encode_request(request)
    if len(message) < PROOF_REQUIRED_SIZE:  # too small to be answered with a cookie
        message = encode_request(Prove(NO_COOKIE, request))
    for _ in range(MAX_PROOF_ROUNDS):
        await connection.send(message)
        try:
            response = decode_response(await connection.receive())
        except WireError as exc:
            raise _Failed("bad-reply", f"sent a malformed reply: {exc}") from None
        if isinstance(response, ProofRequired):
            message = encode_request(Prove(response.cookie or NO_COOKIE, request))
            continue
        if isinstance(response, Error):
            raise _Failed(response.code,
                          f"refused the request ({response.code}): {response.message}")
        return response
    raise _Failed(ErrorCode.ADDRESS_PROOF_REQUIRED, "kept asking for an address proof")


class _Connection:
    """One websocket to a node, spoken with wsproto directly.

    Not trio-websocket, whose client leaves its socket open when a server rejects
    the handshake or closes first; and a request-reply exchange needs no background
    reader task.
    """

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self._events: deque[Event] = deque()

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise _Failed("unreachable", f"is unreachable: {_reason(exc)}") from None
        connection = cls(stream, WSConnection(ConnectionType.CLIENT))
        try:
            await connection._handshake(format_address(host, port))
        except BaseException:
            await stream.aclose()
            raise
        return connection

    async def _handshake(self, host: str) -> None:
        await self._send_event(WsRequest(host=host, target="/"))
        while True:
            event = await self._next_event()
            if isinstance(event, AcceptConnection):
                return
            if isinstance(event, RejectConnection):
                code = await self._reject_code(event)
                raise _Failed(code, f"refused the connection (HTTP {event.status_code}: {code})")

    async def _reject_code(self, event: RejectConnection) -> str:
        body = b""
        finished = not event.has_body
        while not finished and len(body) <= MAX_REJECT_BODY:
            data = await self._next_event()
            if isinstance(data, RejectData):
                body += data.data
                finished = data.body_finished
        text = body.decode("ascii", "replace").strip()
        return text if _CODE.fullmatch(text) else "busy"

    async def send(self, message: bytes) -> None:
        await self._send_event(BytesMessage(data=message))

    async def receive(self) -> bytes:
        """The next whole binary message."""
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event()
            if isinstance(event, BytesMessage):
                size += len(event.data)
                if size > MAX_RESPONSE_SIZE:
                    raise _Failed("bad-reply", "sent a reply larger than any valid one")
                parts.append(bytes(event.data))
                if event.message_finished:
                    return b"".join(parts)
            elif isinstance(event, TextMessage):
                raise _Failed("bad-reply", "sent a text reply")
            elif isinstance(event, Ping):
                await self._send_event(event.response())
            elif isinstance(event, CloseConnection):
                reason = f": {event.reason}" if event.reason else ""
                code = event.reason if event.reason and _CODE.fullmatch(event.reason) else "closed"
                raise _Failed(code, "closed the connection without answering "
                              f"(code {event.code}{reason})")

    async def close(self) -> None:
        """Close politely, then wait briefly for the node to end TCP (RFC 6455 §7.1.1)."""
        async with self.stream:
            if self.ws.state is not ConnectionState.OPEN:
                return
            with contextlib.suppress(trio.BrokenResourceError), trio.move_on_after(CLOSE_TIMEOUT):
                await self.stream.send_all(self.ws.send(CloseConnection(code=1000)))
                while await self.stream.receive_some(RECEIVE_SIZE):
                    pass

    async def _send_event(self, event: Event) -> None:
        try:
            await self.stream.send_all(self.ws.send(event))
        except trio.BrokenResourceError:
            raise _Failed("closed", "closed the connection without answering") from None
        except wsproto.utilities.LocalProtocolError as exc:
            raise _Failed("bad-reply", f"does not speak the websocket protocol ({exc})") from None

    async def _next_event(self) -> Event:
        while not self._events:
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except trio.BrokenResourceError:
                raise _Failed("closed", "closed the connection without answering") from None
            if not data:
                raise _Failed("closed", "closed the connection without answering")
            self.ws.receive_data(data)
            try:
                self._events.extend(self.ws.events())
            except wsproto.utilities.RemoteProtocolError as exc:
                raise _Failed("bad-reply", f"does not speak the websocket protocol ({exc})"
                              ) from None
        return self._events.popleft()


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


async def _ask_ok(node: str, request: PlainRequest, node_timeout: float) -> Ok:
    response = await _exchange(node, request, node_timeout)
    if not isinstance(response, Ok):
        raise BootstrapError(node, "bad-reply", f"bootstrap node {node} sent an unexpected reply")
    return response


async def _ask_rooms(node: str, request: PlainRequest, node_timeout: float) -> Rooms:
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


async def find_room(
    nodes: Sequence[str], room_id: RoomId, *, node_timeout: float = DEFAULT_TIMEOUT
) -> Announcement | None:
    """The room's announcement from whichever node first answers with an authentic one.

    Every node is asked at once, each within ``node_timeout``; the first
    announcement wins and the other requests are cancelled, so a node that is down
    or slow costs nothing while another one knows the room.  None if no node that
    answered knows it; :class:`BootstrapError` if no node answered at all.
    """
    unique = list(dict.fromkeys(nodes))
    if not unique:
        raise LocalProtocolError("no bootstrap nodes to ask")
    found: Announcement | None = None
    failures: list[BootstrapError] = []

    async with trio.open_nursery() as nursery:

        async def ask(node: str) -> None:
            nonlocal found
            try:
                answer = await lookup_id(node, room_id, node_timeout=node_timeout)
            except BootstrapError as exc:
                logger.info("%s", exc)
                failures.append(exc)
                return
            if answer is not None and found is None:
                logger.debug("room %s found through %s", room_id, node)
                found = answer
                nursery.cancel_scope.cancel()

        for node in unique:
            nursery.start_soon(ask, node)
    if found is None and len(failures) == len(unique):
        raise _all_failed(failures)
    return found


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
    make_announcement: Callable[[], Announcement | None],
    *,
    interval: float,
    make_withdrawal: Callable[[], Withdrawal | None] | None = None,
    retry_interval: float = 5.0,
    node_timeout: float = DEFAULT_TIMEOUT,
    withdraw_timeout: float = WITHDRAW_TIMEOUT,
    task_status: trio.TaskStatus[Delivery] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep a running room announced on every node until cancelled, then withdraw it.

    Each node has its own loop: it re-announces every ``interval`` seconds (choose
    it well below the announcement lifetime), or after ``retry_interval`` when that
    node refused or did not answer, so a dead or slow node never delays the others.
    A fresh announcement is made for every attempt, so listener counts and
    addresses stay current; when ``make_announcement`` returns None there is
    nothing to announce, and that node's loop asks again after ``retry_interval``.
    On cancellation it withdraws from every node, best effort and within
    ``withdraw_timeout``, unless ``make_withdrawal`` is missing or returns None (the
    announcement then simply lapses at its expiry).  Reports the
    :class:`Delivery` of the first attempt at each node through ``task_status``.
    """
    unique = list(dict.fromkeys(nodes))
    if not unique:
        raise LocalProtocolError("no bootstrap nodes to announce to")
    first: dict[str, BootstrapError | None] = {}
    everyone_tried = trio.Event()

    async def keep(node: str) -> None:
        while True:
            announcement = make_announcement()
            if announcement is None:  # nothing to announce just now
                await trio.sleep(min(interval, retry_interval))
                continue
            failure: BootstrapError | None = None
            try:
                await announce(node, announcement, node_timeout=node_timeout)
            except BootstrapError as exc:
                logger.info("%s", exc)
                failure = exc
            if node not in first:
                first[node] = failure
                if len(first) == len(unique):
                    everyone_tried.set()
            await trio.sleep(interval if failure is None else min(interval, retry_interval))

    try:
        async with trio.open_nursery() as nursery:
            for node in unique:
                nursery.start_soon(keep, node)
            await everyone_tried.wait()
            task_status.started(Delivery(
                tuple(node for node in unique if first[node] is None),
                tuple(failure for failure in first.values() if failure is not None),
            ))
    finally:
        with trio.move_on_after(withdraw_timeout, shield=True):
            withdrawal = make_withdrawal() if make_withdrawal is not None else None
            if withdrawal is not None:
                await withdraw_all(unique, withdrawal, node_timeout=withdraw_timeout)
